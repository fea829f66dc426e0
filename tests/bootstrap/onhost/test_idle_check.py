"""The idle check's rules, from recorded outputs of nvidia-smi, /proc/net/tcp and Jupyter's
API, and its schedule. The real parts (a real jupyter_server, a real systemd host) are in
test_jupyter_idle.py and tests/bootstrap/test_autostop_on_systemd_host.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootstrap.onhost import workbench_idle_check as idle

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)
SETTINGS = idle.Settings(cloud="aws", minutes=60, wall=False,
                         postpone_file="/ws/.gpu-workbench/autostop-postpone")
MIN = dt.timedelta(minutes=1)

# Recorded: `nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits`
# (two A10G; the second in MIG mode reports [N/A]).
SMI_TWO = "0, 0\n1, 3\n"
SMI_MIG = "0, 0\n1, [N/A]\n"
# `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,...`
APPS = "GPU-5e1f0000-0000-4000-8000-000000000001, 4242, /usr/bin/python3, 20480\n"
# /proc/net/tcp on a workstation: sshd listening on 22, one login from 203.0.113.7,
# an outbound HTTPS connection (not a watched listener).
PROC_TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
    "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
    "       0 18721 1 0000000000000000 100 0 0 10 0\n"
    "   1: 11012A0A:0016 0771CBCB:CF52 01 00000000:00000000 02:000A5B3D 00000000     0 "
    "       0 40112 4 0000000000000000 20 4 29 10 -1\n"
    "   2: 11012A0A:A3DA 012212C8:01BB 01 00000000:00000000 00:00000000 00000000  1000 "
    "       0 40500 1 0000000000000000 20 4 30 10 -1\n"
)
# /proc/net/tcp6: sshd on [::]:22, one IPv4 client through the dual-stack socket.
PROC_TCP6 = (
    "  sl  local_address                         remote_address                        st\n"
    "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A\n"
    "   1: 0000000000000000FFFF00001101A8C0:0016 0000000000000000FFFF00000201A8C0:D431 01\n"
)


def t(minutes_before_now: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes_before_now)


def gpu_ok(samples: dict[str, list[int]] | None = None,
           apps: list[idle.GpuApp] | None = None) -> idle.GpuLook:
    return idle.GpuLook("ok", "", samples or {"0": [0, 0, 1, 0, 0]}, 4.0, apps or [])


def kernel(state: str = "idle", connections: int = 0, last: dt.datetime | None = None,
           kid: str = "5e1c0a1b-2222-4000-8000-000000000001") -> idle.Kernel:
    return idle.Kernel(kid, "python3", state, connections, last or t(70))


def jupyter(*kernels: idle.Kernel, api: dt.datetime | None = None) -> idle.JupyterLook:
    started = t(300)
    return idle.JupyterLook("http://127.0.0.1:8890", "ok", started=started,
                            last_activity=api or started, kernels=list(kernels))


def look(**kw: Any) -> idle.Look:
    kw.setdefault("gpu", gpu_ok())
    kw.setdefault("connections", [])
    kw.setdefault("jupyter", [jupyter(kernel())])
    return idle.Look(**kw)


def idle_for(minutes: float, **extra: Any) -> dict[str, Any]:
    return {"idle_since": idle.iso(t(minutes)), **extra}


# --- the schedule ----------------------------------------------------------------------------

@pytest.mark.parametrize(("minutes", "interval_ms", "span"), [
    (1, 30_000, "30s"), (2, 30_000, "30s"), (5, 75_000, "75s"), (10, 150_000, "150s"),
    (31, 265_714, "265s 714ms"), (60, 300_000, "300s"), (600, 300_000, "300s"),
])
def test_interval_scales_with_the_window_and_divides_it(minutes: int, interval_ms: int,
                                                        span: str) -> None:
    assert idle.check_interval_ms(minutes * 60) == interval_ms
    assert idle.systemd_span(interval_ms) == span
    checks = round(minutes * 60_000 / interval_ms)
    # The window ends on a check (within a millisecond per check; the check allows 2 s).
    assert abs(minutes * 60_000 - checks * interval_ms) <= checks
    assert 30_000 <= interval_ms <= 300_000


def test_warnings_start_at_least_one_check_ahead() -> None:
    assert idle.warn_lead_s(60, 30) == 30  # 1-minute window: the check before the stop
    assert idle.warn_lead_s(3600, 300) == 600  # 60 minutes: 10 minutes ahead (2 checks)
    assert idle.warn_lead_s(600, 150) == 150


# --- parsing what real commands print ----------------------------------------------------------

def test_parsers() -> None:
    assert idle.parse_gpu_samples(SMI_TWO) == {"0": 0, "1": 3}
    assert idle.parse_gpu_samples(SMI_MIG) == {"0": 0, "1": None}
    assert idle.parse_compute_apps(APPS, {"GPU-5e1f0000-0000-4000-8000-000000000001": "1"}) == [
        idle.GpuApp("1", 4242, "/usr/bin/python3", "20480")]
    listening, established = idle.parse_proc_net_tcp(PROC_TCP)
    assert listening == {22}
    assert established[0] == ("10.42.1.17", 22, "203.203.113.7", 53074)
    listening6, established6 = idle.parse_proc_net_tcp(PROC_TCP6)
    assert listening6 == {22} and established6 == [("192.168.1.17", 22, "192.168.1.2", 54321)]


@pytest.mark.parametrize("text", [
    "2026-11-23T06:40:11.512345Z", "2026-11-23T06:40:11.512Z", "2026-11-23T06:40:11.5123456Z",
    "2026-11-23T06:40:11.512345+00:00",
])
def test_times_as_jupyter_writes_them(text: str) -> None:
    value = idle.parse_time(text)
    assert value.tzinfo is not None and value.replace(microsecond=0) == dt.datetime(
        2026, 11, 23, 6, 40, 11, tzinfo=dt.timezone.utc)


def test_durations() -> None:
    assert idle.parse_duration("2h") == 7200
    assert idle.parse_duration("1h30m") == 5400
    assert idle.parse_duration("45") == 2700  # minutes
    for bad in ("", "soon", "2x", "-1h", "0"):
        with pytest.raises(ValueError):
            idle.parse_duration(bad)


def test_permissions_with_wildcards_and_not_actions() -> None:
    action = "Microsoft.Compute/virtualMachines/deallocate/action"
    assert idle.permits([{"actions": ["Microsoft.Compute/virtualMachines/*"]}], action)
    assert idle.permits([{"actions": ["*"], "notActions": []}], action)
    assert idle.permits([{"actions": ["microsoft.compute/virtualmachines/deallocate/action"]}],
                        action)
    assert not idle.permits([{"actions": ["*"], "notActions": ["Microsoft.Compute/*"]}], action)
    assert not idle.permits([{"actions": ["Microsoft.Compute/virtualMachines/read"]}], action)
    assert not idle.permits([], action)


# --- the decision --------------------------------------------------------------------------------

def test_first_idle_check_starts_the_window_and_the_stop_comes_after_a_warning() -> None:
    first = idle.decide(look(), SETTINGS, NOW, {})
    assert first.kind == "idle" and first.state["idle_since"] == idle.iso(NOW)
    assert first.stop_at == NOW + 60 * MIN
    # 50 minutes in: inside the 10-minute warning lead.
    warn = idle.decide(look(), SETTINGS, NOW, idle_for(50))
    assert warn.kind == "warn" and warn.stop_at == NOW + 10 * MIN
    # At the window's end, but no warning was given for this quiet period: warn first.
    unwarned = idle.decide(look(), SETTINGS, NOW, idle_for(60))
    assert unwarned.kind == "warn"
    warned = idle_for(60, warned_for=idle.iso(t(60)))
    assert idle.decide(look(), SETTINGS, NOW, warned).kind == "stop"
    # A check a second early (python3 started late last time) still counts as the end.
    early = {"idle_since": idle.iso(NOW - 60 * MIN + dt.timedelta(seconds=1)),
             "warned_for": idle.iso(NOW - 60 * MIN + dt.timedelta(seconds=1))}
    assert idle.decide(look(), SETTINGS, NOW, early).kind == "stop"


BUSY_CASES = [
    ({"gpu": gpu_ok({"0": [0, 0, 87, 0, 0]})}, "GPU 0 at 87 % (max of 5 samples over 4 s"),
    ({"gpu": gpu_ok({"0": [0], "1": [12]})}, "GPU 1 at 12 %"),
    ({"gpu": gpu_ok(apps=[idle.GpuApp("0", 4242, "python", "20480")])},
     "GPU process python (pid 4242) holds 20480 MiB on GPU 0"),
    ({"connections": [idle.Conn(22, "10.42.1.17:22", "203.0.113.7:53122", "host")]},
     "1 connection(s) on port 22 (SSH) from 203.0.113.7:53122"),
    ({"connections": [idle.Conn(5000, "172.17.0.2:5000", "10.0.0.9:40000",
                                "netns of pid 812 (python3)")]},
     "1 connection(s) on port 5000 (AIAA) from 10.0.0.9:40000 [netns of pid 812 (python3)]"),
    ({"jupyter": [jupyter(kernel("busy"))]}, "Jupyter kernel python3 5e1c0a1b is busy"),
    ({"jupyter": [jupyter(kernel("idle", connections=1))]},
     "Jupyter kernel python3 5e1c0a1b has 1 connection(s) (a browser or client)"),
    ({"postpone": idle.PostponeLook(until=NOW + 5 * MIN, touched=t(1))},
     "postponed until 08:05:00 UTC"),
]


@pytest.mark.parametrize(("kw", "reason"), BUSY_CASES)
def test_any_activity_resets_the_window(kw: dict[str, Any], reason: str) -> None:
    decision = idle.decide(look(**kw), SETTINGS, NOW, idle_for(300))
    assert decision.kind == "busy" and decision.state["idle_since"] is None
    assert any(reason in r for r in decision.busy), decision.busy


def test_a_gpu_process_that_is_an_idle_jupyter_kernel_is_not_work() -> None:
    """A kernel that put a model on the GPU holds memory forever; its own activity counts."""
    app = idle.GpuApp("0", 4242, "python", "9000")
    k = kernel("idle", last=t(61))
    quiet = look(gpu=gpu_ok(apps=[app]), jupyter=[jupyter(k)], kernel_pids={4242: k.id})
    decision = idle.decide(quiet, SETTINGS, NOW, idle_for(61, warned_for=idle.iso(t(61))))
    assert decision.kind == "stop", decision.busy
    assert any("Jupyter kernel 5e1c0a1b, idle: not counted" in d for d in decision.details)
    running = look(gpu=gpu_ok(apps=[app]), jupyter=[jupyter(kernel("busy"))],
                   kernel_pids={4242: k.id})
    assert idle.decide(running, SETTINGS, NOW, idle_for(61)).kind == "busy"


def test_recent_jupyter_activity_starts_the_window_later() -> None:
    """A cell that ran between two checks was never seen busy: its kernel's last
    activity moves the start of the window, and so does the API's (a browser)."""
    k = kernel("idle", last=t(20))
    decision = idle.decide(look(jupyter=[jupyter(k)]), SETTINGS, NOW, idle_for(50))
    assert decision.kind == "idle" and decision.quiet_since == t(20)
    assert decision.stop_at == NOW + 40 * MIN
    api = idle.decide(look(jupyter=[jupyter(kernel(), api=t(5))]), SETTINGS, NOW, idle_for(50))
    assert api.quiet_since == t(5)


