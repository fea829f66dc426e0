"""~/.bashrc: exactly one `umask 0002` line. Pure, bytes in and out."""

from __future__ import annotations

import re

UMASK_LINE = "umask 0002"
_COMMENT = "# gpu-workbench: new files are group-writable, for a shared workspace"
_UMASK_RE = re.compile(r"^[ \t]*umask[ \t]+0?002[ \t]*$")


def with_umask_once(raw: bytes | None) -> bytes:
    """raw with exactly one umask 0002 line: duplicates dropped, one appended if none.

    latin-1 maps every byte to one character, so a .bashrc that is not UTF-8
    comes back byte for byte.
    """
    text = (raw or b"").decode("latin-1")
    out: list[str] = []
    seen = False
    for line in text.splitlines(keepends=True):
        if _UMASK_RE.match(line.rstrip("\r\n")):
            if seen:
                continue
            seen = True
        out.append(line)
    result = "".join(out)
    if not seen:
        if result and not result.endswith("\n"):
            result += "\n"
        result += f"{_COMMENT}\n{UMASK_LINE}\n"
    return result.encode("latin-1")


def umask_line_count(raw: bytes | None) -> int:
    text = (raw or b"").decode("latin-1")
    return sum(1 for line in text.splitlines() if _UMASK_RE.match(line))
