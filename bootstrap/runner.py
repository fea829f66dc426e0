"""Run steps against one host and report: the part of the bootstrap that knows
nothing about Invoke's command line, so tests and other programs call it too.

Everything a run holds lives in the HostContext and HostReport it creates, so
hosts can later run in parallel threads, one call each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fabric import Connection

from bootstrap.facts import (
    DAEMON_JSON,
    DOCKER_INFO,
    FactsIncomplete,
    facts_command,
    parse_facts,
)
from bootstrap.options import BootstrapOptions
from bootstrap.recap import HostReport, Status, StepResult, format_step_line
from bootstrap.remembered_image import REMEMBERED_IMAGE
from bootstrap.remembered_image import resolve as resolve_image
from bootstrap.remote import HostError, Remote
from bootstrap.steps import (
    autostop,
    check,
    compat,
    compose,
    container,
    data_root,
    data_volume,
    interruptions,
    mlflow,
    nvidia_runtime,
    packages,
    umask,
    wait,
)
from bootstrap.steps.base import HostContext, Step, StepFailed

STEPS: dict[str, Step] = {step.name: step for step in (
    wait.STEP,  # always first: its facts wait for cloud-init and apt
    # Before anything changes: an image that cannot run here stops the host at once.
    compat.STEP,
    umask.STEP,
    nvidia_runtime.STEP,
    data_root.STEP,
    # Before the container: its workspace may live on the data volume.
    data_volume.STEP,
    compose.STEP,
    container.STEP,
    packages.STEP,
    mlflow.STEP,
    autostop.STEP,
    interruptions.STEP,
    check.STEP,
)}
ALL_STEPS = tuple(STEPS)
# Steps a plain bootstrap leaves out unless asked (--mlflow).
OPTIONAL_STEPS = ("mlflow",)
DEFAULT_STEPS = tuple(s for s in ALL_STEPS if s not in OPTIONAL_STEPS)


def bootstrap_host(connection: Connection, options: BootstrapOptions,
                   steps: Sequence[str] = DEFAULT_STEPS,
                   emit: Callable[[str], None] = print,
                   emit_error: Callable[[str], None] | None = None) -> HostReport:
    """Run `steps` on one host (wait always first).

    The host's facts for every wanted step are read in one remote command
    before any step runs; that read is part of the wait step, which also
    owns the SSH connect (retried while the VM boots).
    """
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps: {', '.join(unknown)}")
    wanted = ["wait", *[s for s in ALL_STEPS if s in steps and s != "wait"]]
    remote = Remote(connection, strict_host_keys=options.strict_host_keys,
                    host_key_fingerprint=options.host_key_fingerprint,
                    # A new host's fingerprint, printed once (the run that records it).
                    on_new_host_key=lambda line: emit(f"{remote.label}  {line}"))
    report = HostReport(host=remote.label)
    ctx = HostContext(remote=remote, options=options, emit=emit)
    started = time.monotonic()
    failed = False
    try:
        for name in wanted:
            step = STEPS[name]
            if failed:
                result = StepResult(name, Status.SKIPPED, 0.0, "not run: an earlier step failed")
                report.steps.append(result)
                emit(format_step_line(remote.label, result, check_mode=options.check))
                continue
            t0 = time.monotonic()
            try:
                if name == "wait":
                    _gather(ctx, [STEPS[n] for n in wanted])
                ctx.step = step
                outcome = step.run(ctx)
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


def _gather(ctx: HostContext, steps: Sequence[Step]) -> None:
    """Connect, then read every fact the steps declared in one remote command."""
    o = ctx.options
    ctx.connect_tries = ctx.remote.connect(
        o.wait_timeout,
        on_retry=lambda n, delay, why: ctx.emit(
            f"{ctx.remote.label}  wait: SSH not ready ({why}); try {n + 1} in {delay:.1f}s"),
    )
    facts = [fact for step in steps for fact in step.facts]
    # Waiting for cloud-init and apt is bounded by wait_timeout; the rest is quick.
    result = ctx.remote.run(facts_command(facts, o), timeout=2 * o.wait_timeout + 120)
    if not result.ok:
        raise StepFailed(f"reading facts failed: {result.error_line()}")
    try:
        ctx.gathered = parse_facts(result.stdout, facts)
    except FactsIncomplete as exc:
        raise StepFailed(f"reading facts failed: {exc}") from exc
    # What later steps change, they record here; they start from the facts.
    # No --image: the image this host ran last, for every step alike.
    ctx.options = resolve_image(o, ctx.gathered.get(REMEMBERED_IMAGE.name))
    ctx.daemon_json = ctx.gathered.get(DAEMON_JSON.name)
    ctx.docker_running = ctx.gathered.get(DOCKER_INFO.name) is not None
