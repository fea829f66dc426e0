"""Fixtures for real sshd + dockerd test hosts (tests/support/testhosts.py).

A pytest plugin, loaded by tests/conftest.py, so the bootstrap tests and the
stack-handoff tests start hosts the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import testhosts
from tests.support.real_parts import require_test_hosts
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


@pytest.fixture(scope="module")
def two_hosts(real_parts: None) -> Iterator[list[TestHost]]:
    hosts = testhosts.start_hosts(2)
    try:
        yield hosts
    finally:
        for h in hosts:
            testhosts.stop_host(h)
