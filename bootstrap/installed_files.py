"""Files a step installs on the host as they are (programs, configs, systemd units): the
facts snippet that reads their hash and mode, and the plan that writes only those that
differ, each through the checked atomic writer (bootstrap/shell.py).

A step keeps its own list of files and its own report; what they share is here, so two
steps that install programs on the VM compare and write them the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bootstrap.shell import Sh, atomic_write, sh, words


@dataclass(frozen=True)
class InstalledFile:
    path: str
    content: bytes
    mode: str
    validate: Sh | None = None  # run on the temp file as "$1" before it replaces the old


def files_snippet(paths: Iterable[str]) -> Sh:
    """Prints "PATH SHA256 MODE" per file, "PATH absent" where there is none."""
    return sh('for p in {paths}; do\n'
              '  if [ -f "$p" ]; then echo "$p $(sha256sum "$p" | cut -c1-64) '
              '$(stat -c %a "$p")"\n'
              '  else echo "$p absent"; fi\n'
              'done\n', paths=words(paths))


def parse_file_line(parts: list[str]) -> tuple[str, tuple[str, str] | None] | None:
    """One line of files_snippet, split: (path, (sha256, mode) or None), or None when
    the line is not one of its lines."""
    if len(parts) == 3 and len(parts[1]) == 64:
        return parts[0], (parts[1], parts[2])
    if len(parts) == 2 and parts[1] == "absent":
        return parts[0], None
    return None


def unit_snippet(wants_link: str, unit: str, properties: Sh) -> Sh:
    """Prints "link TARGET" (or "link absent") for the unit's enable link, "systemd yes"
    or "systemd no", and with systemd running "unit KEY=VALUE" per property asked
    (`properties`: systemctl show's -p options)."""
    return sh('echo "link $(readlink {link} 2>/dev/null || echo absent)"\n'
              'if [ -d /run/systemd/system ]; then echo "systemd yes"\n'
              "  systemctl show {unit} {properties} 2>/dev/null | sed 's/^/unit /'\n"
              'else echo "systemd no"; fi\n', link=wants_link, unit=unit,
              properties=properties)


@dataclass(frozen=True)
class InstalledFacts:
    """What files_snippet and unit_snippet printed."""

    files: dict[str, tuple[str, str] | None]  # path -> (sha256, mode) or None
    link: str | None  # the enable link's target; None: not enabled
    systemd: bool  # systemd runs now
    unit: dict[str, str]  # systemctl show's KEY=VALUE


def parse_installed(section: str) -> tuple[InstalledFacts, list[str]]:
    """The lines of files_snippet and unit_snippet; the step's own lines, as they came,
    apart."""
    files: dict[str, tuple[str, str] | None] = {}
    link, systemd = None, False
    unit: dict[str, str] = {}
    rest: list[str] = []
    for line in section.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "link" and len(parts) == 2:
            link = None if parts[1] == "absent" else parts[1]
        elif parts[0] == "systemd" and len(parts) == 2:
            systemd = parts[1] == "yes"
        elif parts[0] == "unit" and len(parts) == 2 and "=" in parts[1]:
            key, value = parts[1].split("=", 1)
            unit[key] = value
        elif parts[0].startswith("/") and (found := parse_file_line(parts)) is not None:
            files[found[0]] = found[1]
        else:
            rest.append(line)
    return InstalledFacts(files, link, systemd, unit), rest


@dataclass
class FilePlan:
    """What to write: (done, to do) lines for the report and --check, the script parts,
    and the paths they touch."""

    actions: list[tuple[str, str]] = field(default_factory=list)
    script: list[Sh] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


def plan_files(wanted: Iterable[InstalledFile],
               have: Mapping[str, tuple[str, str] | None]) -> FilePlan:
    """Write what is missing or differs (root-owned), chmod what only has another mode."""
    plan = FilePlan()
    for want in wanted:
        current = have.get(want.path)
        digest = hashlib.sha256(want.content).hexdigest()
        if current is not None and current[0] == digest and current[1] == want.mode:
            continue
        plan.touched.add(want.path)
        if current is not None and current[0] == digest:
            plan.actions.append((f"chmod {want.mode} {want.path}",
                                 f"chmod {want.mode} {want.path}"))
            plan.script.append(sh("chmod {mode} {path}", mode=want.mode, path=want.path))
            continue
        plan.actions.append((("wrote " if current is None else "updated ") + want.path,
                             ("write " if current is None else "update ") + want.path))
        plan.script.append(atomic_write(want.path, want.content,
                                        expected_sha256=None if current is None else current[0],
                                        new_mode=want.mode, new_owner="root:root",
                                        validate=want.validate) + Sh(" || exit $?"))
        if current is not None and current[1] != want.mode:
            plan.script.append(sh("chmod {mode} {path}", mode=want.mode, path=want.path))
    return plan
