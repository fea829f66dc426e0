"""scripts/status: every saved workstation, one SSH command each, hosts in parallel.

The GPU readings come from tests/support/nvidia_smi_standin.py, which answers as
NVIDIA's nvidia-smi manual documents (https://docs.nvidia.com/deploy/nvidia-smi/,
`nvidia-smi --help-query-gpu`): there is no GPU here. Everything else is real:
sshd and dockerd test hosts, the bootstrap's own container step, findmnt.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootstrap.facts import facts_command, parse_facts
from bootstrap.logs import PrefixedLines
from bootstrap.onhost import workbench_idle_check as idle
from bootstrap.onhost import workbench_interruption_watch as watch
from bootstrap.options import BootstrapOptions
from stacktools.status import autostop_line, last_stop_line
from stacktools.status_facts import (
    GPU_USE,
    LAST_STOP,
    AutostopLook,
    GpuUse,
    parse_autostop,
    parse_last_stop,
)
from tests.stacktools.test_handoff import key_fingerprint, plain_names
from tests.support.bootstrap_run import REPO, STANDIN_IMAGE, run_steps
from tests.support.host_fixtures import started_hosts
from tests.support.testhosts import TestHost

SCRIPT = str(REPO / "scripts" / "status")
STANDIN = REPO / "tests" / "support" / "nvidia_smi_standin.py"
A10G = {"index": 0, "name": "NVIDIA A10G", "uuid": "GPU-0a10", "driver_version": "580.95.05",
        "compute_cap": "8.6", "utilization.gpu": 37, "memory.used": 1229, "memory.total": 23028}


def status(home: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("FABRIC_", "SSH_AUTH")) and k != "XDG_CONFIG_HOME"}
    full["HOME"] = str(home)
    full.update(env or {})
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=full,
                          timeout=120, cwd="/")


def save(home: Path, stack: str, outputs: dict[str, object], mode: int = 0o600) -> Path:
    directory = home / ".config" / "gpu-workbench" / "outputs"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{stack}.json"
    path.write_text(json.dumps(outputs))
    path.chmod(mode)
    return path


def outputs_for(host: TestHost, **extra: object) -> dict[str, object]:
    return {"cloud": "aws", "public_ip": host.ip, "ssh_user": host.user,
            "ssh_command": f"ssh -i {host.key_path} {host.user}@{host.ip}",
            "host_key": host.host_key_pub.read_text().strip(), "hourly_cost_usd": 1.212,
            "data_mount": "", "jupyter_token": "Zq9" * 16, **extra}


def gpu_fact_locally(tmp_path: Path, readings: dict[str, object] | None) -> list[GpuUse] | str:
    """The status's GPU fact, its snippet run by sh here with the stand-in as nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} \"$@\"\n")
    smi.chmod(0o755)
    readings_path = tmp_path / "gpus.json"
    readings_path.unlink(missing_ok=True)
    if readings is not None:
        readings_path.write_text(json.dumps(readings))
    script = facts_command([GPU_USE], BootstrapOptions()).text
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin",
                               "NVIDIA_SMI_STANDIN_READINGS": str(readings_path)})
    value: list[GpuUse] | str = parse_facts(proc.stdout, [GPU_USE])[GPU_USE.name]
    return value


def test_gpu_use_read_as_nvidia_smi_prints_it(tmp_path: Path) -> None:
    second = {**A10G, "index": 1, "uuid": "GPU-1a10", "utilization.gpu": "[N/A]"}
    assert gpu_fact_locally(tmp_path, {"gpus": [A10G, second]}) == [
        GpuUse("NVIDIA A10G", 37, 1229, 23028), GpuUse("NVIDIA A10G", None, 1229, 23028)]
    # No readings: the driver is not loaded (the manual's return code 9).
    assert gpu_fact_locally(tmp_path, None) == (
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and "
        "running.")
    script = facts_command([GPU_USE], BootstrapOptions()).text
    none = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": "/nonexistent:/bin"})
    assert parse_facts(none.stdout, [GPU_USE])[GPU_USE.name] == "no nvidia-smi"


def last_stop_as_read(record_file: Path | None, boot: str) -> str | None:
    """The status's last-stop line for a record file, as the fact prints it: base64 of
    the file, then this boot's id."""
    first = ("absent" if record_file is None
             else base64.b64encode(record_file.read_bytes()).decode())
    return last_stop_line(parse_last_stop(f"{first}\n{boot}\n"), HOST_NOW.timestamp())


HOST_NOW = dt.datetime(2026, 11, 23, 14, 30, tzinfo=dt.timezone.utc)
SEEN = dt.datetime(2026, 11, 23, 12, 3, 7, tzinfo=dt.timezone.utc)


