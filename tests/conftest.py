"""Fixtures every suite may use: stacks under the mock engine, real test hosts."""

from __future__ import annotations

import pytest

from stacktools.mock_engine import ProgramRun, run_program
from tests.support.stacks import RunStack, stack_config

# Real sshd + dockerd hosts: host, bare_host, two_hosts (and real_parts).
pytest_plugins = ["tests.support.host_fixtures"]


@pytest.fixture
def run_stack() -> RunStack:
    def run(name: str, **overrides: object) -> ProgramRun:
        return run_program(stack_config(name, **overrides), name)

    return run
