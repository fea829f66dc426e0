"""The Slurm tasks check the login node's host key as the bootstrap does: a new node
is recorded as `[host]:port` with its fingerprint printed once, strict mode refuses
an unknown node, and a node that offers another key is refused before logging in
(no key, no NGC credential sent; nothing submitted). Each test has a HOME and a
known_hosts of its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from invoke.exceptions import Exit

from cluster import tasks as slurm
from tests.support.slurm_cluster import ACCOUNT, PARTITION
from tests.support.slurm_login_node import LoginNode

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
FAB = PROJECT / ".venv" / "bin" / "fab"


def fab(node: LoginNode, home: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAB), "-H", node.sshd.host_string, "-i", str(node.sshd.client_key), *args],
        cwd=PROJECT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), **(env or {})})


def fingerprint(pub: Path) -> str:
    fields = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                            check=True).stdout.split()
    return f"{fields[-1].strip('()')} {fields[1]}"


def accepted(node: LoginNode) -> int:
    """Logins the node's sshd accepted so far (its log at the default INFO level)."""
    return node.sshd.log.read_text().count("Accepted publickey")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    # Plain names, and none of the box's /etc/ssh/ssh_known_hosts.
    (ssh / "config").write_text("Host *\n  HashKnownHosts no\n  GlobalKnownHostsFile /dev/null\n")
    return tmp_path / "home"


@pytest.fixture
def job_file(login_node: LoginNode, tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({
        "name": "hostkeys", "account": ACCOUNT, "partition": PARTITION, "time": "00:02:00",
        "runtime": "charliecloud", "image": str(login_node.busybox_image),
        "jobs_dir": "hostkey-jobs", "command": ["true"]}))
    return path


def test_a_new_login_node_is_recorded_as_host_port_with_its_fingerprint_once(
        login_node: LoginNode, home: Path, job_file: Path) -> None:
    port = login_node.sshd.port
    known = home / ".ssh" / "known_hosts"
    first = fab(login_node, home, "slurm.submit", "--job-file", str(job_file))
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines()[0] == (
        f"{login_node.sshd.user}@127.0.0.1: new host [127.0.0.1]:{port}: "
        f"{fingerprint(login_node.sshd.host_key_pub)} added to {known} (plain; accept-new)")
    key = " ".join(login_node.sshd.host_key_pub.read_text().split()[:2])
    assert known.read_text() == f"[127.0.0.1]:{port} {key}\n"

    again = fab(login_node, home, "slurm.submit", "--job-file", str(job_file))
    assert again.returncode == 0, again.stderr
    assert "new host" not in again.stderr
    assert known.read_text() == f"[127.0.0.1]:{port} {key}\n"


def test_strict_mode_refuses_an_unknown_login_node(login_node: LoginNode, home: Path) -> None:
    before = accepted(login_node)
    proc = fab(login_node, home, "slurm.status", "1", "--strict-host-keys")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"slurm.status: [127.0.0.1]:{login_node.sshd.port} is not in known_hosts "
        f"({home}/.ssh/known_hosts) and strict host key checking is on: it offers "
        f"{fingerprint(login_node.sshd.host_key_pub)}; stopped before logging in (nothing sent)")
    assert accepted(login_node) == before
    assert not (home / ".ssh" / "known_hosts").exists()


def test_an_impostor_login_node_gets_no_login_and_no_ngc_key(login_node: LoginNode, home: Path,
                                                             job_file: Path) -> None:
    """known_hosts vouches for another key at the node's address: to the client the
    node is an impostor, as a machine that took over the address would be."""
    port = login_node.sshd.port
    known = home / ".ssh" / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(home / "genuine")], check=True)
    genuine = home / "genuine.pub"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(genuine.read_text().split()[:2])}\n")
    queue_before = sorted(login_node.run_as_user("squeue -h -t all -o %i").stdout.split())
    logins_before = accepted(login_node)
    message = (
        f"host key mismatch for [127.0.0.1]:{port}: known_hosts has {fingerprint(genuine)} "
        f"({known}:1), the host offers {fingerprint(login_node.sshd.host_key_pub)}; stopped "
        "before logging in (no key, password or token sent); if the machine was rebuilt, "
        f"remove the stale entry: ssh-keygen -R '[127.0.0.1]:{port}' -f {known}")

    pull = fab(login_node, home, "slurm.pull", "--image", "nvcr.io/nvidia/pytorch:24.05-py3",
               "--runtime", "charliecloud", env={"NGC_API_KEY": "nvapi-not-for-impostors"})
    assert (pull.returncode, pull.stderr.strip()) == (2, f"slurm.pull: {message}")
    submit = fab(login_node, home, "slurm.submit", "--job-file", str(job_file))
    assert (submit.returncode, submit.stderr.strip()) == (2, f"slurm.submit: {message}")

    assert accepted(login_node) == logins_before
    # Nothing submitted: no job id that was not there before. (Finished jobs of earlier
    # tests may leave slurmctld's memory meanwhile, MinJobAge, so the list may shrink.)
    queue_after = set(login_node.run_as_user("squeue -h -t all -o %i").stdout.split())
    assert queue_after - set(queue_before) == set()
    assert known.read_text().count("\n") == 1  # nothing recorded over it


def test_the_api_refuses_too(login_node: LoginNode, tmp_path: Path) -> None:
    """The tasks called from Python (the connection tests use) check the same way."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(tmp_path / "other")], check=True)
    known = tmp_path / "known_hosts"
    key = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    known.write_text(f"[127.0.0.1]:{login_node.sshd.port} {key}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")
    conn = login_node.connect(ssh_config=config)
    with pytest.raises(Exit) as refused:
        slurm.job_states(conn, "1")
    assert refused.value.code == 2
    assert str(refused.value.message).startswith(
        f"slurm.status: host key mismatch for [127.0.0.1]:{login_node.sshd.port}: ")
    assert not conn.is_connected
