"""Fixtures for real test hosts: sshd + dockerd hosts (tests/support/testhosts.py) and
hosts that boot systemd as PID 1 (tests/support/systemd_host.py), for what runs under
systemd (the idle autostop's timer and its poweroff).

A pytest plugin, loaded by tests/conftest.py, so every suite starts hosts the same way.
"""

from __future__ import annotations

import contextlib
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
    """A fresh host per test (about a second to start), so no test sees another's changes."""
    h = testhosts.start_host()
    try:
        yield h
    finally:
        testhosts.stop_host(h)


@pytest.fixture
def bare_host(real_parts: None) -> Iterator[TestHost]:
    """A fresh host without the stand-in image: for steps that start no container."""
    h = testhosts.start_host(image=False)
    try:
        yield h
    finally:
        testhosts.stop_host(h)


@contextlib.contextmanager
def started_hosts(count: int) -> Iterator[list[TestHost]]:
    """`count` fresh hosts, stopped afterwards."""
    hosts = testhosts.start_hosts(count)
    try:
        yield hosts
    finally:
        for h in hosts:
            testhosts.stop_host(h)


@pytest.fixture(scope="module")
def two_hosts(real_parts: None) -> Iterator[list[TestHost]]:
    with started_hosts(2) as hosts:
        yield hosts


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
