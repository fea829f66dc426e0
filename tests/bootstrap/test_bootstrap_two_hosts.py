"""The full bootstrap through the real `fab` CLI on two real hosts, then again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bootstrap_run import STANDIN_IMAGE, fab, http_get, recap_counts
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow


def bootstrap(host: TestHost, home: Path, *extra: str) -> tuple[int, str]:
    proc = fab("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap",
               "--image", STANDIN_IMAGE, "--skip-check", *extra, home=home)
    return proc.returncode, proc.stdout + proc.stderr


def test_two_hosts_cold_then_second_run_changes_nothing(two_hosts: list[TestHost],
                                                         tmp_path: Path) -> None:
    azure, aws = two_hosts
    # The Azure host's OS disk is "short": Docker moves to its resource disk.
    flags = {azure.name: ("--cloud", "azure", "--docker-min-free-gib", "1000000"),
             aws.name: ("--cloud", "aws")}

    azure.mount_resource_disk()
    for h in two_hosts:
        rc, out = bootstrap(h, tmp_path, *flags[h.name])
        assert rc == 0, out
        counts = recap_counts(out)[h.ssh_target]
        assert counts["failed"] == 0 and counts["changed"] >= 4, out
        assert "JupyterLab: http://localhost:8890/lab?token=" in out
        assert (f"ssh -i {h.key_path} -L 8888:localhost:8888 -L 8890:localhost:8890 "
                f"-L 5000:localhost:5000 {h.ssh_target}") in out

    for h in two_hosts:
        info = h.docker_info()
        assert "nvidia" in info["Runtimes"], info["Runtimes"]
        inspect = json.loads(h.out("docker inspect workbench"))[0]
        assert inspect["HostConfig"]["Runtime"] == "nvidia"
        assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert inspect["State"]["Running"] is True
        assert h.out("docker compose version").startswith("Docker Compose version")
        # The login user's shell really gets the umask.
        assert h.out("su - wb -c 'bash -ic umask' 2>/dev/null").strip() == "0002"
        assert h.out("grep -c '^umask 0002$' /home/wb/.bashrc").strip() == "1"
        token_stat = h.out("stat -c '%a %U' /home/wb/.config/gpu-workbench/jupyter_token")
        assert token_stat.split() == ["600", "wb"]
        token = h.out("cat /home/wb/.config/gpu-workbench/jupyter_token").strip()
        assert len(token) == 64
        # Published ports answer from outside the host; Jupyter wants the token.
        assert http_get(f"http://{h.ip}:8890/cgi-bin/lab?token={token}") == \
            (200, "JupyterLab stand-in\n")
        assert http_get(f"http://{h.ip}:8890/cgi-bin/lab?token=wrong")[0] == 403
        assert http_get(f"http://{h.ip}:5000/") == (200, "AIAA stand-in\n")

    assert azure.docker_info()["DockerRootDir"] == "/mnt/docker"
    assert json.loads(azure.read_file("/etc/docker/daemon.json") or b"")["data-root"] == \
        "/mnt/docker"
    # The image came along to the new data-root (the container runs from it).
    assert azure.out(f"docker image inspect -f '{{{{.Id}}}}' {STANDIN_IMAGE}").startswith("sha256:")
    assert aws.docker_info()["DockerRootDir"] == "/var/lib/docker"

    container_ids = {h.name: h.out("docker inspect -f '{{.Id}}' workbench") for h in two_hosts}
    for h in two_hosts:
        rc, out = bootstrap(h, tmp_path, *flags[h.name])
        assert rc == 0, out
        counts = recap_counts(out)[h.ssh_target]
        assert counts["changed"] == 0 and counts["failed"] == 0, out
        # Everything known from one fact-gathering command.
        assert counts["commands"] == 1, out
        assert h.out("docker inspect -f '{{.Id}}' workbench") == container_ids[h.name]


def test_one_fab_run_over_two_hosts_reports_each_and_fails_for_the_bad_one(
        two_hosts: list[TestHost], tmp_path: Path) -> None:
    good = two_hosts[1]
    bad = f"{good.user}@{good.ip}:2299"  # nothing listens there
    proc = fab("-H", f"{good.ssh_target},{bad}", "-i", str(good.key_path), "umask",
               "--wait-timeout", "2", home=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    counts = recap_counts(out)
    assert counts[good.ssh_target]["failed"] == 0
    assert counts[bad]["failed"] == 1
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{bad}: error: ")]
    assert len(error_lines) == 1, proc.stderr
    assert "cannot reach" in error_lines[0] and "Connection refused" in error_lines[0]
