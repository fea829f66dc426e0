from __future__ import annotations

import pytest

from components.mock_engine import ProgramRun, run_program
from tests.stacks.helpers import RunStack, stack_config


@pytest.fixture
def run_stack() -> RunStack:
    def run(name: str, **overrides: object) -> ProgramRun:
        return run_program(stack_config(name, **overrides), name)

    return run