def test_the_last_stop_as_the_watcher_and_the_idle_check_write_it(tmp_path: Path) -> None:
    """The records come from the on-host programs' own writers, so status and they agree."""
    record = tmp_path / "last-stop.json"
    notice = watch.Notice("aws", "interruption", "aws:stop:2026-11-23T12:05:00Z",
                          "spot instance-action: stop", "2026-11-23T12:05:00Z",
                          {"action": "stop", "time": "2026-11-23T12:05:00Z"})
    watch.write_record(str(record), watch.record_of(notice, SEEN, "boot-before"))
    assert last_stop_as_read(record, "boot-now") == (
        "interrupted by AWS at 12:03 UTC (spot instance-action: stop)")
    # Read during the two minutes between the notice and the stop:
    assert last_stop_as_read(record, "boot-before") == (
        "interrupted by AWS at 12:03 UTC (spot instance-action: stop); this boot, the machine "
        "has not stopped yet (due 12:05 UTC)")

    gcp = watch.Notice("gcp", "maintenance", "gcp:maintenance:b", "maintenance-event: "
                       "TERMINATE_ON_HOST_MAINTENANCE")
    watch.write_record(str(record), watch.record_of(gcp, SEEN - dt.timedelta(days=1), "b"))
    assert last_stop_as_read(record, "boot-now") == (
        "stopped for maintenance by GCP at 2026-11-22 12:03 UTC (maintenance-event: "
        "TERMINATE_ON_HOST_MAINTENANCE)")
    azure = watch.Notice("azure", "interruption", "azure:E1", "scheduled event Preempt")
    watch.write_record(str(record), watch.record_of(azure, SEEN, "b"))
    assert last_stop_as_read(record, "boot-now") == (
        "interrupted by Azure at 12:03 UTC (scheduled event Preempt)")

    settings = dataclasses.replace(idle.Settings(cloud="aws", minutes=60),
                                   last_stop_file=str(record))
    idle.record_stop(settings, SEEN, SEEN - dt.timedelta(hours=1), "poweroff requested",
                     idle.Log(io.StringIO()))
    assert last_stop_as_read(record, "boot-now") == "autostop at 12:03 UTC (idle 60 min)"

    assert last_stop_as_read(None, "boot-now") is None  # nothing recorded: no line
    record.write_text("{half a rec")
    assert last_stop_as_read(record, "boot-now") == (
        "unknown (/var/lib/gpu-workbench/last-stop.json holds no record (not a JSON object))")
    assert last_stop_line(parse_last_stop("unreadable\nb\n"), HOST_NOW.timestamp()) == (
        "unknown (/var/lib/gpu-workbench/last-stop.json is not readable by this user)")


def test_the_last_stop_fact_is_sh_and_reads_this_boot() -> None:
    script = facts_command([LAST_STOP], BootstrapOptions()).text
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    read = parse_facts(proc.stdout, [LAST_STOP])[LAST_STOP.name]
    assert read.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    if not Path("/var/lib/gpu-workbench/last-stop.json").exists():
        assert read.record is None and read.error == ""


def test_unusable_outputs_each_say_why_and_nothing_is_contacted(tmp_path: Path) -> None:
    save(tmp_path, "broken", {"cloud": "aws"})
    (tmp_path / ".config" / "gpu-workbench" / "outputs" / "half.json").write_text("{")
    save(tmp_path, "shared", {"public_ip": "10.0.0.1", "ssh_user": "u",
                              "jupyter_token": "Zq9" * 16}, mode=0o644)
    proc = status(tmp_path, "--timeout", "1")
    lines = proc.stdout.splitlines()
    outputs = tmp_path / ".config" / "gpu-workbench" / "outputs"
    assert lines[:3] == [
        "wb-broken  cannot read: its outputs have no public_ip or ssh_user (is the stack up?)",
        f"wb-half  cannot read: {outputs}/half.json: not JSON (Expecting property name "
        "enclosed in double quotes at line 1)",
        f"wb-shared  cannot read: {outputs}/shared.json holds secrets (jupyter_token) and is "
        f"readable by others (mode 644): chmod 600 {outputs}/shared.json, then run again (or "
        f"pass the stack's name: its outputs are then kept in {outputs}, mode 600)"]
    assert lines[3] == "scripts/status: 3 workstation(s) in 0.0s, 0 SSH command(s)"
    assert proc.returncode == 2
    unknown = status(tmp_path, "nosuch")
    assert unknown.stdout.splitlines()[0] == (
        f"wb-nosuch  cannot read: no saved outputs ({outputs}/nosuch.json); scripts/up or "
        "scripts/bootstrap nosuch saves them")
    empty = status(tmp_path / "empty")
    assert (empty.returncode, empty.stdout.strip()) == (0, (
        f"scripts/status: no workstations: nothing saved in {tmp_path}/empty/.config/"
        "gpu-workbench/outputs (scripts/up saves a stack's outputs there)"))
    assert status(tmp_path, "--timeout", "0").returncode == 2


