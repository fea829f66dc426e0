"""Step 1: the host is usable. SSH answers (bounded retry with backoff while the
VM boots), cloud-init has finished, nobody holds the dpkg lock. The same
remote command then reads every fact the other steps need."""

from __future__ import annotations

from bootstrap.facts import facts_script, parse_facts
from bootstrap.steps.base import HostContext, StepFailed, StepOutcome, ok


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    tries = ctx.remote.connect(
        o.wait_timeout,
        on_retry=lambda n, delay, why: ctx.emit(
            f"{ctx.remote.label}  wait: SSH not ready ({why}); try {n + 1} in {delay:.1f}s"),
    )
    result = ctx.remote.run(
        facts_script(wait_timeout=o.wait_timeout, container_name=o.container_name,
                     chmod_home=o.chmod_home),
        timeout=2 * o.wait_timeout + 120,
    )
    if not result.ok:
        raise StepFailed(f"reading facts failed: {result.error_line()}")
    facts = parse_facts(result.stdout)
    ctx.facts_ = facts
    ctx.daemon_json = facts.daemon_json
    ctx.docker_running = facts.docker_running

    cloud_init = _cloud_init(facts.cloud_init, o.wait_timeout)
    lock = facts.dpkg_lock.strip()
    if lock.startswith("held by"):
        raise StepFailed(f"dpkg lock {lock}: apt still busy after {o.wait_timeout:g}s")
    lock_text = "dpkg lock free" if lock.startswith("free waited=0") or lock == "absent" \
        else f"dpkg lock {lock}"
    if lock.startswith("free waited=") and lock != "free waited=0":
        lock_text = f"waited {lock.split('=', 1)[1]}s for the dpkg lock"
    tries_text = "1 try" if tries == 1 else f"{tries} tries"
    return ok(f"ssh up ({tries_text}); {cloud_init}; {lock_text}")


def _cloud_init(section: str, wait_timeout: float) -> str:
    lines = section.splitlines()
    if not lines or lines[0] == "absent":
        return "no cloud-init"
    rc = lines[0].removeprefix("rc=")
    status = lines[1].strip() if len(lines) > 1 else ""
    if rc == "124":
        raise StepFailed(f"cloud-init still running after {wait_timeout:g}s ({status})")
    if rc == "0" or rc == "2":  # 2: finished with recoverable errors (cloud-init >= 23.4)
        return f"cloud-init done ({status})" if status else "cloud-init done"
    # Finished but failed: the VM is still usable for what we do; say so and go on.
    return f"cloud-init finished with errors ({status or 'rc=' + rc})"

