"""One rule for every suite that needs real parts (sshd, dockerd, Slurm, root):
skip with the reason on a machine that lacks them, fail where CI demands them."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "WORKBENCH_REQUIRE_REAL_PARTS"


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_test_hosts() -> None:
    """The sshd + dockerd test hosts of tests/support/testhosts.py can start here."""
    from tests.support import testhosts

    why = testhosts.missing_real_parts()
    if why:
        skip_or_fail(why)
    testhosts.cleanup_stale()


def require_systemd_hosts() -> None:
    """The systemd-booted hosts of tests/support/systemd_host.py can start here."""
    from tests.support import systemd_host

    why = systemd_host.missing_real_parts()
    if why:
        skip_or_fail(why)
    systemd_host.cleanup_stale()


def require_registry() -> None:
    """Debian's docker-registry (and tc, to slow its link) for the pull tests."""
    from tests.support import registry

    why = registry.missing_real_parts()
    if why:
        skip_or_fail(why)
