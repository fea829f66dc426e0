"""Real sshd + dockerd test hosts (tests/support/testhosts.py) for the lifecycle steps."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import testhosts
from tests.support.testhosts import TestHost


@pytest.fixture(scope="session")
def real_parts() -> None:
    why = testhosts.missing_real_parts()
    if why:
        if os.environ.get("WORKBENCH_REQUIRE_REAL_PARTS") == "1":
            pytest.fail(f"WORKBENCH_REQUIRE_REAL_PARTS=1 but {why}")
        pytest.skip(why)
    testhosts.cleanup_stale()


@pytest.fixture
def host(real_parts: None) -> Iterator[TestHost]:
    h = testhosts.start_host(image=False)
    try:
        yield h
    finally:
        testhosts.stop_host(h)
