"""Faults: unreachable host, wrong key, sudo needing a password, a busy dpkg lock,
and a run killed half-way. Each must end in one clear line, a non-zero exit,
and no partial write; a killed run must converge when run again."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bootstrap.recap import Status
from tests.support.bootstrap_run import (
    FAB,
    REPO,
    STANDIN_IMAGE,
    connect,
    fab,
    recap_counts,
    run_steps,
)
from tests.support.testhosts import PASSWORD_USER, PASSWORD_USER_PASSWORD, TestHost

pytestmark = pytest.mark.slow


def snapshot(host: TestHost) -> dict[str, object]:
    """What a bootstrap would change, to prove a failed run changed none of it."""
    return {
        "bashrc": host.read_file("/home/wb/.bashrc"),
        "bashrc_pw": host.read_file(f"/home/{PASSWORD_USER}/.bashrc"),
        "etc_docker": host.out("ls -A /etc/docker"),
        "containers": host.out("docker ps -aq"),
        "runtimes": sorted(host.docker_info()["Runtimes"]),
        "compose": host.exec("docker compose version", check=False).returncode,
    }


def error_lines(stderr: str, target: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"{target}: error: ")]


def test_unreachable_host_fails_after_bounded_retries(host: TestHost, tmp_path: Path) -> None:
    target = f"{host.user}@{host.ip}:2299"  # sshd is on 22; nothing answers on 2299
    started = time.monotonic()
    proc = fab("-H", target, "-i", str(host.key_path), "bootstrap", "--wait-timeout", "3",
               home=tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, target)
    assert len(lines) == 1, proc.stderr
    assert "cannot reach" in lines[0] and "Connection refused" in lines[0]
    assert "tries in 3s" in lines[0]
    assert 3 <= elapsed < 15, "retried with backoff until --wait-timeout, then stopped"


def test_wrong_key_fails_at_once_and_changes_nothing(host: TestHost, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    before = snapshot(host)
    started = time.monotonic()
    proc = fab("-H", host.ssh_target, "-i", str(wrong), "bootstrap", home=tmp_path)
    assert proc.returncode != 0
    assert time.monotonic() - started < 10, "an auth failure is not retried"
    lines = error_lines(proc.stderr, host.ssh_target)
    assert len(lines) == 1, proc.stderr
    assert f"SSH authentication failed for {host.ssh_target} with key {wrong}" in lines[0]
    assert snapshot(host) == before


def test_sudo_password_needed_but_not_given(host: TestHost, tmp_path: Path) -> None:
    target = f"{PASSWORD_USER}@{host.ip}"
    before = snapshot(host)
    proc = fab("-H", target, "-i", str(host.key_path), "bootstrap", home=tmp_path)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, target)
    assert lines == [f"{target}: error: sudo on {target} needs a password for {PASSWORD_USER}: "
                     "rerun with --prompt-for-sudo-password"]
    assert recap_counts(proc.stdout)[target]["commands"] == 1
    assert snapshot(host) == before


def test_sudo_password_given_through_fabric_config_works(host: TestHost,
                                                          tmp_path: Path) -> None:
    """--prompt-for-sudo-password fills sudo.password; FABRIC_SUDO_PASSWORD is the same key
    from the environment (no terminal in a test)."""
    target = f"{PASSWORD_USER}@{host.ip}"
    proc = fab("-H", target, "-i", str(host.key_path), "nvidia-runtime", home=tmp_path,
               env={"FABRIC_SUDO_PASSWORD": PASSWORD_USER_PASSWORD})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nvidia" in host.docker_info()["Runtimes"]
    wrong = fab("-H", target, "-i", str(host.key_path), "umask", home=tmp_path,
                env={"FABRIC_SUDO_PASSWORD": "not-it"})
    assert wrong.returncode != 0
    assert error_lines(wrong.stderr, target) == [
        f"{target}: error: sudo on {target} rejected the password for {PASSWORD_USER}"]
    assert b"umask 0002" not in (host.read_file(f"/home/{PASSWORD_USER}/.bashrc") or b"")


def test_sudo_not_installed(host: TestHost) -> None:
    host.remove("/usr/bin/sudo")
    run = run_steps(host, ("wait", "umask"))
    assert run.status("wait") == "failed"
    assert run.message("wait") == (f"sudo is not installed on {host.ssh_target}: log in as "
                                   "root, or install sudo")
    assert run.lines[0] == f"{host.ssh_target}: error: {run.message('wait')}"


def test_root_login_needs_no_sudo(host: TestHost) -> None:
    host.remove("/usr/bin/sudo")  # proves no sudo is used
    run = run_steps(host, ("nvidia-runtime", "umask"), connection=connect(host, user="root"))
    assert not run.report.failed, run.lines
    assert "nvidia" in host.docker_info()["Runtimes"]
    assert b"umask 0002" in (host.read_file("/root/.bashrc") or b"")


def test_wait_step_waits_for_the_dpkg_lock(host: TestHost) -> None:
    # apt holds fcntl locks; this holds the same kind for 3 s, as apt would.
    host.exec("nohup python3 -c 'import fcntl, time; f = open(\"/var/lib/dpkg/lock-frontend\","
              " \"w\"); fcntl.lockf(f, fcntl.LOCK_EX); time.sleep(3)' >/dev/null 2>&1 &")
    time.sleep(0.3)
    run = run_steps(host, ("wait",))
    assert run.status("wait") == "ok", run.lines
    assert "for the dpkg lock" in run.message("wait")
    assert run.seconds("wait") >= 2


def test_wait_step_gives_up_on_a_lock_held_too_long(host: TestHost) -> None:
    host.exec("nohup python3 -c 'import fcntl, time; f = open(\"/var/lib/dpkg/lock-frontend\","
              " \"w\"); fcntl.lockf(f, fcntl.LOCK_EX); time.sleep(30)' >/dev/null 2>&1 &")
    time.sleep(0.3)
    run = run_steps(host, ("wait", "umask"), wait_timeout=2)
    assert run.status("wait") == "failed"
    assert run.message("wait").startswith("dpkg lock held by pid ")
    assert "python3" in run.message("wait")
    assert run.status("umask") == "skipped"
    assert b"umask 0002" not in (host.read_file("/home/wb/.bashrc") or b"")


def test_wait_step_waits_for_cloud_init(host: TestHost) -> None:
    """A stand-in `cloud-init` that is busy for 2 s: `status --wait` blocks like the real one."""
    host.write_file("/usr/bin/cloud-init", b"""#!/bin/sh
