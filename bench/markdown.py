"""Pages several benchmarks write: each owns one `## ` section of a Markdown file."""

from __future__ import annotations


def replace_section(text: str, heading: str, section: str) -> str:
    """`text` with the section under `heading` (up to the next `## `) replaced by
    `section`, or with `section` appended when there is none."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    body = section if section.endswith("\n") else section + "\n"
    if start is None:
        return text + ("\n" if text and not text.endswith("\n\n") else "") + body
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + tail if tail else "")


def section_of(text: str, heading: str) -> str | None:
    """The section under `heading` (up to the next `## `), or None."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return "".join(lines[start:end]).rstrip("\n") + "\n"
