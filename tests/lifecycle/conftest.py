"""Real sshd + dockerd test hosts (tests/support/testhosts.py) for the lifecycle steps."""

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
    h = testhosts.start_host(image=False)
    try:
        yield h
    finally:
        testhosts.stop_host(h)
