"""Run the real Pulumi program under the mock engine for a shipped stack, with overrides."""

from __future__ import annotations

import json
from collections.abc import Callable

from stacktools.mock_engine import PROJECT_DIR, ProgramRun, read_stack_config

RunStack = Callable[..., ProgramRun]


def stack_config(name: str, **overrides: object) -> dict[str, str]:
    """A shipped stack's config with `gpu-workbench:` keys replaced (None removes one)."""
    config = read_stack_config(PROJECT_DIR / "stacks" / f"Pulumi.{name}.yaml")
    for key, value in overrides.items():
        full = f"gpu-workbench:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value if isinstance(value, str) else json.dumps(value)
    return config
