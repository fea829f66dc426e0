"""Step 1: the host is usable. SSH answers (the runner retries with backoff while
the VM boots), cloud-init has finished, nobody holds the dpkg lock.

Its facts come first in the one facts command, so every other fact is read
after cloud-init and apt are done with the machine.
"""



from __future__ import annotations

from bootstrap.facts import Fact
from bootstrap.options import BootstrapOptions
from bootstrap.shell import Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, ok


def _cloud_init_command(o: BootstrapOptions) -> Sh:
    return sh("""if command -v cloud-init >/dev/null 2>&1; then
  timeout {seconds} cloud-init status --wait >/dev/null 2>&1; rc=$?
  echo "rc=$rc"; cloud-init status 2>/dev/null | head -n 1
else
  echo absent
fi""", seconds=int(o.wait_timeout))


def _dpkg_lock_command(o: BootstrapOptions) -> Sh:
    # Bounded by the same --wait-timeout as cloud-init, counted from the start.
    return sh(r"""deadline=$(( wb_start + {seconds} ))
# apt takes fcntl locks on these files; flock(1) would not see them, fuser does.
lock_holders() {{
  if command -v fuser >/dev/null 2>&1; then
    fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock 2>/dev/null | tr -s ' \n' ' '
  elif command -v lsof >/dev/null 2>&1; then
    lsof -t /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock 2>/dev/null | tr -s ' \n' ' '
  fi
}}
if [ ! -e /var/lib/dpkg/lock-frontend ] && [ ! -e /var/lib/dpkg/lock ]; then
  echo "absent"
elif ! command -v fuser >/dev/null 2>&1 && ! command -v lsof >/dev/null 2>&1; then
  echo "unknown (neither fuser nor lsof)"
else
  waited=0
  while holders=$(lock_holders); [ -n "$(echo $holders)" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 1; waited=$((waited + 1))
  done
  if [ -n "$(echo $holders)" ]; then
    first=$(echo $holders | cut -d' ' -f1)
    echo "held by pid $(echo $holders) ($(cat /proc/$first/comm 2>/dev/null)) after ${{waited}}s"
  else
    echo "free waited=$waited"
  fi
fi""", seconds=int(o.wait_timeout))


CLOUD_INIT: Fact[str] = Fact("cloud_init", _cloud_init_command, str.strip)
DPKG_LOCK: Fact[str] = Fact("dpkg_lock", _dpkg_lock_command, str.strip, needs=(CLOUD_INIT,))


def run(ctx: HostContext) -> StepOutcome:
    cloud_init = _cloud_init(ctx.fact(CLOUD_INIT), ctx.options.wait_timeout)
    lock_text = _dpkg_lock(ctx.fact(DPKG_LOCK))
    tries = ctx.connect_tries
    tries_text = "1 try" if tries == 1 else f"{tries} tries"
    return ok(f"ssh up ({tries_text}); {cloud_init}; {lock_text}")


STEP = Step("wait", run, facts=(CLOUD_INIT, DPKG_LOCK))


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
    """From the facts: absent, unknown (...), free waited=N, or held by pid P (cmd) after Ns."""
    if section.startswith("held by"):
        raise StepFailed(f"dpkg lock {section}: apt is still busy (raise --wait-timeout?)")
    if section.startswith("free waited="):
        waited = section.removeprefix("free waited=")
        return "dpkg lock free" if waited == "0" else f"waited {waited}s for the dpkg lock"
    if section == "absent":
        return "no dpkg"
    return f"dpkg lock {section}"
