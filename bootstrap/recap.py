"""Step results and the Ansible-style recap printed at the end of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class StepResult:
    step: str
    status: Status
    seconds: float
    message: str = ""


@dataclass
class HostReport:
    """Everything one host's run produced; one object per host, no shared state."""

    host: str
    steps: list[StepResult] = field(default_factory=list)
    commands_sent: int = 0
    seconds: float = 0.0
    # Lines for the user after the recap (Jupyter URL, tunnel command).
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(s.status is Status.FAILED for s in self.steps)

    def count(self, status: Status) -> int:
        return sum(1 for s in self.steps if s.status is status)

    def result(self, step: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == step), None)


STEP_WIDTH = 15


def format_step_line(host: str, result: StepResult, *, check_mode: bool = False) -> str:
    status = result.status.value
    if check_mode and result.status is Status.CHANGED:
        status = "would change"
    line = f"{host}  {result.step:<{STEP_WIDTH}} {status:<12} {result.seconds:6.2f}s"
    if result.message:
        line += f"  {result.message}"
    return line


def format_recap(reports: list[HostReport], *, check_mode: bool = False) -> str:
    title = "PLAY RECAP (check mode: nothing was changed) " if check_mode else "PLAY RECAP "
    lines = ["", title + "*" * max(0, 78 - len(title))]
    for r in reports:
        lines.append(
            f"{r.host:<24} ok={r.count(Status.OK):<3} changed={r.count(Status.CHANGED):<3} "
            f"failed={r.count(Status.FAILED):<3} skipped={r.count(Status.SKIPPED):<3} "
            f"{r.seconds:6.2f}s  {r.commands_sent} ssh commands"
        )
        for s in r.steps:
            status = s.status.value
            if check_mode and s.status is Status.CHANGED:
                status = "would change"
            line = f"    {s.step:<{STEP_WIDTH}} {status:<12} {s.seconds:6.2f}s"
            if s.status is Status.FAILED:  # the reason, again, where the eye lands last
                line += f"  {s.message}"
            lines.append(line)
    for r in reports:
        if r.notes:
            lines.append("")
            lines.append(f"{r.host}:")
            lines.extend(f"  {n}" for n in r.notes)
    return "\n".join(lines)