def test_an_untouched_server_counts_from_the_first_idle_check() -> None:
    """jupyter_server reports its own start as last_activity: that is not activity."""
    fresh = jupyter()  # no kernels; last_activity == started
    decision = idle.decide(look(jupyter=[fresh]), SETTINGS, NOW, {})
    assert decision.quiet_since == NOW
    assert any("server API untouched" in d for d in decision.details)


def test_a_broken_nvidia_smi_delays_the_stop_by_one_window_then_warns() -> None:
    broken = look(gpu=idle.GpuLook("failed", "nvidia-smi exited 9: NVIDIA-SMI has failed"))
    first = idle.decide(broken, SETTINGS, NOW, idle_for(300))
    assert first.kind == "busy" and "GPU unknown since 08:00:00 UTC" in first.busy[0]
    assert first.state["unknown_since"] == {"GPU": idle.iso(NOW)}
    later = idle.decide(broken, SETTINGS, NOW + 59 * MIN, first.state)
    assert later.kind == "busy"
    after = idle.decide(broken, SETTINGS, NOW + 60 * MIN, later.state)
    assert after.kind == "idle" and after.quiet_since == NOW + 60 * MIN
    assert any("GPU unreadable since 08:00:00 UTC" in w and "counted as idle" in w
               for w in after.warnings)
    # Once it reads again, a new failure starts a new window of doubt.
    healthy = idle.decide(look(), SETTINGS, NOW + 61 * MIN, after.state)
    assert healthy.state["unknown_since"] == {}