[ "$1" = status ] || exit 1
if [ "$2" = --wait ]; then sleep 2; echo; fi
echo "status: done"
""", mode="755")
    run = run_steps(host, ("wait",))
    assert run.status("wait") == "ok"
    assert "cloud-init done (status: done)" in run.message("wait")
    assert run.seconds("wait") >= 2


def test_killed_half_way_then_rerun_converges(host: TestHost, tmp_path: Path) -> None:
    args = [FAB, "-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", "--cloud",
            "azure", "--image", STANDIN_IMAGE, "--skip-check", "--docker-min-free-gib", "1000000"]
    host.mount_resource_disk()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                                            "HOME": str(tmp_path)})
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " nvidia-runtime " in line:
            # The data-root step (stop dockerd, copy, rewrite, start) is now under way.
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    time.sleep(2)  # let whatever the remote side was doing finish or die

    again = fab(*args[1:], home=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    third = fab(*args[1:], home=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert recap_counts(third.stdout)[host.ssh_target]["changed"] == 0, third.stdout
    assert host.docker_info()["DockerRootDir"] == "/mnt/docker"
    assert json.loads(host.read_file("/etc/docker/daemon.json") or b"") == {
        "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime",
                                "runtimeArgs": []}},
        "data-root": "/mnt/docker"}
    assert host.out("docker inspect -f '{{.State.Running}}' workbench").strip() == "true"
    assert host.out("ls -A /etc/docker | grep -c '^.daemon.json.wb-' || true").strip() == "0"


def test_dockerd_left_stopped_by_an_interrupted_run_is_started(host: TestHost) -> None:
    """The state a kill between `service docker stop` and start leaves behind."""
    host.exec("service docker stop >/dev/null")
    run = run_steps(host, ("nvidia-runtime", "container"))
    assert run.status("nvidia-runtime") == "changed"
    assert "started dockerd" in run.message("nvidia-runtime")
    assert run.status("container") == "changed"
    assert "nvidia" in host.docker_info()["Runtimes"]
    assert run_steps(host, ("nvidia-runtime", "container")).report.count(Status.CHANGED) == 0


def test_connection_object_from_the_api_reports_commands(host: TestHost) -> None:
    run = run_steps(host, ("wait",), connection=connect(host))
    assert run.report.commands_sent == 1 and not run.report.failed


def test_prompt_for_sudo_password_on_a_terminal(host: TestHost, tmp_path: Path) -> None:
    """`--prompt-for-sudo-password` as a user types it: fab asks on its terminal (a pty here)."""
    import os
    import pty

    target = f"{PASSWORD_USER}@{host.ip}"
    pid, fd = pty.fork()
    if pid == 0:  # child: become fab
        os.chdir(REPO)
        os.execve(FAB, [FAB, "--prompt-for-sudo-password", "-H", target, "-i",
                        str(host.key_path), "umask"],
                  {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    output = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"sudo.password" in output:
            os.write(fd, PASSWORD_USER_PASSWORD.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert answered, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "added umask 0002 to /home/wbpw/.bashrc" in text
