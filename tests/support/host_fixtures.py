"""Fixtures for real test hosts: sshd + dockerd hosts (tests/support/testhosts.py),
hosts that boot systemd as PID 1 (tests/support/systemd_host.py), for what runs under
systemd (the idle autostop's timer and its poweroff), and hosts with a real image
registry inside (tests/support/registry.py), for the pull.

A pytest plugin, loaded by tests/conftest.py, so every suite starts hosts the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import registry as registries
from tests.support import systemd_host as systemd_hosts
from tests.support import testhosts
from tests.support.loop_disks import loop_device
from tests.support.real_parts import (
    require_registry,
    require_systemd_hosts,
    require_test_hosts,
)
from tests.support.registry import RegistryStore, ServedRegistry
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


# --- a real registry (tests/support/registry.py) -------------------------------------------

@pytest.fixture(scope="session")
def registry_store(real_parts: None, tmp_path_factory: pytest.TempPathFactory) -> RegistryStore:
    """The session's registry storage, holding the stand-in images (seeded once, ~10 s)."""
    require_registry()
    return registries.seed_store(tmp_path_factory.mktemp("registry"))


@dataclass
class RegistryHost:
    """A fresh host with no image of its own and the session's registry serving inside it
    on 127.0.0.1:15000: every image the container step runs there is pulled."""

    host: TestHost
    registry: ServedRegistry
    store: RegistryStore


def _registry_host(store: RegistryStore) -> RegistryHost:
    h = testhosts.start_host(image=False)
    try:
        return RegistryHost(h, registries.serve(store, h), store)
    except BaseException:
        testhosts.stop_host(h)
        raise


@pytest.fixture
def registry_host(registry_store: RegistryStore) -> Iterator[RegistryHost]:
    rh = _registry_host(registry_store)
    try:
        yield rh
    finally:
        testhosts.stop_host(rh.host)


@pytest.fixture
def two_registry_hosts(registry_store: RegistryStore) -> Iterator[list[RegistryHost]]:
    hosts: list[RegistryHost] = []
    try:
        for _ in range(2):
            hosts.append(_registry_host(registry_store))
        yield hosts
    finally:
        for rh in hosts:
            testhosts.stop_host(rh.host)


# --- disks for the data-volume step (tests/support/loop_disks.py) ----------------------------

@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    """A blank 64 MiB disk: a loop device over a sparse file."""
    with loop_device(tmp_path / "disk.img", 64) as device:
        yield device