def test_no_nvidia_smi_at_all_is_a_host_without_gpu_not_a_reason_to_stay_up() -> None:
    decision = idle.decide(look(gpu=idle.GpuLook("absent", "no nvidia-smi on this host")),
                           SETTINGS, NOW, idle_for(61, warned_for=idle.iso(t(61))))
    assert decision.kind == "stop"


def test_a_jupyter_that_refuses_our_token_is_warned_about_not_waited_for() -> None:
    refused = idle.JupyterLook("http://127.0.0.1:8888", "refused", "HTTP 403 Forbidden")
    decision = idle.decide(look(jupyter=[refused]), SETTINGS, NOW, idle_for(10))
    assert decision.kind == "idle"
    assert "token was refused (HTTP 403 Forbidden)" in decision.warnings[0]


def test_touching_the_postpone_file_is_activity_now() -> None:
    decision = idle.decide(look(postpone=idle.PostponeLook(touched=t(2))), SETTINGS, NOW,
                           idle_for(59, warned_for=idle.iso(t(59))))
    assert decision.kind == "idle" and decision.quiet_since == t(2)


def test_postpone_file_on_disk(tmp_path: Path) -> None:
    settings = idle.Settings(cloud="aws", minutes=60, postpone_file=str(tmp_path / "p"))
    assert idle.cmd_postpone(settings, "2h") == 0
    p = idle.read_postpone(settings.postpone_file)
    now = dt.datetime.now(dt.timezone.utc)
    assert p.until is not None and abs((p.until - now).total_seconds() - 7200) < 60
    (tmp_path / "p").write_text("")  # touched, nothing written
    assert idle.read_postpone(settings.postpone_file).until is None
    os.symlink("/etc/shadow", tmp_path / "q")
    assert "not a regular file" in idle.read_postpone(str(tmp_path / "q")).note
    assert idle.cmd_resume(settings) == 0 and not (tmp_path / "p").exists()


