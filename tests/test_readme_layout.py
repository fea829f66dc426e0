"""The README's layout section is the tree as git tracks it, not as someone remembers it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "stacktools", "bootstrap", "cluster")


def layout_paths() -> set[str]:
    """Every path the layout block names: a line's names come before two spaces, and
    an indented name lives in the directory named above it."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, re.S)
    assert block, "README.md has no ## Layout block"
    paths: set[str] = set()
    parent = ""
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip())[0].split()
        base = parent if indent else ""
        for name in names:
            paths.add(base + name)
        if not indent and names[-1].endswith("/"):
            parent = names[-1]
    return paths


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def test_every_named_path_is_tracked() -> None:
    files = tracked()
    for path in layout_paths():
        if path.endswith("/"):
            assert any(f.startswith(path) for f in files), f"README names {path}, git has none"
        else:
            assert path in files, f"README names {path}, git does not track it"


def test_every_top_level_entry_and_package_module_is_named() -> None:
    named = layout_paths()
    files = tracked()
    top = {f.split("/")[0] + ("/" if "/" in f else "") for f in files}
    assert top <= named, f"top-level entries missing from the README layout: {top - named}"
    modules = {f for f in files if f.endswith(".py") and f.split("/")[0] in PACKAGES
               and f.count("/") == 1}
    assert modules <= named, f"modules missing from the README layout: {modules - named}"
    subdirs = {"/".join(f.split("/")[:2]) + "/" for f in files
               if f.split("/")[0] in PACKAGES and f.count("/") >= 2}
    assert subdirs <= named, f"package subdirectories missing: {subdirs - named}"