@pytest.fixture
def three_hosts(real_parts: None) -> Iterator[list[TestHost]]:
    with started_hosts(3) as hosts:
        yield hosts


@pytest.mark.slow
def test_status_of_running_bare_and_stopped_workstations(three_hosts: list[TestHost],
                                                         tmp_path: Path) -> None:
    running, bare, stopped = three_hosts
    # A bootstrapped one: the bootstrap's container step, a data volume, a GPU reading.
    assert run_steps(running, ("nvidia-runtime", "container")).status("container") == "changed"
    running.exec("mkdir -p /data && mount -t tmpfs -o size=64m wbdata /data")
    running.write_file("/usr/bin/nvidia-smi",
                       f"#!/bin/sh\nexec /usr/bin/python3 {STANDIN} \"$@\"\n".encode(), "755")
    running.write_file("/etc/gpu-workbench-test/gpus.json",
                       json.dumps({"gpus": [A10G]}).encode())
    # A machine the stack built but nobody bootstrapped; its data volume is not mounted.
    # And one that is stopped: nothing listens on port 22.
    stopped.exec("kill $(cat /run/sshd.pid)")
    plain_names(tmp_path)
    save(tmp_path, "aws", outputs_for(running, data_mount="/data"))
    save(tmp_path, "gcp", outputs_for(bare, cloud="gcp", hourly_cost_usd=2.48,
                                      data_mount="/data"))
    save(tmp_path, "azure", outputs_for(stopped, cloud="azure"))

    proc = status(tmp_path, "--timeout", "3")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    blocks = dict(re.findall(r"^wb-(\S+)  (.*(?:\n  .*)*)", out, re.M))
    assert set(blocks) == {"aws", "gcp", "azure"}
    aws = blocks["aws"].splitlines()
    # Test hosts share the box's kernel, so "up" is the box's uptime; the cost follows it.
    head = re.fullmatch(rf"{running.user}@{running.ip}: up (?:(\d+)d)?(?:(\d+)h)?(\d+)m, about "
                        r"\$(\d+\.\d\d) this boot at \$1\.212/h", aws[0])
    assert head, aws[0]
    minutes = (int(head[1] or 0) * 24 + int(head[2] or 0)) * 60 + int(head[3])
    assert minutes / 60 * 1.212 - 0.01 <= float(head[4]) <= (minutes + 1) / 60 * 1.212 + 0.01
    assert aws[1] == "  gpu        NVIDIA A10G 37% now, 1.2 of 22.5 GiB"
    assert re.fullmatch(r"  container  workbench running since \d{4}-\d\d-\d\d \d\d:\d\d UTC, "
                        + re.escape(STANDIN_IMAGE), aws[2]), aws[2]
    assert aws[3] == "  autostop   off (no idle check installed)"
    assert re.fullmatch(r"  data       /data: wbdata tmpfs, 64M, \d+% used", aws[4]), aws[4]
    gcp = blocks["gcp"].splitlines()
    assert gcp[1:] == [
        "  gpu        no nvidia-smi",
        "  container  no container workbench (scripts/bootstrap starts it)",
        "  autostop   off (no idle check installed)",
        "  data       /data: NOT MOUNTED (the kept volume is not in use; rerun "
        "scripts/bootstrap)"]
    assert blocks["azure"] == (
        f"{stopped.user}@{stopped.ip}: no answer ([Errno 111] Connection refused); stopped, "
        "most likely: only its disks are billed")
    # One SSH command per machine that answered; none for the one that did not.
    assert out.splitlines()[-1].startswith("scripts/status: 3 workstation(s) in ")
    assert out.splitlines()[-1].endswith("s, 2 SSH command(s)")


