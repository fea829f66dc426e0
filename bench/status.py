"""scripts/status benchmark: N bootstrapped test hosts at an added one-way delay.

    scripts/bench-status                       # 1 and 8 hosts, 0 and 100 ms; writes docs/bench.md
    scripts/bench-status --hosts 8 --reps 1 --no-write

What is timed is stacktools.status.read_all, the code scripts/status runs after
it has read the saved outputs: one SSH connection and one command per host,
hosts in parallel (MAX_PARALLEL), and, for contrast, the same hosts one after
another. Each host first gets the bootstrap's container step (not timed), so
the status has a container to read. The delay comes from bench/latency.py (tc
netem where the kernel has it, else a delaying TCP proxy on loopback); the
host keys are pinned from the hosts' own keys, in a HOME of the bench's own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from bench import hosts as bench_hosts
from bench.latency import DelayProxies
from bench.markdown import replace_section
from bench.run import machine
from bootstrap.options import BootstrapOptions
from bootstrap.runner import bootstrap_host
from stacktools import status
from tests.support import testhosts
from tests.support.bootstrap_run import connect

REPO = Path(__file__).resolve().parents[1]
HEADING = "## scripts/status"


def prepare(host: testhosts.TestHost) -> None:
    """The bootstrap's runtime and container steps, straight (no delay, not timed)."""
    report = bootstrap_host(connect(host), BootstrapOptions(image=testhosts.STANDIN_IMAGE,
                                                            skip_check=True),
                            ("nvidia-runtime", "container"), emit=lambda _: None)
    failed = [r for r in report.steps if r.status.value == "failed"]
    if failed:
        raise RuntimeError(f"{host.name}: {failed[0].step}: {failed[0].message}")


def targets_for(hosts: list[testhosts.TestHost], proxies: DelayProxies | None
                ) -> list[status.Target | status.Reading]:
    found: list[status.Target | status.Reading] = []
    for i, h in enumerate(hosts):
        host, port = (h.ip, 22) if proxies is None else ("127.0.0.1", proxies.add((h.ip, 22)))
        fingerprint = testhosts._run(["ssh-keygen", "-lf", str(h.host_key_pub)]
                                     ).stdout.decode().split()[1]
        found.append(status.Target(stack=f"bench{i}", host=host, user=h.user, port=port,
                                   identity=str(h.key_path), hourly_usd=1.0,
                                   host_key_fingerprint=fingerprint))
    return found


def timed(targets: list[status.Target | status.Reading], parallel: int
          ) -> tuple[float, list[status.Reading]]:
    with mock.patch.object(status, "MAX_PARALLEL", parallel):
        started = time.monotonic()
        readings = status.read_all(targets, 10.0)
        wall = time.monotonic() - started
    bad = [r for r in readings if r.error or r.no_answer]
    if bad:
        raise RuntimeError(f"{bad[0].stack}: {bad[0].error or bad[0].no_answer}")
    return wall, readings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-status", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--delays", default="0,100", help="added one-way delays, ms")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "docs/bench.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    why = testhosts.missing_real_parts()
    if why:
        print(f"bench-status: {why}", file=sys.stderr)
        return 2
    # known_hosts and ssh_config of our own: the box's ~/.ssh is neither read nor written.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="wb-bench-status-")
    bench_hosts.cleanup_stale()
    hosts = bench_hosts.start_hosts(args.hosts)
    rows: list[str] = []
    try:
        for h in hosts:
            prepare(h)
        for delay in (int(d) for d in args.delays.split(",")):
            for count in sorted({1, args.hosts}):
                for parallel, how in ((status.MAX_PARALLEL, "parallel"), (1, "one by one")):
                    if count == 1 and parallel == 1:
                        continue
                    walls, per_host, commands = [], [], 0
                    for _ in range(args.reps):
                        proxies = DelayProxies(delay / 1000) if delay else None
                        try:
                            wall, readings = timed(targets_for(hosts[:count], proxies),
                                                   parallel)
                        finally:
                            if proxies is not None:
                                proxies.close()
                        walls.append(wall)
                        per_host += [r.seconds for r in readings]
                        commands = sum(r.commands_sent for r in readings)
                    row = (f"| {count} | +{delay} ms | {how} | {statistics.median(walls):.2f} s "
                           f"| {min(per_host):.2f}-{max(per_host):.2f} s | "
                           f"{commands / count:.0f} |")
                    print(row, flush=True)
                    rows.append(row)
    finally:
        bench_hosts.stop_hosts(hosts)
    info = machine()
    text = "\n".join([
        HEADING, "",
        "Generated by `scripts/bench-status` (rerun it; do not edit by hand). Each workstation "
        "is read with one SSH connection and one command (its status facts); the wall time "
        "is stacktools.status.read_all for all of them, median of "
        f"{args.reps} runs, fresh connections every run. Added latency: delaying TCP proxy on "
        "loopback (bench/latency.py), which also delays the TCP handshake by one round trip.",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores; {info['date']}",
        f"- code measured: {info['code']}",
        "",
        "| hosts | one-way delay | how | wall (median) | per host | SSH commands per host |",
        "|---|---|---|---|---|---|", *rows, ""])
    print(text)
    if not args.no_write:
        out = Path(args.out)
        out.write_text(replace_section(out.read_text() if out.exists() else "", HEADING, text))
        print(f"wrote {HEADING!r} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
