"""The benchmark's test hosts: tests/support/testhosts.py, in a directory of our own.

testhosts.py picks a host's index (and so its netns `wbhN` and subnet
10.201.N.0/24) under a lock in its own directory and looks at its own
directory's hosts and at every `wbh*` netns. Another directory (ours) has
another lock, so two starts in the two directories could pick the same index
in the moment between the pick and `ip netns add`. We therefore also hold
the default directory's lock while a host of ours starts, and skip the
indices of that directory's hosts: the other test runs on this box never
see a half-made host of ours, nor we theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tests.support import testhosts

BENCH_DIR = Path(os.environ.get("WORKBENCH_BENCH_HOSTS_DIR", "/tmp/workbench-bench-hosts"))
SHARED_DIR = Path("/tmp/workbench-testhosts")


@contextlib.contextmanager
def _shared_lock() -> Iterator[None]:
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    with open(SHARED_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def use_bench_dir() -> None:
    """Point testhosts at our directory (hosts, keys, stand-in images)."""
    testhosts.BASE_DIR = BENCH_DIR
    if getattr(testhosts._free_index, "_bench_wrapped", False):
        return

    def free_index() -> int:
        # testhosts' own rule (every wbh* netns, our directory's hosts), plus the
        # hosts of the shared directory, whose netns may not exist yet.
        prefix = testhosts.NETNS_PREFIX
        names = set(testhosts._netns_names())
        for d in (BENCH_DIR, SHARED_DIR):
            names.update(p.name for p in d.glob(f"{prefix}*"))
        used = {int(n[len(prefix):]) for n in names
                if n.startswith(prefix) and n[len(prefix):].isdigit()}
        for i in range(1, 250):
            if i not in used:
                return i
        raise RuntimeError("no free test host index (250 hosts in use?)")

    free_index._bench_wrapped = True  # type: ignore[attr-defined]
    testhosts._free_index = free_index


def start_host() -> testhosts.TestHost:
    use_bench_dir()
    with _shared_lock():
        return testhosts.start_host()


def start_hosts(count: int) -> list[testhosts.TestHost]:
    hosts: list[testhosts.TestHost] = []
    try:
        for _ in range(count):
            hosts.append(start_host())
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def stop_hosts(hosts: list[testhosts.TestHost]) -> None:
    for h in hosts:
        testhosts.stop_host(h)


def cleanup_stale() -> None:
    use_bench_dir()
    testhosts.cleanup_stale()


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def memory_kib(host: testhosts.TestHost) -> int:
    """Proportional set size (PSS) of the host's process tree: sshd, dockerd,
    containerd, the container and docker-proxy (shared pages split fairly)."""
    total = 0
    for pid in set(_descendants(host.init_pid)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total
