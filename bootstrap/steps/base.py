"""What every step gets (HostContext) and gives back (StepOutcome or StepFailed)."""

from __future__ import annotations

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

    @property
    def facts(self) -> Facts:
        if self.facts_ is None:
            raise RuntimeError("facts not gathered: the wait step runs first")
        return self.facts_

    def would(self, what: str) -> StepOutcome:
        """The outcome of a change in --check mode: nothing done, say what would be."""
        return changed(f"would {what}")
