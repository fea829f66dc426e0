"""The README's `scripts/plan aws` transcript is what scripts/plan prints today."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def transcript(command: str) -> list[str]:
    """The lines under `$ command` in the README's first code block that shows it."""
    text = (REPO / "README.md").read_text()
    block = re.search(rf"```\n\$ {re.escape(command)}\n(.*?)```", text, re.S)
    assert block, f"README.md shows no `$ {command}` block"
    return block.group(1).splitlines()


def test_the_readme_plan_is_real_output() -> None:
    shown = [line for line in transcript("scripts/plan aws") if line.strip() != "..."]
    real = subprocess.run([str(REPO / "scripts" / "plan"), "aws"], capture_output=True,
                          text=True, check=True, cwd=REPO).stdout.splitlines()
    # Every shown line is a real line, in the same order ("..." marks lines left out).
    at = 0
    for line in shown:
        assert line in real[at:], f"README shows {line!r}; scripts/plan aws prints no such line"
        at = real.index(line, at) + 1
