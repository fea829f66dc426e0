"""Fixtures for the bootstrap tests: real sshd + dockerd hosts.

Helpers to run and read a bootstrap are in tests/support/bootstrap_run.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bootstrap` and `tests.support` import from the repo root
    sys.path.insert(0, str(REPO))

from tests.support import testhosts  # noqa: E402
from tests.support.real_parts import require_test_hosts  # noqa: E402
from tests.support.testhosts import TestHost  # noqa: E402


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


@pytest.fixture(scope="module")
def two_hosts(real_parts: None) -> Iterator[list[TestHost]]:
    hosts = testhosts.start_hosts(2)
    try:
        yield hosts
    finally:
        for h in hosts:
            testhosts.stop_host(h)
