"""Smoke run of the bootstrap benchmark (scripts/bench): one host, no added delay,
Fabric and Ansible once each, cold then second run, end state checked after each.

Correctness only: the benchmark's numbers are for docs/bench.md, never asserted
here (a slow CI box must not fail a test).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import hosts as bench_hosts
from bench import run as bench
from tests.support import testhosts
from tests.support.real_parts import skip_or_fail

pytestmark = pytest.mark.slow


@pytest.fixture
def bench_host() -> Iterator[testhosts.TestHost]:
    why = testhosts.missing_real_parts()
    if why:
        skip_or_fail(why)
    bench_hosts.cleanup_stale()
    host = bench_hosts.start_host()
    try:
        yield host
    finally:
        bench_hosts.stop_hosts([host])


@pytest.mark.parametrize("tool", ["fabric", "ansible"])
def test_cold_then_second_run_reach_the_same_end_state(
        tool: str, bench_host: testhosts.TestHost, tmp_path: Path) -> None:
    with bench.link_to([bench_host], 0, use_netem=False) as link:
        runner = ((lambda: bench.run_fabric([bench_host], link, str(tmp_path), pool=8))
                  if tool == "fabric" else
                  (lambda: bench.run_ansible([bench_host], link, str(tmp_path))))
        cold = runner()
        assert bench.end_state_problems(bench_host) == []
        assert cold.changed > 0
        second = runner()
        assert bench.end_state_problems(bench_host) == []
        assert second.changed == 0
    if tool == "fabric":
        assert second.commands == 1  # facts in one command; nothing else to do


def test_parallel_fab_one_host_down_the_other_bootstraps(
        bench_host: testhosts.TestHost, tmp_path: Path) -> None:
    """fab -H good,dead: the dead host fails alone, the recap lists both, exit 2."""
    dead = "wb@127.0.0.1:1"  # nothing listens on port 1 of loopback
    proc = subprocess.run(
        [str(bench.BIN / "fab"), "-H", f"{dead},{bench_host.ssh_target}", "-i",
         str(bench_host.key_path), *bench.FAB_FLAGS, "--wait-timeout", "2"],
        capture_output=True, text=True, cwd=bench.REPO,
        env=bench._env(str(tmp_path)) | {"FABRIC_WORKBENCH_PARALLEL": "4"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    recap = proc.stdout[proc.stdout.index("PLAY RECAP"):]
    lines = [ln for ln in recap.splitlines() if " ssh commands" in ln]
    # Both hosts, once each, in -H order.
    assert [ln.split()[0] for ln in lines] == [dead, bench_host.ssh_target], recap
    assert "failed=1" in lines[0] and "failed=0" in lines[1], recap
    assert f"failed on 1 host(s): {dead}" in proc.stderr
    assert bench.end_state_problems(bench_host) == []


def test_line_atomic_stream_keeps_lines_whole() -> None:
    import functools
    import io
    import threading

    from bootstrap.parallel import LineAtomicStream, run_bounded

    target = io.StringIO()
    stream = LineAtomicStream(target, threading.Lock())

    def job(n: int) -> None:
        for i in range(200):
            print(f"host{n}", "line", i, file=stream)  # print writes in pieces

    run_bounded([functools.partial(job, n) for n in range(8)], 4)
    lines = target.getvalue().splitlines()
    assert len(lines) == 8 * 200
    assert all(ln.startswith("host") and ln.split()[1] == "line" for ln in lines)
    assert sys.stdout is not stream
