"""The data-volume step's hazards on real test hosts with loop devices: each one is
refused (or done right) with the data intact, checked by the bytes of the disks and
the checksum of a file on the old mount.

The test hosts have no udev, so the stable names a cloud's udev makes
(/dev/disk/by-id/...) are symlinks the test makes in the host's own /run, and the
step is pointed there (data_volume.DISK_BY_ID): the only stand-in here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootstrap.steps import data_volume
from tests.support.bootstrap_run import Run, run_steps
from tests.support.loop_disks import loop_device
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow
MOUNT = "/mnt/data"  # /mnt is each test host's own
VOLUME_ID = "vol-0123456789abcdef0"
BY_ID = "/run/wb-disk/by-id"  # in the host's own /run (a tmpfs per host)
GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"


@pytest.fixture
def loop_disks(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Blank 32 MiB disks on demand: loop devices over sparse files."""
    with contextlib.ExitStack() as stack:
        made = 0

        def make() -> str:
            nonlocal made
            made += 1
            return stack.enter_context(loop_device(tmp_path / f"disk{made - 1}.img", 32))

        yield make


def disk_hash(device: str) -> str:
    with open(device, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def step(host: TestHost, **options: object) -> Run:
    options.setdefault("wait_timeout", 2.0)
    options.setdefault("data_mount", MOUNT)
    return run_steps(host, ("data-volume",), **options)


@pytest.fixture
def by_id(monkeypatch: pytest.MonkeyPatch) -> Callable[[TestHost, str, str], None]:
    """Make a /dev/disk/by-id style link on a host, as the cloud's udev would."""
    monkeypatch.setattr(data_volume, "DISK_BY_ID", BY_ID)

    def link(host: TestHost, name: str, device: str) -> None:
        host.exec(f"mkdir -p {BY_ID} && ln -sf {device} {BY_ID}/{name}")

    return link


def test_a_mount_point_holding_another_device_is_never_formatted_over(
        bare_host: TestHost, loop_disks: Callable[[], str]) -> None:
    host = bare_host
    old, blank = loop_disks(), loop_disks()
    subprocess.run(["mkfs.ext4", "-q", old], check=True)
    host.exec(f"mkdir -p {MOUNT} && mount {old} {MOUNT} && "
              f"head -c 100000 /dev/urandom > {MOUNT}/results.bin")
    results = host.out(f"sha256sum {MOUNT}/results.bin")
    fstab, blank_bytes = host.read_file("/etc/fstab"), disk_hash(blank)

    run = step(host, data_device=blank)
    assert run.status("data-volume") == "failed"
    assert run.message("data-volume") == (
        f"{MOUNT} already holds {old} (ext4), not {blank}; nothing formatted, /etc/fstab "
        "unchanged (unmount it, or choose another --data-mount)")
    assert disk_hash(blank) == blank_bytes  # still blank, to the byte
    assert host.read_file("/etc/fstab") == fstab
    assert host.out(f"findmnt -n -o SOURCE --mountpoint {MOUNT}").split() == [old]
    assert host.out(f"sha256sum {MOUNT}/results.bin") == results


def test_only_the_volume_the_stack_declared_is_formatted(
        bare_host: TestHost, loop_disks: Callable[[], str],
        by_id: Callable[[TestHost, str, str], None]) -> None:
    host = bare_host
    unrelated, ours = loop_disks(), loop_disks()
    # Two blank EBS volumes on the guest: one the user attached for something else,
    # and the stack's, each under its NVMe serial (the volume ID without its dash).
    by_id(host, "nvme-Amazon_Elastic_Block_Store_vol0fedcba9876543210", unrelated)
    by_id(host, f"nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}", ours)
    unrelated_bytes = disk_hash(unrelated)

    undeclared = step(host)  # a plain `fab bootstrap`: discovery finds a blank disk
    assert undeclared.status("data-volume") == "skipped"
    assert "is not declared as the data volume (pass --data-volume-id" in (
        undeclared.message("data-volume"))

    declared = step(host, data_volume_id=VOLUME_ID)
    assert declared.status("data-volume") == "changed", declared.lines
    link = f"{BY_ID}/nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}"
    assert declared.message("data-volume").startswith(f"formatted blank {link} as ext4")
    assert host.out(f"findmnt -n -o SOURCE --mountpoint {MOUNT}").split() == [ours]
    assert disk_hash(unrelated) == unrelated_bytes
    assert step(host, data_volume_id=VOLUME_ID).status("data-volume") == "ok"


def test_a_declared_but_missing_volume_fails_and_keeps_the_workspace_off_the_root_disk(
        host: TestHost, by_id: Callable[[TestHost, str, str], None]) -> None:
    run = run_steps(host, ("data-volume", "container"), data_volume_id=VOLUME_ID,
                    data_mount=MOUNT, workspace=f"{MOUNT}/workspace", wait_timeout=2.0)
    assert run.status("data-volume") == "failed"
    assert run.message("data-volume") == (
        f"data volume {VOLUME_ID} not found at {BY_ID}/nvme-Amazon_Elastic_Block_Store_"
        f"{VOLUME_ID.replace('-', '')} after 2s; not putting the workspace on the root disk "
        "(is it attached? `pulumi up` attaches it)")
    assert run.status("container") == "skipped"
    assert host.exec(f"test -e {MOUNT}", check=False).returncode != 0
    assert host.out("docker ps -aq").strip() == ""


def test_an_existing_filesystem_gets_its_real_type_in_fstab(
        bare_host: TestHost, loop_disks: Callable[[], str]) -> None:
    host = bare_host
    disk = loop_disks()
    subprocess.run(["mkfs.ext3", "-q", disk], check=True)
    uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", disk], capture_output=True,
                          text=True, check=True).stdout.strip()
    host.exec(f"mkdir -p {MOUNT} && mount {disk} {MOUNT} && echo keep > {MOUNT}/notes")
    run = step(host, data_device=disk)
    assert run.status("data-volume") == "changed", run.lines
    assert run.message("data-volume").startswith(
        f"set /etc/fstab: {MOUNT} by UUID (ext3), nofail, before docker")
    line = (host.read_file("/etc/fstab") or b"").decode().splitlines()[-1]
    assert line == (f"UUID={uuid} {MOUNT} ext3 defaults,nofail,x-systemd.before=docker.service,"
                    "x-systemd.device-timeout=10s 0 2")
    assert host.out(f"cat {MOUNT}/notes") == "keep\n"
    assert step(host, data_device=disk).status("data-volume") == "ok"