@pytest.mark.slow
def test_a_host_that_is_not_the_stacks_is_not_read(host: TestHost, tmp_path: Path) -> None:
    """The outputs vouch for one host key; the address answers with another."""
    genuine = key_fingerprint(host.host_key_pub)
    impostor_key, _log = host.swap_host_key()
    plain_names(tmp_path)
    save(tmp_path, "aws", outputs_for(host))
    proc = status(tmp_path, "aws")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"wb-aws  {host.user}@{host.ip}: ERROR host key of {host.ip} is not the stack's: the "
        f"stack's outputs say {genuine}, the host offers ED25519 "
        f"{key_fingerprint(impostor_key)}; stopped before logging in (nothing sent)")
    assert re.fullmatch(r"scripts/status: 1 workstation\(s\) in \d+\.\ds, 0 SSH command\(s\)",
                        lines[1]), lines

    # Outputs without a host key: the host is accepted on first use (recorded in this
    # home's known_hosts), and a hostile data mount reaches findmnt as one argument.
    with tempfile.TemporaryDirectory() as other:
        home = Path(other)
        hostile = outputs_for(host, data_mount="/data$(touch /tmp/pwned-status)'\"")
        del hostile["host_key"]
        save(home, "aws", hostile)
        plain_names(home)
        read = status(home, "aws")
        assert read.returncode == 0, read.stdout + read.stderr
        assert ("  data       /data$(touch /tmp/pwned-status)'\": NOT MOUNTED (the kept "
                "volume is not in use; rerun scripts/bootstrap)" in read.stdout.splitlines())
        assert host.exec("test -e /tmp/pwned-status", check=False).returncode != 0
        assert host.ip in (home / ".ssh" / "known_hosts").read_text()


def idle_state_after(tmp_path: Path, the_look: idle.Look, at: dt.datetime,
                     stop: Callable[[idle.Settings], str] | None = None,
                     machine: str = "a") -> dict[str, object]:
    """The state file the real idle check writes after a check at `at` (each machine
    keeps its own file, as each host does)."""
    path = tmp_path / f"state-{machine}.json"
    settings = idle.Settings(cloud="aws", minutes=60, wall=False)
    idle.run_check(settings, path, look=lambda _: the_look, now=lambda: at,
                   stop=stop or (lambda _: "poweroff requested"))
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def quiet() -> idle.Look:
    return idle.Look(idle.GpuLook("ok", "", {"0": [0, 0, 0]}, 2.0), [], [])


def test_the_autostop_line_reads_what_the_idle_check_wrote(tmp_path: Path) -> None:
    config = "[autostop]\ncloud = aws\nminutes = 60\n"
    start = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)

    def line(state: dict[str, object], now: dt.datetime, timer: str = "active") -> str:
        look = AutostopLook(True, timer, 60.0, state)
        assert parse_autostop(facts_text(config, state, timer)) == look
        return autostop_line(look, now.timestamp())

    first = idle_state_after(tmp_path, quiet(), start)
    assert line(first, start + dt.timedelta(minutes=12)) == (
        "idle 12m of 60 min; last check, 12m ago: idle: quiet since 12:00:00 UTC; stop at "
        "13:00:00 UTC")
    ssh = idle.Conn(22, "10.0.0.2:22", "203.0.113.9:50000", "host")
    busy = idle_state_after(tmp_path, idle.Look(quiet().gpu, [ssh], []),
                            start + dt.timedelta(minutes=15))
    assert line(busy, start + dt.timedelta(minutes=16)).startswith(
        "busy at the last check, 1m ago: 1 connection(s) on port 22 (SSH) from "
        "203.0.113.9:50000")

    def refused(_: idle.Settings) -> str:
        raise idle.StopFailed("arm", "deallocate: ARM 403 AuthorizationFailed")

    # Idle from 12:00; it always warns first (at 13:00), then stops at the next check.
    idle_state_after(tmp_path, quiet(), start, machine="azure")
    idle_state_after(tmp_path, quiet(), start + dt.timedelta(minutes=60), machine="azure")
    failed = idle_state_after(tmp_path, quiet(), start + dt.timedelta(minutes=65), refused,
                              machine="azure")
    assert line(failed, start + dt.timedelta(minutes=66)) == (
        "STOP FAILED, 1m ago: deallocate: ARM 403 AuthorizationFailed; retried at each check "
        "(window 60 min)")
    assert line(first, start, timer="inactive") == (
        "timer inactive: this machine will not stop itself (window 60 min)")
    assert autostop_line(AutostopLook(False, "inactive", None, None), 0) == (
        "off (no idle check installed)")


def facts_text(config: str, state: dict[str, object], timer: str) -> str:
    """What the AUTOSTOP fact's snippet prints: the two files in base64, the timer."""
    encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    return f"{encode(config)}\n{encode(json.dumps(state))}\n{timer}\n"


def test_lines_cut_by_chunks_or_flushes_stay_whole() -> None:
    out = io.StringIO()
    lock = threading.Lock()
    stream = PrefixedLines("wb@10.0.0.2", out, lock)
    for chunk in ("2026-11-23 one\n202", "", "6-11-23 two", "\r\n", "three"):
        stream.write(chunk)
        stream.flush()  # Invoke flushes after every chunk
    assert out.getvalue() == "wb@10.0.0.2  2026-11-23 one\nwb@10.0.0.2  2026-11-23 two\n"
    stream.finish()
    assert out.getvalue().endswith("wb@10.0.0.2  three\n")