# --- one check, as the timer runs it ----------------------------------------------------------

def run(state_path: Path, the_look: idle.Look, now: dt.datetime,
        stop: Any = None, settings: idle.Settings = SETTINGS) -> tuple[int, str]:
    out = io.StringIO()

    def no_stop(_: idle.Settings) -> str:
        raise AssertionError("must not stop")

    code = idle.run_check(settings, state_path, look=lambda _: the_look,
                          stop=stop or no_stop, now=lambda: now, log=idle.Log(out))
    return code, out.getvalue()


def test_a_failed_stop_keeps_idle_since_exits_1_and_is_retried(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps(idle_for(55)))
    code, out = run(state, look(), NOW)
    assert code == 0 and "WARNING: gpu-workbench autostop: this machine has been idle since " \
        "07:05:00 UTC and will poweroff at about 08:05:00 UTC (in 5 min)" in out
    assert "workbench-autostop postpone 2h (or touch /ws/.gpu-workbench/autostop-postpone)" in out
    attempts: list[str] = []

    def failing(_: idle.Settings) -> str:
        attempts.append("fail")
        raise idle.StopFailed("transient", "deallocate: ARM 500 InternalServerError")

    code, out = run(state, look(), NOW + 5 * MIN, stop=failing)
    assert code == 1 and attempts == ["fail"]
    assert "ERROR: could not poweroff: deallocate: ARM 500 InternalServerError; idle since " \
        "kept, trying again at the next check" in out
    saved = json.loads(state.read_text())
    assert saved["idle_since"] == idle.iso(t(55))
    assert saved["stop"]["ok"] is False and saved["last"]["decision"] == "stop-failed"

    code, out = run(state, look(), NOW + 10 * MIN, stop=lambda _: "poweroff requested")
    assert code == 0 and "poweroff requested" in out
    saved = json.loads(state.read_text())
    assert saved["stop"]["ok"] is True and saved["idle_since"] == idle.iso(t(55))
    # A check that comes before the machine is gone does not ask again.
    code, out = run(state, look(), NOW + 11 * MIN)
    assert code == 0 and "already requested" in out


