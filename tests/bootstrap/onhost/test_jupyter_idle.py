"""The idle check's Jupyter rules against a REAL jupyter_server (2.21.1, ipykernel 7.4.0),
polled faster than the window, as the timer would with a short window:

- an untouched server is idle, and our polls never make it active (no_track_activity);
- an idle kernel (started, nothing running, no connection) is idle once its last
  activity is older than the window;
- a running cell (`time.sleep`) is busy, with no browser attached;
- a browser connected to a kernel (its websocket open) is busy.

Only the Jupyter signal is read here (no GPU, no TCP table), so each rule is seen alone.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrap.onhost import workbench_idle_check as idle
from tests.support import jupyter_server as js
from tests.support.real_parts import skip_or_fail

pytestmark = pytest.mark.slow

WINDOW_S = 6.0
POLL_S = 1.0  # six polls per window
SETTINGS = idle.Settings(cloud="aws", minutes=WINDOW_S / 60, interval_s=POLL_S, wall=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[js.JupyterServer]:
    try:
        js.ensure_venv()
    except (RuntimeError, OSError) as exc:
        skip_or_fail(f"no jupyter_server venv: {exc}")
    with js.jupyter_server(tmp_path) as s:
        yield s


class Poller:
    """What the timer does, faster: read Jupyter, decide, keep the state."""

    def __init__(self, server: js.JupyterServer) -> None:
        self.server = server
        self.state: dict[str, Any] = {}
        self.log: list[tuple[float, idle.Decision]] = []

    def poll(self) -> idle.Decision:
        now = dt.datetime.now(dt.timezone.utc)
        look = idle.Look(gpu=idle.GpuLook("absent", "not read here"), connections=[],
                         jupyter=[idle.read_jupyter(self.server.url, self.server.token)])
        assert look.jupyter[0].state == "ok", look.jupyter[0].error
        decision = idle.decide(look, SETTINGS, now, self.state)
        self.state = dict(decision.state)
        if decision.kind == "warn":
            assert decision.quiet_since is not None
            self.state["warned_for"] = idle.iso(decision.quiet_since)
        self.log.append((time.monotonic(), decision))
        return decision

    def until_stop(self, timeout: float) -> idle.Decision:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            decision = self.poll()
            if decision.kind == "stop":
                return decision
            time.sleep(POLL_S)
        raise AssertionError("no stop: " + " | ".join(d.summary for _, d in self.log[-5:]))

    def kinds(self) -> list[str]:
        return [d.kind for _, d in self.log]


def test_an_untouched_server_is_idle_and_our_polls_are_not_activity(
        server: js.JupyterServer) -> None:
    before = server.api("GET", "/api/status", track=False)
    assert before["last_activity"] == before["started"]
    poller = Poller(server)
    first = poller.poll()
    t0 = time.monotonic()
    assert first.kind in ("idle", "warn") and first.quiet_since is not None
    stop = poller.until_stop(timeout=WINDOW_S + 5 * POLL_S)
    # The window ran from the first poll, unmoved by the dozen polls since.
    assert stop.quiet_since == first.quiet_since
    assert poller.log[-1][0] - t0 >= WINDOW_S - idle.TOLERANCE_S
    assert "busy" not in poller.kinds()
    after = server.api("GET", "/api/status", track=False)
    assert after["last_activity"] == before["started"]
    # The bug this replaces: a plain GET /api/kernels is activity, and the next poll sees it.
    server.api("GET", "/api/kernels")
    moved = server.api("GET", "/api/status", track=False)
    assert moved["last_activity"] > before["started"]


def test_an_idle_kernel_is_idle_once_its_last_activity_is_a_window_old(
        server: js.JupyterServer) -> None:
    kernel_id = server.start_kernel()
    poller = Poller(server)
    first = poller.poll()
    assert first.kind != "busy", first.busy
    kernel = idle.read_jupyter(server.url, server.token).kernels[0]
    assert (kernel.id, kernel.execution_state, kernel.connections) == (kernel_id, "idle", 0)
    assert kernel.last_activity is not None
    stop = poller.until_stop(timeout=WINDOW_S + 5 * POLL_S)
    assert stop.quiet_since is not None and stop.quiet_since >= kernel.last_activity
    assert stop.stop_at is not None
    assert (stop.stop_at - kernel.last_activity).total_seconds() >= WINDOW_S
    # Polling did not touch the kernel either.
    again = idle.read_jupyter(server.url, server.token).kernels[0]
    assert again.last_activity == kernel.last_activity


def test_a_running_cell_is_busy_without_any_browser(server: js.JupyterServer) -> None:
    kernel_id = server.start_kernel()
    cell_s = 2 * WINDOW_S
    started = time.monotonic()
    client = server.client(kernel_id, "run", f"import time; time.sleep({cell_s})")
    client.wait(timeout=30)  # hung up: the cell runs on, as after closing a browser tab
    poller = Poller(server)
    while time.monotonic() - started < cell_s - 1.5:
        decision = poller.poll()
        assert decision.kind == "busy", decision.summary
        assert any("is busy" in r for r in decision.busy)
        assert not any("connection" in r for r in decision.busy)
        time.sleep(POLL_S)
    stop = poller.until_stop(timeout=cell_s + WINDOW_S + 10)
    kernel = idle.read_jupyter(server.url, server.token).kernels[0]
    assert kernel.execution_state == "idle" and kernel.last_activity is not None
    # The window starts when the cell ended (the kernel's last activity), not earlier.
    assert stop.quiet_since is not None and stop.quiet_since >= kernel.last_activity
    assert time.monotonic() - started >= cell_s + WINDOW_S - idle.TOLERANCE_S


def test_a_connected_browser_is_busy(server: js.JupyterServer) -> None:
    kernel_id = server.start_kernel()
    browser = server.client(kernel_id, "hold")
    try:
        poller = Poller(server)
        for _ in range(int(WINDOW_S / POLL_S) + 3):  # longer than the window
            decision = poller.poll()
            assert decision.kind == "busy", decision.summary
            assert any("has 1 connection(s) (a browser or client)" in r for r in decision.busy)
            time.sleep(POLL_S)
    finally:
        browser.terminate()
        browser.wait(timeout=10)
    closed = time.monotonic()
    poller.until_stop(timeout=WINDOW_S + 10)
    assert time.monotonic() - closed >= WINDOW_S - idle.TOLERANCE_S
