"""A full disk loses nothing: the checked writer (bootstrap/shell.py atomic_write) on
real test hosts whose /etc/docker, /home/wb or /etc is a small full tmpfs, mounted
over the directory inside the host's own mount namespace (its files copied in).
Every write fails with one line naming the file and the full mount; the old file
stays byte for byte, and no temp file or backup is left behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap import bashrc, daemon_json
from tests.support.bootstrap_run import run_steps
from tests.support.loop_disks import loop_device
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow
DAEMON_JSON = "/etc/docker/daemon.json"
OLD_DAEMON_JSON = b'{\n  "log-level": "warn"\n}\n'


def fill(host: TestHost, directory: str, *, free_pages: int = 0, slack_kib: int = 64) -> None:
    """Mount a tmpfs over `directory` holding what was there, then fill it up, leaving
    `free_pages` pages (4 KiB) free. Owner and mode of the directory are kept."""
    copy = "/run/wb-full" + directory.replace("/", "_")
    host.exec(f"""set -e
d={directory}
owner=$(stat -c %u "$d"); group=$(stat -c %g "$d"); mode=$(stat -c %a "$d")
used=$(du -sk "$d" | cut -f1)
rm -rf {copy}; cp -a "$d" {copy}
mount -t tmpfs -o size=$((used + {slack_kib}))k,mode=$mode,uid=$owner,gid=$group wbfull "$d"
cp -a {copy}/. "$d"/
dd if=/dev/zero of="$d/.filler" bs=4096 2>/dev/null || true
if [ {free_pages} -gt 0 ]; then truncate -s -{free_pages * 4096} "$d/.filler"; fi
""")


def listing(host: TestHost, directory: str) -> list[str]:
    return sorted(host.out(f"ls -A {directory}").split())


def test_full_etc_docker_keeps_daemon_json(bare_host: TestHost) -> None:
    host = bare_host
    host.write_file(DAEMON_JSON, OLD_DAEMON_JSON)
    fill(host, "/etc/docker")
    before = listing(host, "/etc/docker")
    new = daemon_json.render(daemon_json.with_nvidia_runtime(
        daemon_json.parse(OLD_DAEMON_JSON), "/usr/bin/nvidia-container-runtime"))
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "failed"
    assert run.message("nvidia-runtime") == (
        f"{DAEMON_JSON} not written: no space left on /etc/docker (tmpfs, 0 bytes free; "
        f"writing the temp file ({len(new)} bytes) failed); the old file is unchanged")
    assert host.read_file(DAEMON_JSON) == OLD_DAEMON_JSON
    assert listing(host, "/etc/docker") == before  # no temp file, no backup


def test_full_home_keeps_bashrc(bare_host: TestHost) -> None:
    """The reported bug: `bash -n` passes on the empty temp file a full disk left, so
    the old writer replaced ~/.bashrc with nothing and exited 0."""
    host = bare_host
    old = host.read_file("/home/wb/.bashrc")
    assert old, "the test host's user has a .bashrc"
    fill(host, "/home/wb")
    before = listing(host, "/home/wb")
    run = run_steps(host, ("umask",))
    assert run.status("umask") == "failed"
    assert run.message("umask") == (
        "/home/wb/.bashrc not written: no space left on /home/wb (tmpfs, 0 bytes free; "
        f"writing the temp file ({len(bashrc.with_umask_once(old))} bytes) failed); "
        "the old file is unchanged")
    assert host.read_file("/home/wb/.bashrc") == old
    assert listing(host, "/home/wb") == before


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[str]:
    with loop_device(tmp_path / "disk.img", 32, ext4_label="workbench-data") as device:
        yield device


def test_full_etc_keeps_fstab(bare_host: TestHost, ext4_disk: str) -> None:
    host = bare_host
    old = host.read_file("/etc/fstab")
    assert old is not None
    fill(host, "/etc")
    run = run_steps(host, ("data-volume",), data_device=ext4_disk, data_mount="/mnt/data")
    assert run.status("data-volume") == "failed", run.lines
    assert re.fullmatch(
        r"/etc/fstab not written: no space left on /etc \(tmpfs, 0 bytes free; writing the "
        r"temp file \(\d+ bytes\) failed\); the old file is unchanged",
        run.message("data-volume")), run.message("data-volume")
    assert host.read_file("/etc/fstab") == old
    assert host.out("findmnt -n --mountpoint /mnt/data || true").strip() == ""
    assert host.out("ls -A /etc | grep -c '^\\.fstab\\.wb-\\|fstab.bak' || true").strip() == "0"


def test_a_backup_that_cannot_be_written_means_no_write(bare_host: TestHost) -> None:
    """One page free: the new file fits, its backup does not. No backup, no write."""
    host = bare_host
    host.write_file(DAEMON_JSON, OLD_DAEMON_JSON)
    fill(host, "/etc/docker", free_pages=1)
    before = listing(host, "/etc/docker")
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "failed"
    assert re.fullmatch(
        rf"{DAEMON_JSON} not written: no space left on /etc/docker \(tmpfs, 0 bytes free; "
        rf"writing the backup {DAEMON_JSON}\.bak-\d{{8}}T\d{{6}}Z failed\); "
        "the old file is unchanged", run.message("nvidia-runtime")), run.message("nvidia-runtime")
    assert host.read_file(DAEMON_JSON) == OLD_DAEMON_JSON
    assert listing(host, "/etc/docker") == before  # the partial backup and the temp are gone
    # With room again, the same run goes through and keeps its backup.
    host.exec("rm /etc/docker/.filler")
    again = run_steps(host, ("nvidia-runtime",))
    assert again.status("nvidia-runtime") == "changed", again.lines
    assert "backup /etc/docker/daemon.json.bak-" in again.message("nvidia-runtime")