def test_a_stop_is_recorded_for_status_a_failed_or_dry_one_is_not(tmp_path: Path) -> None:
    """The last-stop record (the interruption watcher's format) says the machine stopped
    itself; scripts/status reads it (tests/stacktools/test_status.py)."""
    record = tmp_path / "lib" / "last-stop.json"
    settings = dataclasses.replace(SETTINGS, last_stop_file=str(record))
    state = tmp_path / "state.json"
    state.write_text(json.dumps(idle_for(61, warned_for=idle.iso(t(61)))))

    def failing(_: idle.Settings) -> str:
        raise idle.StopFailed("error", "systemctl poweroff exited 1")

    assert run(state, look(), NOW, stop=failing, settings=settings)[0] == 1
    assert not record.exists()
    out = io.StringIO()
    assert idle.run_check(settings, state, dry_run=True, look=lambda _: look(),
                          now=lambda: NOW, log=idle.Log(out)) == 0
    assert "dry run: would poweroff now" in out.getvalue() and not record.exists()

    code, _ = run(state, look(), NOW, stop=lambda _: "poweroff requested (systemctl "
                  "poweroff)", settings=settings)
    assert code == 0
    saved = json.loads(record.read_text())
    assert {k: v for k, v in saved.items() if k != "boot_id"} == {
        "version": 1, "by": "autostop", "kind": "autostop", "at": "2026-11-23T08:00:00+00:00",
        "stop_at": None, "reason": "idle 60 min", "key": "autostop:2026-11-23T08:00:00+00:00",
        "detail": {"quiet_since": "2026-11-23T06:59:00+00:00", "how": "poweroff",
                   "result": "poweroff requested (systemctl poweroff)"}}
    assert saved["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert oct(record.stat().st_mode & 0o777) == "0o644"


def test_a_record_that_cannot_be_written_does_not_keep_the_machine_up(tmp_path: Path) -> None:
    (tmp_path / "lib").write_text("a file where a directory should be")
    settings = dataclasses.replace(
        SETTINGS, last_stop_file=str(tmp_path / "lib" / "gpu-workbench" / "last-stop.json"))
    state = tmp_path / "state.json"
    state.write_text(json.dumps(idle_for(61, warned_for=idle.iso(t(61)))))
    stops: list[str] = []

    def stop(_: idle.Settings) -> str:
        stops.append("x")
        return "poweroff requested"

    code, out = run(state, look(), NOW, stop=stop, settings=settings)
    assert code == 0 and stops == ["x"]
    assert f"WARNING: could not record the stop in {tmp_path}/lib/gpu-workbench/" in out
    assert json.loads(state.read_text())["stop"]["ok"] is True


def test_the_journal_gets_priorities_and_the_numbers(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    busy = look(gpu=gpu_ok({"0": [0, 91, 88, 0, 0]}),
                connections=[idle.Conn(22, "10.0.0.4:22", "203.0.113.7:5000", "host")])
    code, out = run(tmp_path / "s.json", busy, NOW)
    assert code == 0
    assert "<6>gpu: 1 GPU(s), samples over 4.0 s: GPU 0 0/91/88/0/0 % (max 91 %)" in out
    assert ("<6>decision: busy: GPU 0 at 91 % (max of 5 samples over 4 s; threshold 10 %); "
            "1 connection(s) on port 22 (SSH) from 203.0.113.7:5000") in out


# --- real sockets, real namespaces ------------------------------------------------------------

def test_connections_are_read_from_the_kernel() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    try:
        found = idle.read_connections([port], pids=[os.getpid()])
        assert [c.port for c in found] == [port] and found[0].where == "host"
        # Only the server's end counts: the client's end has the server's port as peer.
        assert [c.peer for c in found] == [f"127.0.0.1:{client.getsockname()[1]}"]
    finally:
        for s in (client, accepted, server):
            s.close()
    assert idle.read_connections([port], pids=[os.getpid()]) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare for a network namespace")
def test_connections_in_another_network_namespace_count() -> None:
    """A container's published port reaches it through NAT: only its netns shows the
    connection. Here a process in a fresh netns listens on 5000 and connects to itself."""
    code = ("import socket,sys,time\n"
            "s=socket.socket(); s.bind(('127.0.0.1',5000)); s.listen()\n"
            "c=socket.create_connection(('127.0.0.1',5000)); a,_=s.accept()\n"
            "print('ready', flush=True); time.sleep(30)\n")
    child = subprocess.Popen(["unshare", "--net", "sh", "-c",
                              f"ip link set lo up && exec {sys.executable} -c \"{code}\""],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        pid = child.pid  # unshare and sh exec: the listener is the child itself
        found = idle.read_connections([5000], pids=[os.getpid(), pid])
        assert len(found) == 1 and found[0].where.startswith(f"netns of pid {pid}")
        assert found[0].local == "127.0.0.1:5000"
    finally:
        child.kill()
        child.wait()


# --- the program under the VM's oldest python3 -------------------------------------------------

def _python38() -> str | None:
    candidates = [shutil.which("python3.8"),
                  *map(str, sorted(Path("/root/.pyenv/versions").glob("3.8*/bin/python3.8")))]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "--version"], capture_output=True,
                                        timeout=30).returncode == 0:
            return candidate
    return None


PY38 = _python38() or ""


@pytest.mark.skipif(not PY38, reason="no python3.8 here")
def test_runs_on_python_3_8(tmp_path: Path) -> None:
    """The VM's python3 may be 3.8 (Ubuntu 20.04 images): the whole program, each command."""
    config = tmp_path / "autostop.conf"
    config.write_text("[autostop]\ncloud = aws\nminutes = 1\nssh_ports =\napp_ports =\n"
                      "jupyter_urls = http://127.0.0.1:9\nnvidia_smi = /nonexistent\n"
                      f"postpone_file = {tmp_path}/postpone\nwall = no\n")
    script = str(Path(idle.__file__))
    state = str(tmp_path / "state.json")

    def py38(*args: str) -> str:
        proc = subprocess.run([PY38, script, "--config", str(config), "--state", state, *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = py38("check")
    assert "gpu: not watched (no /nonexistent on this host)" in out
    assert "decision: idle: quiet since" in out
    assert "last check" in py38("status")
    assert "postponed until" in py38("postpone", "2h")
    assert "decision: busy: postponed until" in py38("check", "--dry-run")
    assert "not postponed" in py38("resume")
