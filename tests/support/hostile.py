"""Hostile strings for the tests that send them through every option reaching a shell.

Each payload, were any shell to read it, would create a marker file under
/tmp (the test hosts share this box's /tmp), so "nothing ran" is one glob.
The run id keeps a concurrent run's markers apart.
"""

from __future__ import annotations

import uuid
from pathlib import Path

RUN = uuid.uuid4().hex[:8]


def marker(n: int) -> str:
    return f"/tmp/pwned-{RUN}-{n}"


def markers_found() -> list[str]:
    return sorted(str(p) for p in Path("/tmp").glob(f"pwned-{RUN}-*"))


def hostile(n: int, space: str = " ") -> list[tuple[str, str]]:
    """(what, value) pairs whose shell reading would create marker(n) .. marker(n + 4).

    `space` separates a command from its argument: "${IFS}" makes payloads
    without white space, for options that refuse it.
    """
    return [
        ("command substitution", f"x$(touch{space}{marker(n)})"),
        ("backticks", f"x`touch{space}{marker(n + 1)}`"),
        ("single quote", "it's"),
        ("double quotes", 'say "hi"'),
        ("spaces", "two  spaces"),
        ("newline", f"a\ntouch{space}{marker(n + 2)}"),
        ("leading dash", "-rf"),
        ("semicolon", f"x;touch{space}{marker(n + 3)}"),
        ("pipe", f"x|touch{space}{marker(n + 4)}"),
        ("and", f"x&&touch{space}{marker(n + 5)}"),
    ]


def one_line(n: int, space: str = " ") -> str:
    """Every hostile piece but the newline, in one string."""
    return " ".join(value for _, value in hostile(n, space) if "\n" not in value)