def test_a_mount_path_with_a_space_is_escaped_and_ordered_before_docker(
        bare_host: TestHost, loop_disks: Callable[[], str], tmp_path: Path) -> None:
    host = bare_host
    disk = loop_disks()
    mount = "/mnt/my data"
    run = step(host, data_device=disk, data_mount=mount)
    assert run.status("data-volume") == "changed", run.lines
    uuid = host.out(f"blkid -s UUID -o value {disk}").strip()
    fstab = (host.read_file("/etc/fstab") or b"").decode()
    assert fstab.splitlines()[-1] == (
        f"UUID={uuid} /mnt/my\\040data ext4 defaults,nofail,x-systemd.before=docker.service,"
        "x-systemd.device-timeout=10s 0 2")
    assert host.out("findmnt -n -o SOURCE --mountpoint '/mnt/my data'").split() == [disk]
    assert host.out("stat -c %U '/mnt/my data/workspace'").strip() == host.user
    assert step(host, data_device=disk, data_mount=mount).status("data-volume") == "ok"

    # What systemd makes of that line at boot: its own fstab generator, on this fstab.
    if not os.access(GENERATOR, os.X_OK):
        pytest.skip(f"{GENERATOR} not here (package systemd)")
    (tmp_path / "fstab").write_text(fstab)
    out = tmp_path / "units"
    out.mkdir()
    subprocess.run([GENERATOR, str(out), str(out), str(out)], check=True, capture_output=True,
                   env={"SYSTEMD_FSTAB": str(tmp_path / "fstab"), "PATH": "/usr/bin:/bin"})
    unit = (out / "mnt-my\\x20data.mount").read_text()
    assert "Where=/mnt/my data\n" in unit
    assert "Before=docker.service\n" in unit
    assert f"What=/dev/disk/by-uuid/{uuid}\n" in unit
