"""Host keys over real SSH: a new host is recorded (accept-new) with its fingerprint
printed once, strict mode refuses an unknown host, and an impostor (the same
address, another host key) is refused before authentication and left unchanged,
while the other -H hosts go on. Each test has a HOME of its own: the box's
~/.ssh is never read or written."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import testhosts
from tests.support.bootstrap_run import fab, recap_counts
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow


def fingerprint(pub: Path) -> str:
    """'ED25519 SHA256:...' from `ssh-keygen -lf`, the way a user checks a key."""
    fields = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                            check=True).stdout.split()
    return f"{fields[-1].strip('()')} {fields[1]}"


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ": error: " in ln]


def umask_only(host: TestHost, home: Path, *extra: str, hosts: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    return fab("-H", hosts or host.ssh_target, "-i", str(host.key_path), "umask", *extra,
               home=home)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".ssh").mkdir(mode=0o700)
    return tmp_path


@pytest.fixture
def impostor_pair(real_parts: None) -> Iterator[list[TestHost]]:
    hosts = testhosts.start_hosts(2)
    try:
        yield hosts
    finally:
        for h in hosts:
            testhosts.stop_host(h)


def test_a_new_host_is_recorded_with_its_fingerprint_printed_once(bare_host: TestHost,
                                                                   home: Path) -> None:
    known = home / ".ssh" / "known_hosts"
    known.write_text("198.51.100.9 ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIHm9H0mYfQyK1CkU0p4s3sX0m9wZb0bq5S2uV2h2Xx1F\n")
    first = umask_only(bare_host, home)
    assert first.returncode == 0, first.stdout + first.stderr
    expected = (f"{bare_host.ssh_target}  new host {bare_host.ip}: "
                f"{fingerprint(bare_host.host_key_pub)} added to {known} (plain; accept-new)")
    assert first.stdout.splitlines()[0] == expected
    # The file's style (plain names) is kept, and OpenSSH finds the entry.
    assert known.read_text().splitlines()[-1] == (
        f"{bare_host.ip} " + " ".join(bare_host.host_key_pub.read_text().split()[:2]))
    found = subprocess.run(["ssh-keygen", "-F", bare_host.ip, "-f", str(known)],
                           capture_output=True, text=True).stdout
    assert f"# Host {bare_host.ip} found: line 2" in found

    second = umask_only(bare_host, home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "new host" not in second.stdout + second.stderr  # printed once, when recorded
    assert len(known.read_text().splitlines()) == 2


def test_a_new_host_goes_hashed_into_a_hashed_file(bare_host: TestHost, home: Path) -> None:
    known = home / ".ssh" / "known_hosts"
    # A hashed line for another name, as `HashKnownHosts yes` writes them.
    known.write_text(f"127.0.0.9 {' '.join(bare_host.host_key_pub.read_text().split()[:2])}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    proc = umask_only(bare_host, home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(hashed; accept-new)" in proc.stdout
    last = known.read_text().splitlines()[-1]
    assert last.startswith("|1|") and bare_host.ip not in last
    found = subprocess.run(["ssh-keygen", "-F", bare_host.ip, "-f", str(known)],
                           capture_output=True, text=True).stdout
    assert f"# Host {bare_host.ip} found: line 2" in found


@pytest.mark.parametrize("how", ["--strict-host-keys", "ssh_config", "fabric config"])
def test_strict_mode_refuses_an_unknown_host_before_logging_in(bare_host: TestHost, home: Path,
                                                               how: str) -> None:
    before = bare_host.read_file("/home/wb/.bashrc")
    if how == "ssh_config":
        (home / ".ssh" / "config").write_text("Host *\n  StrictHostKeyChecking yes\n")
    if how == "fabric config":  # workbench.strict_host_keys (fabric.yaml), from the environment
        proc = fab("-H", bare_host.ssh_target, "-i", str(bare_host.key_path), "umask",
                   env={"FABRIC_WORKBENCH_STRICT_HOST_KEYS": "1"}, home=home)
    else:
        proc = umask_only(bare_host, home, *(["--strict-host-keys"] if how != "ssh_config"
                                             else []))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert error_lines(proc.stderr) == [
        f"{bare_host.ssh_target}: error: {bare_host.ip} is not in known_hosts "
        f"({home}/.ssh/known_hosts) and strict host key checking is on: it offers "
        f"{fingerprint(bare_host.host_key_pub)}; stopped before logging in (nothing sent)"]
    assert not (home / ".ssh" / "known_hosts").exists()
    assert bare_host.read_file("/home/wb/.bashrc") == before
    assert "Accepted" not in (bare_host.dir / "sshd.log").read_text()


def test_an_impostor_is_refused_before_authentication_and_the_other_host_goes_on(
        impostor_pair: list[TestHost], home: Path) -> None:
    real, other = impostor_pair
    known = home / ".ssh" / "known_hosts"
    known.write_text(real.known_hosts.read_text() + other.known_hosts.read_text())
    impostor_pub, impostor_log = real.swap_host_key()
    real.write_file("/etc/docker/daemon.json", b'{"log-level": "warn"}\n')
    before = {p: real.read_file(p) for p in ("/home/wb/.bashrc", "/etc/docker/daemon.json")}

    proc = fab("-H", f"{real.ssh_target},{other.ssh_target}", "-i", str(real.key_path),
               "bootstrap", "--skip-check", "--image", testhosts.STANDIN_IMAGE,
               env={"WORKBENCH_JUPYTER_TOKEN": "t0ken" * 8}, home=home, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # $HOME is the test's, not the passwd entry's (where ssh-keygen looks): hence -f.
    remove = f"ssh-keygen -R '{real.ip}' -f {known}"
    assert error_lines(proc.stderr) == [
        f"{real.ssh_target}: error: host key mismatch for {real.ip}: known_hosts has "
        f"{fingerprint(real.host_key_pub)} ({known}:1), the host offers "
        f"{fingerprint(impostor_pub)}; stopped before logging in (no key, password or token "
        f"sent); if the machine was rebuilt, remove the stale entry: {remove}"]
    # The impostor got nothing: no file changed, no authentication was even tried.
    assert {p: real.read_file(p) for p in before} == before
    log = impostor_log.read_text()
    assert "userauth-request" not in log and "Accepted" not in log, log
    assert "[preauth]" in log  # it saw the connection, which ended at the key exchange
    # The other host was bootstrapped as if nothing happened.
    counts = recap_counts(proc.stdout)
    assert counts[real.ssh_target]["failed"] == 1 and counts[real.ssh_target]["commands"] == 0
    assert counts[other.ssh_target]["failed"] == 0 and counts[other.ssh_target]["changed"] > 0

    # The printed command is the exact fix, once the user has decided the new key is right.
    subprocess.run(shlex.split(remove), check=True, capture_output=True,
                   env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    again = umask_only(real, home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"new host {real.ip}: {fingerprint(impostor_pub)} added to {known}" in again.stdout
