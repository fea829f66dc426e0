"""`fab logs`: the container's, AIAA's and the idle check's logs, through the real fab CLI
against real hosts (sshd + dockerd; a systemd host for the journal and --follow)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bootstrap.logs import LogsError, log_command
from tests.support.bootstrap_run import FAB, REPO, STANDIN_IMAGE, fab, run_steps
from tests.support.systemd_host import SystemdHost
from tests.support.testhosts import TestHost


def test_bad_input_is_one_line_before_any_connection(tmp_path: Path) -> None:
    with pytest.raises(LogsError, match=r"^--source must be one of container, aiaa, mlflow, "
                                        r"autostop, not 'jupyter'$"):
        log_command("jupyter", 10, False)
    with pytest.raises(LogsError, match=r"^--lines must be 0 to 1000000, not 1000001$"):
        log_command("container", 1_000_001, False)
    # 192.0.2.1 is never dialled: the options are refused first.
    for args, message in (
            (("--source", "nope"), "logs: --source must be one of container, aiaa, mlflow, "
                                   "autostop, not 'nope'"),
            (("--name", "wb;$(touch /tmp/x)"), "logs: --name must be a Docker container name"),
            (("--lines", "lots"), "logs: --lines must be a whole number, not 'lots'")):
        proc = fab("-H", "wb@192.0.2.1", "logs", *args, home=tmp_path, timeout=30)
        assert proc.returncode != 0
        assert message in proc.stderr, proc.stderr


def the_lines(out: str, host: str) -> list[str]:
    prefix = f"{host}  "
    assert all(line.startswith(prefix) for line in out.splitlines()), out
    return [line[len(prefix):] for line in out.splitlines()]


@pytest.mark.slow
def test_container_and_aiaa_logs_each_line_after_the_host(host: TestHost, tmp_path: Path) -> None:
    base = ("-H", host.ssh_target, "-i", str(host.key_path), "logs")
    missing = fab(*base, home=tmp_path)
    assert missing.returncode == 1
    assert the_lines(missing.stdout, host.ssh_target)[-1] == (
        "no container workbench on this host (scripts/bootstrap starts it)")

    # stderr first: docker keeps the two streams in the order its copiers wrote them.
    host.exec(f"docker run -d --name workbench {STANDIN_IMAGE} sh -c "
              "'echo to-stderr >&2; sleep 1; "
              "for i in 1 2 3 4 5; do echo \"line $i: it'\"'\"'s \\$(not run)\"; done; "
              "mkdir -p /workspace; echo aiaa ready > /workspace/.aiaa.log; exec sleep 600'")
    deadline = time.monotonic() + 20
    while "line 5" not in host.out("docker logs workbench 2>&1"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    two = fab(*base, "--lines", "2", home=tmp_path)
    assert two.returncode == 0, two.stderr
    assert the_lines(two.stdout, host.ssh_target) == [
        "line 4: it's $(not run)", "line 5: it's $(not run)"]
    every = fab(*base, home=tmp_path)
    assert the_lines(every.stdout, host.ssh_target) == [
        "to-stderr", *(f"line {i}: it's $(not run)" for i in range(1, 6))]
    aiaa = fab(*base, "--source", "aiaa", home=tmp_path)
    assert (aiaa.returncode, the_lines(aiaa.stdout, host.ssh_target)[-1]) == (0, "aiaa ready")
    # No systemd on this host: the journal is not there, and that is said.
    journal = fab(*base, "--source", "autostop", home=tmp_path)
    assert journal.returncode == 1
    assert the_lines(journal.stdout, host.ssh_target)[-1] == (
        "no systemd journal on this host: the idle check runs under systemd")


@pytest.mark.slow
def test_follow_the_idle_check_and_stop_with_ctrl_c(systemd_host: SystemdHost,
                                                     tmp_path: Path) -> None:
    h = systemd_host
    with h.connection() as connection:
        run = run_steps(h, ("autostop",), connection=connection,  # type: ignore[arg-type]
                        cloud="aws", autostop_minutes=30)
    assert run.status("autostop") == "changed", run.lines
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "known_hosts").write_text(h.known_hosts_path.read_text())
    follow = subprocess.Popen(
        [FAB, "-H", h.ssh_target, "-i", str(h.key_path), "logs", "--strict-host-keys",
         "--source", "autostop", "--follow", "--lines", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, start_new_session=True)
    assert follow.stdout is not None
    try:
        # The reader is up on the host; then a check runs and its decision streams in.
        deadline = time.monotonic() + 30
        while "journalctl" not in h.out("ps -eo comm"):
            if follow.poll() is not None or time.monotonic() > deadline:
                follow.kill()
                pytest.fail(f"journalctl never started on the host: {follow.stdout.read()}")
            time.sleep(0.2)
        h.run_inside("systemctl start workbench-idle-check.service")
        seen = []
        for line in follow.stdout:
            seen.append(line)
            if "decision:" in line:
                break
        assert all(s.startswith(f"{h.ssh_target}  ") for s in seen), seen
        assert re.search(r"workbench-idle-check\S*: decision: ", seen[-1]), seen
    finally:
        follow.send_signal(signal.SIGINT)  # Ctrl-C
        follow.wait(timeout=30)
    # Ctrl-C reached the remote reader: nothing is left following on the host.
    deadline = time.monotonic() + 10
    while "journalctl" in h.out("ps -eo comm"):
        assert time.monotonic() < deadline, "journalctl still running on the host"
        time.sleep(0.2)
