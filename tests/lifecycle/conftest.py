"""Real test hosts for the lifecycle steps: the sshd + dockerd hosts of
tests/support/testhosts.py, and hosts that boot systemd (tests/support/systemd_host.py)
for what runs under systemd (the idle autostop's timer and its poweroff)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import systemd_host as systemd_hosts
from tests.support import testhosts
from tests.support.real_parts import require_systemd_hosts, require_test_hosts
from tests.support.systemd_host import SystemdHost
from tests.support.testhosts import TestHost


@pytest.fixture(scope="session")
def real_parts() -> None:
    require_test_hosts()


@pytest.fixture
def host(real_parts: None) -> Iterator[TestHost]:
    h = testhosts.start_host(image=False)
    try:
        yield h
    finally:
        testhosts.stop_host(h)


@pytest.fixture(scope="session")
def systemd_real_parts() -> None:
    require_systemd_hosts()
    # Build (or unpack) the cached rootfs once, before the first test's clock starts.
    systemd_hosts.ensure_rootfs_tree()


@pytest.fixture
def systemd_host(systemd_real_parts: None) -> Iterator[SystemdHost]:
    """A freshly booted host with systemd as PID 1; killed and removed after the test."""
    h = systemd_hosts.start_systemd_host()
    try:
        yield h
    finally:
        systemd_hosts.stop_systemd_host(h)
