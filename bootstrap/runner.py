"""Run steps against one host and report: the part of the bootstrap that knows
nothing about Invoke's command line, so tests and other programs call it too.

Everything a run holds lives in the HostContext and HostReport it creates, so
hosts can later run in parallel threads, one call each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fabric import Connection

from bootstrap.options import BootstrapOptions
from bootstrap.recap import HostReport, Status, StepResult, format_step_line
from bootstrap.remote import HostError, Remote
from bootstrap.steps import (
    autostop,
    check,
    compat,
    compose,
    container,
    data_root,
    data_volume,
    mlflow,
    nvidia_runtime,
    packages,
    umask,
    wait,
)
from bootstrap.steps.base import HostContext, StepFailed, StepOutcome

STEPS: dict[str, Callable[[HostContext], StepOutcome]] = {
    "wait": wait.run,
    # Before anything changes: an image that cannot run here stops the host at once.
    "compat": compat.run,
    "umask": umask.run,
    "nvidia-runtime": nvidia_runtime.run,
    "data-root": data_root.run,
    # Before the container: its workspace may live on the data volume.
    "data-volume": data_volume.run,
    "compose": compose.run,
    "container": container.run,
    "packages": packages.run,
    "mlflow": mlflow.run,
    "autostop": autostop.run,
    "check": check.run,
}
ALL_STEPS = tuple(STEPS)
# Steps a plain bootstrap leaves out unless asked (--mlflow).
OPTIONAL_STEPS = ("mlflow",)
DEFAULT_STEPS = tuple(s for s in ALL_STEPS if s not in OPTIONAL_STEPS)


def bootstrap_host(connection: Connection, options: BootstrapOptions,
                   steps: Sequence[str] = DEFAULT_STEPS,
                   emit: Callable[[str], None] = print,
                   emit_error: Callable[[str], None] | None = None) -> HostReport:
    """Run `steps` (wait is always first: it reads the facts) on one host."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps: {', '.join(unknown)}")
    wanted = ["wait", *[s for s in ALL_STEPS if s in steps and s != "wait"]]
    remote = Remote(connection)
    report = HostReport(host=remote.label)
    ctx = HostContext(remote=remote, options=options, emit=emit)
    started = time.monotonic()
    failed = False
    try:
        for name in wanted:
            if failed:
                result = StepResult(name, Status.SKIPPED, 0.0, "not run: an earlier step failed")
                report.steps.append(result)
                emit(format_step_line(remote.label, result, check_mode=options.check))
                continue
            t0 = time.monotonic()
            try:
                outcome = STEPS[name](ctx)
                result = StepResult(name, outcome.status, time.monotonic() - t0, outcome.message)
            except HostError as exc:
                # Unreachable, wrong key, sudo without password: one line per host.
                result = StepResult(name, Status.FAILED, time.monotonic() - t0, str(exc))
                (emit_error or emit)(f"{remote.label}: error: {exc}")
            except StepFailed as exc:
                result = StepResult(name, Status.FAILED, time.monotonic() - t0, str(exc))
            report.steps.append(result)
            emit(format_step_line(remote.label, result, check_mode=options.check))
            failed = result.status is Status.FAILED
    finally:
        remote.close()
        report.seconds = time.monotonic() - started
        report.commands_sent = remote.commands_sent
        report.notes = ctx.notes + ctx.service_notes()
    return report
