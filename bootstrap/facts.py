"""What a step needs to know about a host, and how all of it is read in one command.

A Fact is a remote snippet that prints one thing and the parser of that
output, as in pyinfra. Each step declares the facts it needs beside its own
logic (bootstrap/steps/*.py); this module holds the Fact type, the batching
and the few facts several steps share. The runner puts every wanted step's
facts into one remote command, so a bootstrap that changes nothing costs one
round trip, and hands each step only what it declared.

Snippets run in one sh process, in order: a fact may read shell variables a
fact it `needs` has set (LOGIN sets $user and $home), and every snippet may
read $wb_start (when the facts command started, for bounded waits).
"""



from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bootstrap.options import BootstrapOptions
from bootstrap.remote import SECTION_MARK, parse_sections
from bootstrap.shell import LINES, Sh, sh

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Fact(Generic[T]):
    """One thing about a host: `command(options)` prints it, `parse(text)` reads it."""

    name: str
    command: Callable[[BootstrapOptions], Sh]
    parse: Callable[[str], T]
    # Facts whose shell variables this command reads; gathered first.
    needs: tuple[Fact[Any], ...] = ()

    def __repr__(self) -> str:
        return f"Fact({self.name})"


def with_needs(facts: Iterable[Fact[Any]]) -> list[Fact[Any]]:
    """Every fact once, each after the facts it needs, otherwise in the given order."""
    ordered: list[Fact[Any]] = []

    def add(fact: Fact[Any]) -> None:
        if fact in ordered:
            return
        for need in fact.needs:
            add(need)
        ordered.append(fact)

    for fact in facts:
        add(fact)
    names = [f.name for f in ordered]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"two facts share a name: {', '.join(sorted(duplicates))}")
    return ordered


def facts_command(facts: Iterable[Fact[Any]], options: BootstrapOptions) -> Sh:
    """One sh script that prints every fact (and what they need) in "@@name" sections."""
    parts = [Sh("export LC_ALL=C"), Sh("wb_start=$(date +%s)")]
    assert SECTION_MARK == "@@"  # the printf format below spells it out
    for fact in with_needs(facts):
        parts.append(sh("printf '\\n@@%s\\n' {name}", name=fact.name))
        parts.append(fact.command(options).strip_newlines())
    # A fact reports a failed probe in its own output ("absent", "rc=1"): the
    # last probe's exit status says nothing about the command as a whole.
    parts.append(Sh("exit 0"))
    return LINES.join(parts) + LINES


class FactsIncomplete(ValueError):
    """The facts command's output lacks a fact: it was cut short; nothing is guessed."""


def parse_facts(output: str, facts: Iterable[Fact[Any]]) -> dict[str, Any]:
    """{fact name: parsed value} for every fact (and what they need) in `output`."""
    sections = parse_sections(output)
    wanted = with_needs(facts)
    missing = [fact.name for fact in wanted if fact.name not in sections]
    if missing:
        raise FactsIncomplete(f"the facts command printed nothing for {', '.join(missing)}")
    return {fact.name: fact.parse(sections[fact.name]) for fact in wanted}


# --- small parsers the facts share --------------------------------------------------------

def b64_or_none(value: str) -> bytes | None:
    """A file sent as base64, or None where the snippet printed "absent"."""
    value = value.strip()
    return None if value == "absent" else base64.b64decode(value)


def path_or_none(value: str) -> str | None:
    """`command -v X || echo absent`: the path, or None."""
    value = value.strip()
    return None if value in ("", "absent") else value


def json_object_or_none(value: str) -> dict[str, Any] | None:
    """A JSON object (docker info/inspect), or None for absent, down or unreadable."""
    value = value.strip()
    if value in ("", "absent", "down"):
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    # The Docker CLI still prints client info when the daemon is down; treat
    # "no server" as down.
    if data.get("ServerErrors") and not data.get("ServerVersion"):
        return None
    return data


# --- facts several steps share --------------------------------------------------------------

@dataclass(frozen=True)
class Login:
    """The user the bootstrap works for: the SSH login (not root, even under sudo)."""

    user: str
    home: str
    group: str


def _parse_login(text: str) -> Login:
    lines = [*text.splitlines(), "", "", ""]
    return Login(user=lines[0].strip(), home=lines[1].strip(), group=lines[2].strip())


LOGIN: Fact[Login] = Fact(
    "login",
    # Sets $user and $home for the facts that need them.
    lambda _: Sh('user=${SUDO_USER:-$(id -un)}\nhome=$(getent passwd "$user" | cut -d: -f6)\n'
                 'echo "$user"; echo "$home"; id -gn "$user"'),
    _parse_login,
)


@dataclass(frozen=True)
class DockerInfo:
    """`docker info` of a running dockerd."""

    raw: dict[str, Any]

    @property
    def runtimes(self) -> list[str]:
        return sorted(self.raw.get("Runtimes") or {})

    @property
    def root_dir(self) -> str | None:
        return self.raw.get("DockerRootDir")


def _parse_docker_info(text: str) -> DockerInfo | None:
    raw = json_object_or_none(text)
    return None if raw is None else DockerInfo(raw)


DOCKER_INFO: Fact[DockerInfo | None] = Fact(
    "docker_info",
    lambda _: Sh("if wb_info=$(timeout 30 docker info --format '{{json .}}' 2>/dev/null); "
                 'then echo "$wb_info"; else echo down; fi'),
    _parse_docker_info,
)

DAEMON_JSON: Fact[bytes | None] = Fact(
    "daemon_json",
    lambda _: Sh("if [ -e /etc/docker/daemon.json ]; then base64 -w0 /etc/docker/daemon.json; "
                 "echo; else echo absent; fi"),
    b64_or_none,
)


@dataclass(frozen=True)
class CloudHints:
    """What tells a cloud apart from inside the VM, for a run without --cloud."""

    sys_vendor: str
    waagent: bool  # /var/lib/waagent: the Azure Linux agent
    product_name: str = ""  # "Google Compute Engine" on GCP

    def guess(self) -> str | None:
        """azure (its agent is there), gcp (cloud-init's rule, tools/ds-identify
        dscheck_GCE: DMI product name "Google Compute Engine"), or None: not known."""
        if self.waagent:
            return "azure"
        if self.product_name == "Google Compute Engine":
            return "gcp"
        return None


def _parse_cloud_hints(text: str) -> CloudHints:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return CloudHints(sys_vendor=values.get("sys_vendor", "").strip(),
                      waagent=values.get("waagent", "").strip() == "yes",
                      product_name=values.get("product_name", "").strip())


CLOUD_HINTS: Fact[CloudHints] = Fact(
    "cloud_hints",
    lambda _: Sh('echo "sys_vendor=$(cat /sys/class/dmi/id/sys_vendor 2>/dev/null)"\n'
                 'echo "product_name=$(cat /sys/class/dmi/id/product_name 2>/dev/null)"\n'
                 'if [ -d /var/lib/waagent ]; then echo waagent=yes; else echo waagent=no; fi'),
    _parse_cloud_hints,
)
