"""Step: extra Python packages (--pip SPEC..., --requirements FILE) in the running container.

They go into a user site on the workspace volume (`pip install --user` with
PYTHONUSERBASE=/workspace/.gpu-workbench/python, which the container step sets
in the container's environment), so they survive `docker restart` and a new
container, and pip still counts what the image ships (torch, numpy) as
installed instead of fetching a second copy. The sha256 of the requirements
is written beside them once pip succeeded; the facts read it, so a second run
with the same requirements sends nothing. Packages dropped from the list stay
installed (delete the directory to start over).
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import base64
import hashlib

from bootstrap.container_spec import PACKAGES_DIR, PYTHONUSERBASE, workspace_path
from bootstrap.facts import LOGIN, Fact
from bootstrap.options import BootstrapOptions
from bootstrap.shell import Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok, skipped

# Beside the extra packages in the workspace: the sha256 of the requirements installed.
PACKAGES_HASH_FILE = "requirements.sha256"


def _packages_sha_command(o: BootstrapOptions) -> Sh:
    # The workspace as the host sees it: ~ is the login user's home.
    ws = (sh('"$home"{rest}', rest=o.workspace[1:]) if o.workspace.startswith("~")
          else sh("{ws}", ws=o.workspace))
    return sh("cat {ws}/{packages_dir}/{hash_file} 2>/dev/null",
              ws=ws, packages_dir=PACKAGES_DIR, hash_file=PACKAGES_HASH_FILE)


PACKAGES_SHA: Fact[str | None] = Fact("packages_sha", _packages_sha_command,
                                      lambda text: text.strip() or None, needs=(LOGIN,))


def requirements_text(lines: tuple[str, ...]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def requirements_sha(lines: tuple[str, ...]) -> str:
    return hashlib.sha256(requirements_text(lines)).hexdigest()


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    if not o.requirements:
        return skipped("no extra packages asked for (--pip, --requirements)")
    want = requirements_sha(o.requirements)
    listed = ", ".join(o.requirements)
    if len(listed) > 120:
        listed = listed[:117] + "..."
    if ctx.fact(PACKAGES_SHA) == want:
        return ok(f"installed: {listed}")
    if o.check:
        return ctx.would(f"pip install --user {listed} in {o.container_name}")
    login = ctx.fact(LOGIN)
    host_dir = f"{workspace_path(o.workspace, login.home)}/{PACKAGES_DIR}"
    payload = base64.b64encode(requirements_text(o.requirements)).decode()
    script = sh("""
set -u
d={host_dir}
mkdir -p "$d" || {{ echo "ERROR: cannot create $d"; exit 1; }}
printf '%s' {payload} | base64 -d > "$d/requirements.txt"
rm -f "$d"/{hash_file}
# pip inside the container, as its user, into the user site on the workspace.
# PIP_BREAK_SYSTEM_PACKAGES: images whose Python is marked externally managed
# (PEP 668) refuse --user installs otherwise; the user site is ours, not the OS's.
if ! out=$(docker exec -e PYTHONUSERBASE={userbase} -e PIP_BREAK_SYSTEM_PACKAGES=1 \\
    -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_ROOT_USER_ACTION=ignore {name} \\
    python3 -m pip install --user -q -r {requirements} 2>&1); then
  echo "ERROR: pip install in" {name} "failed: $(echo "$out" | grep -v '^ *$' | tail -n 2 | tr '\\n' ' ')"
  exit 1
fi
printf '%s\\n' {want} > "$d"/{hash_file}
chown -R {user}:{group} "$d"
""", host_dir=host_dir, payload=payload, hash_file=PACKAGES_HASH_FILE, userbase=PYTHONUSERBASE,
        name=o.container_name, requirements=PYTHONUSERBASE + "/requirements.txt", want=want,
        user=login.user, group=login.group)
    result = ctx.remote.run(script, timeout=3600)
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed(f"pip installed {listed} into {o.workspace}/{PACKAGES_DIR}")


STEP = Step("packages", run, facts=(LOGIN, PACKAGES_SHA))
