"""Step 2: `umask 0002` in the login user's ~/.bashrc exactly once, so files
made in a shared workspace stay group-writable; with --chmod-home, everything
under $HOME readable (a+rX) by others, e.g. a container running as another uid.
"""

from __future__ import annotations

import hashlib
import shlex

from bootstrap.bashrc import UMASK_LINE, umask_line_count, with_umask_once
from bootstrap.facts import CHMOD_HOME_PRUNE
from bootstrap.shell import atomic_write
from bootstrap.steps.base import HostContext, StepFailed, StepOutcome, changed, ok


def run(ctx: HostContext) -> StepOutcome:
    f = ctx.facts
    bashrc_path = f"{f.home}/.bashrc"
    want = with_umask_once(f.bashrc)
    actions = []
    script = []
    if want != (f.bashrc or b""):
        expected = None if f.bashrc is None else hashlib.sha256(f.bashrc).hexdigest()
        count = umask_line_count(f.bashrc)
        if f.bashrc is None:
            actions.append(f"created {bashrc_path} with {UMASK_LINE}")
        elif count == 0:
            actions.append(f"added {UMASK_LINE} to {bashrc_path}")
        else:
            actions.append(f"removed {count - 1} duplicate {UMASK_LINE} line(s) from {bashrc_path}")
        script.append(atomic_write(
            bashrc_path, want, expected_sha256=expected, new_mode="644",
            new_owner=f"{f.user}:{f.group}",
            # Refuse to install a .bashrc that bash cannot parse.
            validate='if command -v bash >/dev/null 2>&1; then bash -n "$1"; fi',
        ) + " || exit $?")
    if ctx.options.chmod_home and f.chmod_home_offender:
        actions.append(f"chmod -R a+rX {f.home} (first: {f.chmod_home_offender})")
        home = shlex.quote(f.home)
        prune = " -o ".join(f"-path {shlex.quote(f.home + '/' + p)}" for p in CHMOD_HOME_PRUNE)
        script.append(f"find {home} \\( {prune} \\) -prune -o ! -type l "
                      "-exec chmod a+rX {} + "
                      "|| { echo 'ERROR: chmod of the home failed'; exit 1; }")
    if not actions:
        extra = "; home already a+rX" if ctx.options.chmod_home else ""
        return ok(f"umask 0002 once in {bashrc_path}{extra}")
    if ctx.options.check:
        return ctx.would("; ".join(actions).replace("created", "create").replace(
            "added", "add").replace("removed", "remove"))
    result = ctx.remote.run("\n".join(script))
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed("; ".join(actions))
