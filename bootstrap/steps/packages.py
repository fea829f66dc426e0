"""Step: extra Python packages (--pip SPEC..., --requirements FILE) in the running container.

They go into a user site on the workspace volume (`pip install --user` with
PYTHONUSERBASE=/workspace/.gpu-workbench/python, which the container step sets
in the container's environment), so they survive `docker restart` and a new
container, and pip still counts what the image ships (torch, numpy) as
installed instead of fetching a second copy. Once pip succeeded, the record
beside them holds the requirements' sha256 and the image they were installed
under (bootstrap/user_site.py); the facts read it, so a second run with the
same requirements and image sends nothing. A run without --pip keeps what is
there, and installs it again (from the requirements.txt kept beside it) when
the image changed, since another image may bring another Python. Packages
dropped from the list stay installed (delete the directory to start over).
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import base64
import hashlib

from bootstrap.container_spec import PACKAGES_DIR, PYTHONUSERBASE, workspace_path
from bootstrap.facts import LOGIN
from bootstrap.shell import Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok, skipped
from bootstrap.user_site import (
    INSTALLED_PACKAGES,
    RECORD_FILE,
    REQUIREMENTS_FILE,
    record_line,
)


def requirements_text(lines: tuple[str, ...]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def requirements_sha(lines: tuple[str, ...]) -> str:
    return hashlib.sha256(requirements_text(lines)).hexdigest()


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    installed = ctx.fact(INSTALLED_PACKAGES)
    image = o.image_ref
    if not o.requirements:
        if installed is None:
            return skipped("no extra packages asked for (--pip, --requirements)")
        if installed.image == image:
            return ok(f"installed earlier for {image}: {o.workspace}/{PACKAGES_DIR}/"
                      f"{REQUIREMENTS_FILE}")
        # Another image since they were installed: its Python may look elsewhere.
        if o.check:
            return ctx.would(f"pip install --user again from {o.workspace}/{PACKAGES_DIR}/"
                             f"{REQUIREMENTS_FILE} for {image}")
        _install(ctx, None, installed.sha256)
        return changed(f"pip installed {o.workspace}/{PACKAGES_DIR}/{REQUIREMENTS_FILE} "
                       f"again for {image} (installed for {installed.image or 'another image'})")
    want = requirements_sha(o.requirements)
    listed = ", ".join(o.requirements)
    if len(listed) > 120:
        listed = listed[:117] + "..."
    if installed is not None and installed.sha256 == want and installed.image == image:
        return ok(f"installed: {listed}")
    if o.check:
        return ctx.would(f"pip install --user {listed} in {o.container_name}")
    _install(ctx, o.requirements, want)
    again = (f" (again: installed for {installed.image or 'another image'})"
             if installed is not None and installed.sha256 == want else "")
    return changed(f"pip installed {listed} into {o.workspace}/{PACKAGES_DIR}{again}")


def _install(ctx: HostContext, requirements: tuple[str, ...] | None, sha256: str) -> None:
    """pip install --user -r the requirements (new ones written first, else the kept file),
    then the record: what, and under which image."""
    o = ctx.options
    login = ctx.fact(LOGIN)
    host_dir = f"{workspace_path(o.workspace, login.home)}/{PACKAGES_DIR}"
    write = Sh("")
    if requirements is not None:
        payload = base64.b64encode(requirements_text(requirements)).decode()
        write = sh("printf '%s' {payload} | base64 -d > \"$r\"", payload=payload)
    script = sh("""
set -u
d={host_dir}
r="$d"/{requirements_file}
mkdir -p "$d" || {{ echo "ERROR: cannot create $d"; exit 1; }}
{write}
[ -s "$r" ] || {{ echo "ERROR: no $r to install from: give --pip or --requirements"; exit 1; }}
rm -f "$d"/{record}
# pip inside the container, as its user, into the user site on the workspace.
# PIP_BREAK_SYSTEM_PACKAGES: images whose Python is marked externally managed
# (PEP 668) refuse --user installs otherwise; the user site is ours, not the OS's.
if ! out=$(docker exec -e PYTHONUSERBASE={userbase} -e PIP_BREAK_SYSTEM_PACKAGES=1 \\
    -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_ROOT_USER_ACTION=ignore {name} \\
    python3 -m pip install --user -q -r {requirements} 2>&1); then
  echo "ERROR: pip install in" {name} "failed: $(echo "$out" | grep -v '^ *$' | tail -n 2 | tr '\\n' ' ')"
  exit 1
fi
printf '%s' {record_line} > "$d"/{record}
chown -R {user}:{group} "$d"
""", host_dir=host_dir, write=write, requirements_file=REQUIREMENTS_FILE, record=RECORD_FILE,
        userbase=PYTHONUSERBASE, name=o.container_name,
        requirements=f"{PYTHONUSERBASE}/{REQUIREMENTS_FILE}",
        record_line=record_line(sha256, o.image_ref), user=login.user, group=login.group)
    result = ctx.remote.run(script, timeout=3600)
    if not result.ok:
        raise StepFailed(result.error_line())


STEP = Step("packages", run, facts=(LOGIN, INSTALLED_PACKAGES))
