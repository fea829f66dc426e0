"""The idle autostop on real hosts that boot systemd as PID 1 (tests/support/systemd_host.py).

The bootstrap (bootstrap.runner.bootstrap_host, the autostop step, over real SSH)
installs the check and its timer through the host's own systemctl; a REAL Jupyter
server runs on the host (/opt/jupyter, jupyter_server + ipykernel) with its token in
the file the check reads. Nothing is mocked between the timer and the poweroff: the
host's systemd runs the check, the check runs `systemctl poweroff`, nspawn exits 0.
Stand-ins only for the GPU (nvidia-smi, whose readings the test sets) and Azure's API
(tests/support/azure_standin.py, as documented).

Window 1 minute: the timer's interval is then 30 s (clamp(60/4, 30 s, 5 min)). The
hosts run side by side (one thread each), so the suite takes about as long as the
slowest one (about 4 minutes):

  idle    untouched Jupyter, idle GPU, no session: stops within window + interval of
          the timer's first check; a console login receives the wall warning.
  ssh     an open SSH session          } each held past window + interval after
  kernel  a cell running time.sleep    } install, the host must still be up; then the
  gpu     GPU reading 87 %             } activity ends and the host must stop within
  app     a client on port 5000 of a   } [window, window + interval + poweroff] of
          container (NAT: the connection shows only in the container's namespace)
  azure   deallocate answers 500 once: the unit fails, the bootstrap says so, the next
          check deallocates (202).

Set WORKBENCH_AUTOSTOP_TRANSCRIPTS=DIR to keep each host's journal of the check.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bootstrap.onhost import workbench_idle_check as idle
from bootstrap.options import BootstrapOptions
from bootstrap.recap import Status
from bootstrap.runner import bootstrap_host
from bootstrap.steps import autostop
from tests.support import systemd_host as hosts
from tests.support.azure_standin import AzureStandin
from tests.support.systemd_host import GpuReading, SystemdHost, wait_for
from tests.support.testhosts import STANDIN_IMAGE

pytestmark = pytest.mark.slow

WINDOW_MIN = 1
WINDOW_S = 60.0
INTERVAL_S = 30.0
HOLD_S = WINDOW_S + INTERVAL_S + 10  # activity lasts past the window by more than a check
POWEROFF_S = 20.0  # from `systemctl poweroff` to nspawn's exit, generously (measured: ~1-3 s)
TOKEN_FILE = "/home/wb/.config/gpu-workbench/jupyter_token"
JUPYTER_PORT = 8888  # one of the check's Jupyter URLs (the container's 8890 is the other)
WS_CLIENT = Path(__file__).resolve().parents[1] / "support" / "jupyter_ws.py"
TRANSCRIPTS = os.environ.get("WORKBENCH_AUTOSTOP_TRANSCRIPTS")


@dataclass
class Scenario:
    name: str
    host: SystemdHost | None = None
    installed_at: float = 0.0  # seconds since boot when the bootstrap had started the timer
    first_check_at: float | None = None
    activity_end: float | None = None
    alive_at_hold: bool | None = None
    exit_code: int | None = None
    exited_at: float | None = None
    lines: list[str] = field(default_factory=list)  # the bootstrap's autostop lines
    journal: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def since_boot(self) -> float:
        assert self.host is not None
        return time.monotonic() - self.host.boot_time


def bootstrap(h: SystemdHost, lines: list[str], **options: Any) -> str:
    """The autostop step over real SSH; returns its status, keeps its line."""
    options.setdefault("wait_timeout", 60.0)
    report = bootstrap_host(h.connection(), BootstrapOptions(autostop_minutes=WINDOW_MIN,
                                                             **options),
                            ("autostop",), emit=lambda _: None)
    result = report.result("autostop")
    assert result is not None, report.steps
    lines.append(f"{result.status.value}  {result.message}")
    return result.status.value


def start_jupyter(h: SystemdHost) -> str:
    token = secrets.token_hex(16)
    h.run_inside(f"install -d -o wb -g wb -m 700 /home/wb/.config/gpu-workbench && "
                 f"printf %s {token} > {TOKEN_FILE} && chown wb:wb {TOKEN_FILE} && "
                 f"chmod 600 {TOKEN_FILE}")
    h.run_inside("systemd-run --unit=jupyter --uid=wb --working-directory=/home/wb "
                 "-p Environment=HOME=/home/wb /opt/jupyter/bin/jupyter server --no-browser "
                 f"--ip=127.0.0.1 --port={JUPYTER_PORT} --IdentityProvider.token={token} "
                 "--ServerApp.root_dir=/home/wb")
    wait_for(lambda: h.run_inside(
        f"curl -sf -H 'Authorization: token {token}' "
        f"'http://127.0.0.1:{JUPYTER_PORT}/api/status?no_track_activity=1'",
        check=False).returncode == 0, what=f"{h.name} jupyter", timeout=120, interval=0.5)
    return token


def state(h: SystemdHost) -> dict[str, Any]:
    out = h.run_inside(f"cat {autostop.STATE} 2>/dev/null", check=False).stdout
    try:
        value = json.loads(out or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def wait_first_check(s: Scenario) -> None:
    assert s.host is not None
    wait_for(lambda: bool(state(s.host).get("last")), what=f"{s.name}: first check",
             timeout=INTERVAL_S + 30, interval=0.5)
    s.first_check_at = s.since_boot()


def hold_then(s: Scenario, end: Callable[[], None]) -> None:
    """Keep the activity up to HOLD_S after install; the host must still be up; end it."""
    assert s.host is not None
    time.sleep(max(0.0, s.installed_at + HOLD_S - s.since_boot()))
    s.alive_at_hold = s.host.is_running()
    end()
    s.activity_end = s.since_boot()


# --- the scenarios, one thread each -----------------------------------------------------------

def run_idle(s: Scenario, h: SystemdHost) -> None:
    start_jupyter(h)
    # A console login (not SSH, not a network connection): wall must reach it.
    h.run_inside("systemd-run --unit=console-login sh -c 'mkfifo /run/console-in; "
                 "sleep 100000 > /run/console-in & exec script -qfc \"login -f wb\" "
                 "/root/console.log < /run/console-in'")
    wait_for(lambda: "wb" in h.out("who"), what="console login", timeout=30)
    bootstrap(h, s.lines, cloud="aws")
    s.installed_at = s.since_boot()
    wait_first_check(s)


def run_ssh(s: Scenario, h: SystemdHost) -> None:
    start_jupyter(h)
    session = subprocess.Popen(h.ssh_argv("sleep 100000"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bootstrap(h, s.lines, cloud="gcp")
        s.installed_at = s.since_boot()
        wait_first_check(s)
        time.sleep(2)
        bootstrap(h, s.lines, cloud="gcp")  # a second run, while the session is open
    finally:
        def hang_up() -> None:
            session.terminate()
            session.wait(timeout=30)

        hold_then(s, hang_up)


def run_kernel(s: Scenario, h: SystemdHost) -> None:
    token = start_jupyter(h)
    (h.root / "root/jupyter_ws.py").write_bytes(WS_CLIENT.read_bytes())
    kernel = json.loads(h.out(
        f"curl -sf -X POST -H 'Authorization: token {token}' "
        f"http://127.0.0.1:{JUPYTER_PORT}/api/kernels"))["id"]
    bootstrap(h, s.lines, cloud="aws")
    s.installed_at = s.since_boot()
    cell_s = HOLD_S  # runs from about install until HOLD_S after it
    out = h.out(f"/opt/jupyter/bin/python /root/jupyter_ws.py http://127.0.0.1:{JUPYTER_PORT} "
                f"{token} {kernel} run 'import time; time.sleep({cell_s:.0f})'", timeout=120)
    assert out.strip() == "busy", out
    cell_started = s.since_boot()
    wait_first_check(s)
    time.sleep(max(0.0, cell_started + cell_s - 1 - s.since_boot()))
    s.alive_at_hold = h.is_running()
    # The cell ends by itself; the kernel's last activity is then.
    wait_for(lambda: '"execution_state": "idle"' in h.out(
        f"curl -sf -H 'Authorization: token {token}' "
        f"'http://127.0.0.1:{JUPYTER_PORT}/api/kernels?no_track_activity=1'"),
        what="the cell to end", timeout=60, interval=0.5)
    s.activity_end = s.since_boot()


def run_gpu(s: Scenario, h: SystemdHost) -> None:
    start_jupyter(h)
    h.set_gpu_readings([GpuReading(utilization_gpu=87, memory_used_mib=20480)])
    bootstrap(h, s.lines, cloud="aws")
    s.installed_at = s.since_boot()
    wait_first_check(s)
    hold_then(s, lambda: h.set_gpu_readings([GpuReading(utilization_gpu=0)]))


def run_app(s: Scenario, h: SystemdHost) -> None:
    start_jupyter(h)
    hosts.import_standin_image(h)
    # A server in a container on a published port; the stdin pipe keeps busybox nc from
    # half-closing. Docker DNATs the client to the container: only its netns shows it.
    h.run_inside(f"docker run -d --name app -p 5000:5000 {STANDIN_IMAGE} "
                 "sh -c 'sleep 100000 | nc -l -p 5000'")
    client: socket.socket | None = None

    def connect() -> bool:
        nonlocal client
        client = socket.create_connection((h.ip, 5000), timeout=5)
        return True

    wait_for(connect, what="port 5000", timeout=60, interval=0.5)
    assert client is not None
    bootstrap(h, s.lines, cloud="aws")
    s.installed_at = s.since_boot()
    wait_first_check(s)
    s.facts["host_ss"] = h.out("ss -Htn state established '( sport = :5000 )'")
    hold_then(s, client.close)


def run_azure(s: Scenario, h: SystemdHost) -> None:
    """Deallocate answers 500 once: the unit fails and the bootstrap says so; the next
    check deallocates. Then the stand-in plays Azure and powers the VM off."""
    start_jupyter(h)
    with AzureStandin(host=h.outside_ip, arm_failures=1) as azure:
        bootstrap(h, s.lines, cloud="azure", azure_imds_url=azure.url, azure_arm_url=azure.url)
        s.installed_at = s.since_boot()
        wait_first_check(s)
        wait_for(lambda: state(h).get("last", {}).get("decision") == "stop-failed",
                 what="the failed deallocate", timeout=WINDOW_S + 2 * INTERVAL_S, interval=0.5)
        s.facts["failed_at"] = s.since_boot()
        # The state is written just before the check exits 1; systemd then marks the unit.
        wait_for(lambda: autostop.UNIT in h.failed_units(), what="the failed unit",
                 timeout=10, interval=0.1)
        s.facts["failed_units"] = h.failed_units()
        s.facts["failed_status"] = bootstrap(h, s.lines, cloud="azure",
                                             azure_imds_url=azure.url, azure_arm_url=azure.url)
        assert azure.deallocated.wait(timeout=WINDOW_S + 2 * INTERVAL_S)
        s.facts["deallocated_at"] = s.since_boot()
        wait_for(lambda: (state(h).get("stop") or {}).get("ok") is True, what="stop recorded",
                 timeout=30, interval=0.5)
        s.facts["unit_after"] = h.out(f"systemctl show {autostop.UNIT} -p Result -p ActiveState")
        s.facts["ok_status"] = bootstrap(h, s.lines, cloud="azure", azure_imds_url=azure.url,
                                         azure_arm_url=azure.url)
        s.facts["requests"] = [(r.method, r.path, r.query, r.headers) for r in azure.requests]
        s.facts["token"] = azure.token
    h.run_inside("systemctl poweroff", check=False)  # what Azure's deallocate does to the guest


def run_postpone(s: Scenario, h: SystemdHost) -> None:
    """The login user postpones from a shell on the host (no SSH: that alone is activity)."""
    start_jupyter(h)
    bootstrap(h, s.lines, cloud="aws")
    s.installed_at = s.since_boot()
    wait_first_check(s)
    out = h.out("runuser -u wb -- workbench-autostop postpone 80s")
    s.facts["postpone_out"] = out
    s.facts["postponed_at"] = s.since_boot()
    s.facts["status"] = h.out("runuser -u wb -- workbench-autostop status")
    time.sleep(max(0.0, s.facts["postponed_at"] + 80 - s.since_boot()))
    s.alive_at_hold = h.is_running()
    s.activity_end = s.facts["postponed_at"] + 80  # the postponement ends by itself


def run_broken_gpu(s: Scenario, h: SystemdHost) -> None:
    """nvidia-smi fails from boot (driver gone): busy for one window, then idle."""
    start_jupyter(h)
    h.set_gpu_readings(broken=True)
    bootstrap(h, s.lines, cloud="aws")
    s.installed_at = s.since_boot()
    wait_first_check(s)


RUNNERS: dict[str, Callable[[Scenario, SystemdHost], None]] = {
    "idle": run_idle, "ssh": run_ssh, "kernel": run_kernel, "gpu": run_gpu, "app": run_app,
    "azure": run_azure, "postpone": run_postpone, "broken-gpu": run_broken_gpu,
}


def play(s: Scenario) -> None:
    try:
        s.host = hosts.start_systemd_host(import_image=False)
        RUNNERS[s.name](s, s.host)
        s.exit_code, s.exited_at = s.host.wait_for_exit(
            timeout=WINDOW_S + 2 * INTERVAL_S + POWEROFF_S + 60)
        s.facts["exit_utc"] = time.strftime("%H:%M:%S", time.gmtime())
    except BaseException:
        s.error = traceback.format_exc()
    finally:
        if s.host is not None:
            s.journal = s.host.journal(autostop.UNIT)
            with contextlib.suppress(OSError):
                s.facts["console"] = (s.host.root / "root/console.log").read_text(
                    errors="replace")
            if TRANSCRIPTS:
                Path(TRANSCRIPTS).mkdir(parents=True, exist_ok=True)
                def at(x: float | None) -> str:
                    return "-" if x is None else f"{x:.1f} s"

                console = [line.strip() for line in s.facts.get("console", "").splitlines()
                           if "autostop" in line]
                (Path(TRANSCRIPTS) / f"{s.name}.txt").write_text(
                    f"# {s.name}: after boot: installed {at(s.installed_at)}, first check seen "
                    f"{at(s.first_check_at)}, activity ended {at(s.activity_end)}, nspawn "
                    f"exit {s.exit_code} at {at(s.exited_at)} ({s.facts.get('exit_utc')} "
                    "UTC)\n"
                    + "".join(f"# bootstrap: {line}\n" for line in s.lines)
                    + "".join(f"# console: {line}\n" for line in console) + s.journal)
        s.done.set()


@pytest.fixture(scope="module")
def fleet(systemd_real_parts: None) -> Iterator[dict[str, Scenario]]:
    with hosts.side_by_side({name: Scenario(name) for name in RUNNERS}, play,
                            timeout=600) as scenarios:
        yield scenarios


def finished(fleet: dict[str, Scenario], name: str) -> Scenario:
    return hosts.finished(fleet, name, timeout=600)


def assert_stops_after(s: Scenario, start: float) -> float:
    """The host powered itself off between window and window + interval (+ poweroff) after
    `start`; returns the seconds from `start`."""
    assert s.exit_code == hosts.NSPAWN_EXIT_POWEROFF, s.journal[-2000:]
    assert s.exited_at is not None
    took = s.exited_at - start
    assert WINDOW_S - idle.TOLERANCE_S <= took <= WINDOW_S + INTERVAL_S + POWEROFF_S, (
        f"stopped {took:.1f} s after {start:.1f}\n{s.journal[-3000:]}")
    assert "stopping now: poweroff" in s.journal
    # systemd stops the check on the way down; it exits 0 then, not "killed".
    assert "Failed with result" not in s.journal.split("stopping now")[-1], s.journal[-1500:]
    return took


def test_the_interval_for_a_one_minute_window_is_30_s() -> None:
    assert autostop.interval_ms(WINDOW_MIN) == INTERVAL_S * 1000


def test_an_idle_host_powers_itself_off_within_window_plus_interval(
        fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "idle")
    assert s.lines[0].startswith(
        "changed  stop after 1 idle minutes (aws: poweroff; a check every 30 s): wrote ")
    assert s.first_check_at is not None
    took = assert_stops_after(s, s.installed_at)
    print(f"idle: installed {s.installed_at:.1f} s after boot, first check "
          f"{s.first_check_at:.1f} s, poweroff {s.exited_at:.1f} s after boot "
          f"({took:.1f} s after install)")
    # Untouched Jupyter was read and never counted; a warning came one check ahead.
    assert "jupyter http://127.0.0.1:8888: 0 kernel(s); server API untouched" in s.journal
    assert "decision: busy" not in s.journal
    assert "WARNING: gpu-workbench autostop: this machine has been idle since" in s.journal
    assert "workbench-autostop postpone 2h" in s.journal
    assert "gpu-workbench autostop: this machine has been idle since" in s.facts["console"]


@pytest.mark.parametrize(("name", "reason"), [
    ("ssh", "connection(s) on port 22 (SSH) from 10.202."),
    ("kernel", "Jupyter kernel python3 "),
    ("gpu", "GPU 0 at 87 % (max of 5 samples over"),
    ("app", "connection(s) on port 5000 (AIAA) from 10.202."),
])
def test_activity_keeps_the_host_up_past_the_window_then_it_stops(
        fleet: dict[str, Scenario], name: str, reason: str) -> None:
    s = finished(fleet, name)
    assert s.alive_at_hold, f"{name}: stopped while busy\n{s.journal[-3000:]}"
    assert s.activity_end is not None
    assert s.activity_end - s.installed_at >= WINDOW_S + INTERVAL_S
    assert "decision: busy: " in s.journal and reason in s.journal, s.journal[-3000:]
    took = assert_stops_after(s, s.activity_end)
    print(f"{name}: busy for {s.activity_end - s.installed_at:.1f} s after install; "
          f"poweroff {took:.1f} s after the activity ended ({s.exited_at:.1f} s after boot)")


def test_postpone_keeps_the_host_up_then_it_stops(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "postpone")
    assert s.facts["postpone_out"].startswith("autostop postponed until ")
    assert "postponed until" in s.facts["status"]
    assert s.alive_at_hold, s.journal[-3000:]
    assert "decision: busy: postponed until " in s.journal
    assert s.activity_end is not None
    took = assert_stops_after(s, s.activity_end)
    print(f"postpone: poweroff {took:.1f} s after the postponement ended")


def test_a_broken_nvidia_smi_delays_the_stop_by_one_window(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "broken-gpu")
    assert s.first_check_at is not None and s.exited_at is not None
    assert "gpu: no reading: nvidia-smi exited 9: NVIDIA-SMI has failed" in s.journal
    assert "decision: busy: GPU unknown since " in s.journal
    assert "WARNING: GPU unreadable since " in s.journal
    # One window of doubt from the first check, then a window of idleness.
    took = s.exited_at - s.first_check_at
    assert 2 * WINDOW_S - INTERVAL_S <= took <= 2 * WINDOW_S + INTERVAL_S + POWEROFF_S, took
    assert "stopping now: poweroff" in s.journal
    print(f"broken-gpu: first check {s.first_check_at:.1f} s after boot, poweroff "
          f"{s.exited_at:.1f} s ({took:.1f} s later)")


def test_the_ssh_hosts_bootstrap_line_shows_the_last_check(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "ssh")
    assert s.lines[1].startswith(
        "ok  stop after 1 idle minutes (gcp: poweroff; a check every 30 s); last check ")
    assert ": busy: 1 connection(s) on port 22 (SSH) from 10.202." in s.lines[1]


def test_a_container_port_connection_is_seen_in_the_containers_namespace(
        fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "app")
    assert s.facts["host_ss"].strip() == ""  # NAT: the host's namespace has no such socket
    assert "[netns of pid " in s.journal


def test_azure_a_failed_deallocate_fails_the_unit_and_the_bootstrap_then_retries(
        fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "azure")
    assert s.lines[0].startswith("changed  stop after 1 idle minutes (azure: deallocate; a "
                                 "check every 30 s); the VM's identity may deallocate it: wrote ")
    assert autostop.UNIT in s.facts["failed_units"]
    assert s.facts["failed_status"] == Status.FAILED.value
    assert s.lines[1].startswith("failed  last check could not deallocate (at ")
    assert "deallocate: ARM 500 InternalServerError: An internal execution error occurred." \
        in s.lines[1]
    assert s.facts["ok_status"] == Status.OK.value, s.lines
    assert ": stopped: deallocate accepted (202) for wb-azure-vm" in s.lines[2]
    assert "Result=success" in s.facts["unit_after"]
    # The retry came at a later check, within window + interval of the failure.
    assert s.facts["deallocated_at"] - s.facts["failed_at"] <= INTERVAL_S + WINDOW_S
    posts = [r for r in s.facts["requests"] if r[0] == "POST"]
    assert len(posts) == 2
    for _method, path, query, headers in posts:
        assert path.endswith("/virtualMachines/wb-azure-vm/deallocate")
        assert query == {"api-version": ["2024-11-01"]}
        assert headers["authorization"] == f"Bearer {s.facts['token']}"
    assert s.facts["token"] not in s.journal and all(s.facts["token"] not in x for x in s.lines)
    assert "ERROR: could not deallocate: deallocate: ARM 500" in s.journal
    assert s.host is not None
    assert "workbench-idle-check.service: Failed with result 'exit-code'" in s.host.journal()
    assert s.exit_code == hosts.NSPAWN_EXIT_POWEROFF
