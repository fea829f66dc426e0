"""What a step is (Step), gets (HostContext) and gives back (StepOutcome or StepFailed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bootstrap.facts import Fact, with_needs
from bootstrap.options import BootstrapOptions
from bootstrap.recap import Status
from bootstrap.remote import Remote
from bootstrap.shell import sh

T = TypeVar("T")


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


@dataclass(frozen=True)
class Step:
    """One bootstrap step: the facts it reads, and the run that compares and changes.

    `run` sees only the facts listed here (and what they need): the runner
    gathers them with every other step's in one command before any step runs.
    """

    name: str
    run: Callable[[HostContext], StepOutcome]
    facts: tuple[Fact[Any], ...] = ()

    def declares(self, fact: Fact[Any]) -> bool:
        return fact in with_needs(self.facts)


@dataclass
class HostContext:
    """One host's run. Steps read facts from here and record what they changed,
    so a later step never pays a round trip to learn what an earlier one did."""

    remote: Remote
    options: BootstrapOptions
    emit: Callable[[str], None]
    gathered: dict[str, Any] = field(default_factory=dict)  # fact name -> parsed value
    step: Step | None = None  # the step running now
    connect_tries: int = 0
    daemon_json: bytes | None = None  # current bytes, updated after each write
    docker_running: bool = False
    notes: list[str] = field(default_factory=list)
    # (what, URL, host port) of every service started, for the URLs and the
    # tunnel command printed after the recap (see service_notes).
    services: list[tuple[str, str, int]] = field(default_factory=list)
    tunnel_extra: set[int] = field(default_factory=set)  # forwarded, no URL of its own

    def fact(self, fact: Fact[T]) -> T:
        """A fact the running step declared; asking for another is a bug in the step."""
        if self.step is not None and not self.step.declares(fact):
            raise RuntimeError(f"step {self.step.name} reads fact {fact.name} "
                               "without declaring it")
        if fact.name not in self.gathered:
            raise RuntimeError(f"fact {fact.name} was not gathered")
        value: T = self.gathered[fact.name]
        return value

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
        key_opt = sh("-i {key} ", key=str(key)).text if key else ""
        port_opt = f"-p {c.port} " if c.port != 22 else ""
        width = max(len(what) for what, _, _ in self.services) + 2
        lines = [f"{what + ':':<{width}}{url}" for what, url, _ in self.services]
        # The extra forwards first, then the services' ports in the order they serve.
        ports = list(dict.fromkeys([*sorted(self.tunnel_extra),
                                    *(port for _, _, port in self.services)]))
        forwards = " ".join(f"-L {p}:localhost:{p}" for p in ports)
        lines.append(f"{'tunnel:':<{width}}ssh {key_opt}{port_opt}{forwards} {c.user}@{c.host}")
        return lines

    def would(self, what: str) -> StepOutcome:
        """The outcome of a change in --check mode: nothing done, say what would be."""
        return changed(f"would {what}")
