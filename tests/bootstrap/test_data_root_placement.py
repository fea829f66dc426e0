"""Where Docker keeps its data on Azure: the OS disk unless it is short of space; on the
resource disk, a docker.service that waits for the mount and survives a wiped disk.

The resource disk is wiped at every deallocate (azure-compute-docs,
articles/virtual-machines/managed-disks-overview.md: "Data on the temporary disk
might be lost during a maintenance event, when you redeploy a VM, or when you stop
the VM"), and the idle autostop deallocates. Real test hosts (sshd + dockerd) and,
for the boot order, a host that boots systemd.
"""

from __future__ import annotations

import json

import pytest

from bootstrap.steps.data_root import DROP_IN, DROP_IN_TEXT
from tests.support.bootstrap_run import STANDIN_IMAGE, run_steps
from tests.support.systemd_host import SystemdHost, boot_again
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow
SHORT = 1_000_000  # GiB: more than any disk here has free, so the OS disk is "short"


def test_a_roomy_os_disk_keeps_docker_and_its_images(host: TestHost) -> None:
    run = run_steps(host, ("data-root",), cloud="azure", docker_min_free_gib=1)
    assert run.status("data-root") == "ok"
    message = run.message("data-root")
    assert message.startswith("Docker stays on the OS disk: /var/lib/docker has "), message
    assert message.endswith(
        " GiB free (at least 1 GiB); the resource disk /mnt is wiped at every deallocate, "
        "images kept there would be pulled again after each stop (--cloud azure; "
        "--docker-min-free-gib to change)")
    assert host.docker_info()["DockerRootDir"] == "/var/lib/docker"
    assert host.read_file(DROP_IN) is None
    assert host.read_file("/etc/docker/daemon.json") is None


def test_a_short_os_disk_moves_docker_and_orders_its_start(host: TestHost) -> None:
    host.mount_resource_disk()
    moved = run_steps(host, ("data-root",), cloud="azure", docker_min_free_gib=SHORT)
    assert moved.status("data-root") == "changed", moved.lines
    assert moved.message("data-root") == (
        "copied /var/lib/docker to /mnt/docker; set data-root in /etc/docker/daemon.json; "
        f"wrote {DROP_IN} (docker.service waits for /mnt); restarted dockerd; "
        "/var/lib/docker left in place, delete it to free the OS disk")
    assert host.docker_info()["DockerRootDir"] == "/mnt/docker"
    assert host.read_file(DROP_IN) == DROP_IN_TEXT
    assert host.out(f"stat -c '%a %U' {DROP_IN}").split() == ["644", "root"]
    # Once moved it stays, whatever the threshold says now.
    again = run_steps(host, ("data-root",), cloud="azure", docker_min_free_gib=1)
    assert (again.status("data-root"), again.report.commands_sent) == ("ok", 1)


def test_a_machine_moved_by_an_older_bootstrap_gets_only_the_drop_in(host: TestHost) -> None:
    host.mount_resource_disk()
    assert run_steps(host, ("nvidia-runtime", "data-root", "container"), cloud="azure",
                     docker_min_free_gib=SHORT).status("container") == "changed"
    host.remove(DROP_IN)  # what the bootstrap before this change left behind
    started = host.out("docker inspect -f '{{.State.StartedAt}}' workbench")
    fixed = run_steps(host, ("data-root",), cloud="azure")
    assert fixed.status("data-root") == "changed"
    assert fixed.message("data-root") == (
        f"dockerd root is /mnt/docker; wrote {DROP_IN}: docker.service waits for the /mnt "
        "mount and recreates /mnt/docker")
    assert host.read_file(DROP_IN) == DROP_IN_TEXT
    # dockerd was not restarted for it: the container runs on, untouched.
    assert host.out("docker inspect -f '{{.State.StartedAt}}' workbench") == started


def test_a_smaller_resource_disk_is_not_worth_the_move(host: TestHost) -> None:
    host.mount_resource_disk(1)
    run = run_steps(host, ("data-root",), cloud="azure", docker_min_free_gib=SHORT)
    assert run.status("data-root") == "ok"
    assert run.message("data-root").endswith(
        f" GiB free, under {SHORT} GiB, and the resource disk has less (1 GiB): Docker stays; "
        "large images may not fit (--cloud azure; --docker-min-free-gib to change)")
    assert host.docker_info()["DockerRootDir"] == "/var/lib/docker"


def test_short_but_no_separate_resource_disk_leaves_docker_and_says_so(host: TestHost) -> None:
    host.exec("umount /mnt")  # /mnt is now a directory on the root filesystem
    run = run_steps(host, ("data-root",), cloud="azure", docker_min_free_gib=SHORT)
    assert run.status("data-root") == "ok"
    assert run.message("data-root").startswith("WARNING: /var/lib/docker has ")
    assert run.message("data-root").endswith(
        f" GiB free, under {SHORT} GiB, but /mnt is not a separate disk here: Docker stays; "
        "large images may not fit (--cloud azure; --docker-min-free-gib to change)")
    assert host.docker_info()["DockerRootDir"] == "/var/lib/docker"


def test_after_a_deallocate_docker_starts_on_the_wiped_disk(systemd_host: SystemdHost) -> None:
    """systemd reads the drop-in: docker.service needs /mnt's mount and recreates its
    data-root on a blank disk, so dockerd starts there (empty), not on the OS disk."""
    h = systemd_host
    # A resource disk larger than what the OS disk has free (a tmpfs: used only as written).
    h.run_inside("mount -t tmpfs -o size=4000g,mode=755 wb-resource /mnt")
    with h.connection() as connection:
        run = run_steps(h, ("nvidia-runtime", "data-root", "container"),  # type: ignore[arg-type]
                        connection=connection, cloud="azure", docker_min_free_gib=SHORT,
                        image=STANDIN_IMAGE, autostop_minutes=0)
    assert run.status("container") == "changed", run.lines
    shown = h.out("systemctl show docker.service -p RequiresMountsFor -p After")
    assert "RequiresMountsFor=/mnt/docker" in shown
    assert "mnt.mount" in shown.split("After=")[1].split(), shown

    h.run_inside("systemctl poweroff", check=False)
    code, _ = h.wait_for_exit(120)
    assert code == 0
    boot_again(h, wipe_mnt=True)
    h.wait_for_docker()
    assert json.loads(h.out("docker info --format '{{json .DockerRootDir}}'")) == "/mnt/docker"
    assert h.out("stat -c '%a' /mnt/docker").strip() == "710"
    # The images went with the disk: the bootstrap brings the container back.
    assert h.run_inside("docker inspect workbench", check=False).returncode != 0
    assert h.failed_units() == []
