"""Disks for the data-volume tests: loop devices over sparse files, detached afterwards."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def loop_device(backing: Path, size_mib: int, *, ext4_label: str | None = None
                ) -> Iterator[str]:
    """A loop device over a new sparse file of `size_mib`: blank, or ext4 with this label."""
    with backing.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    if ext4_label is not None:
        subprocess.run(["mkfs.ext4", "-q", "-L", ext4_label, str(backing)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
