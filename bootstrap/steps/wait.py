"""Step 1: the host is usable. SSH answers (bounded retry with backoff while the
VM boots), cloud-init has finished, nobody holds the dpkg lock. The same
remote command then reads every fact the other steps need."""

from __future__ import annotations

from bootstrap.facts import facts_script, parse_facts
from bootstrap.steps import autostop, data_volume
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
                     chmod_home=o.chmod_home, workspace=o.workspace)
        # The lifecycle steps' facts ride along: still one round trip for all.
        + data_volume.facts_snippet(o.data_device if o.data_device != "none" else None,
                                    o.data_mount, int(o.wait_timeout))
        + autostop.facts_snippet(),
        timeout=2 * o.wait_timeout + 120,
    )
    if not result.ok:
        raise StepFailed(f"reading facts failed: {result.error_line()}")
    facts = parse_facts(result.stdout)
    ctx.facts_ = facts
    ctx.daemon_json = facts.daemon_json
    ctx.docker_running = facts.docker_running

    cloud_init = _cloud_init(facts.cloud_init, o.wait_timeout)
    lock_text = _dpkg_lock(facts.dpkg_lock.strip())
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



def _dpkg_lock(section: str) -> str:
    """From the facts script: absent, unknown (...), free waited=N,
    or held by pid P (cmd) after Ns."""
    if section.startswith("held by"):
        raise StepFailed(f"dpkg lock {section}: apt is still busy (raise --wait-timeout?)")
    if section.startswith("free waited="):
        waited = section.removeprefix("free waited=")
        return "dpkg lock free" if waited == "0" else f"waited {waited}s for the dpkg lock"
    if section == "absent":
        return "no dpkg"
    return f"dpkg lock {section}"
