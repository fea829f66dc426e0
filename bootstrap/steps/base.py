"""What every step gets (HostContext) and gives back (StepOutcome or StepFailed)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from bootstrap.facts import Facts
from bootstrap.options import BootstrapOptions
from bootstrap.recap import Status
from bootstrap.remote import Remote


class StepFailed(Exception):
    """The step could not reach its goal; the message says why and what to do."""


@dataclass(frozen=True)
class StepOutcome:
    status: Status
    message: str = ""


def ok(message: str = "") -> StepOutcome:
    return StepOutcome(Status.OK, message)


def changed(message: str = "") -> StepOutcome:
    return StepOutcome(Status.CHANGED, message)


def skipped(message: str = "") -> StepOutcome:
    return StepOutcome(Status.SKIPPED, message)


@dataclass
class HostContext:
    """One host's run. Steps read facts from here and record what they changed,
    so a later step never pays a round trip to learn what an earlier one did."""

    remote: Remote
    options: BootstrapOptions
    emit: Callable[[str], None]
    facts_: Facts | None = None
    daemon_json: bytes | None = None  # current bytes, updated after each write
    docker_running: bool = False
    notes: list[str] = field(default_factory=list)
    # (what, URL, host port) of every service started, for the URLs and the
    # tunnel command printed after the recap (see service_notes).
    services: list[tuple[str, str, int]] = field(default_factory=list)
    tunnel_extra: set[int] = field(default_factory=set)  # forwarded, no URL of its own

    def add_service(self, what: str, url: str, port: int) -> None:
        self.services.append((what, url, port))

    def service_notes(self) -> list[str]:
        """The URLs, then one `ssh -L ...` that forwards every port they use."""
        if not self.services:
            return []
        c = self.remote.connection
        key = c.connect_kwargs.get("key_filename")
        if isinstance(key, list | tuple):
            key = key[0] if key else None
        key_opt = f"-i {shlex.quote(str(key))} " if key else ""
        port_opt = f"-p {c.port} " if c.port != 22 else ""
        width = max(len(what) for what, _, _ in self.services) + 2
        lines = [f"{what + ':':<{width}}{url}" for what, url, _ in self.services]
        # The extra forwards first, then the services' ports in the order they serve.
        ports = list(dict.fromkeys([*sorted(self.tunnel_extra),
                                    *(port for _, _, port in self.services)]))
        forwards = " ".join(f"-L {p}:localhost:{p}" for p in ports)
        lines.append(f"{'tunnel:':<{width}}ssh {key_opt}{port_opt}{forwards} {c.user}@{c.host}")
        return lines

    @property
    def facts(self) -> Facts:
        if self.facts_ is None:
            raise RuntimeError("facts not gathered: the wait step runs first")
        return self.facts_

    def would(self, what: str) -> StepOutcome:
        """The outcome of a change in --check mode: nothing done, say what would be."""
        return changed(f"would {what}")
