"""Step 2: `umask 0002` in the login user's ~/.bashrc exactly once, so files
made in a shared workspace stay group-writable; with --chmod-home, everything
under $HOME readable (a+rX) by others, e.g. a container running as another uid,
except what holds a credential (CHMOD_HOME_PRUNE), which keeps its mode.
"""

from __future__ import annotations

import hashlib

from bootstrap.bashrc import UMASK_LINE, umask_line_count, with_umask_once
from bootstrap.container_spec import TOKEN_DIR
from bootstrap.facts import LOGIN, Fact, b64_or_none
from bootstrap.options import BootstrapOptions
from bootstrap.shell import LINES, Sh, atomic_write, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

# What `--chmod-home` leaves alone (relative to the home; a directory is skipped
# with all it holds): every dotfile or dotdir where tools on a GPU workstation
# keep a credential, plus what a user typed. A path that is not there costs nothing.
CHMOD_HOME_PRUNE = (
    # SSH and GPG private keys (sshd's StrictModes also refuses a readable ~/.ssh).
    ".ssh", ".gnupg",
    # Registries: `docker login nvcr.io` keeps the NGC API key in ~/.docker/config.json;
    # the NGC CLI its key in ~/.ngc; Apptainer/Singularity remote tokens; podman/skopeo.
    ".docker", ".ngc", ".apptainer", ".singularity", ".config/containers",
    # Cloud and cluster credentials: AWS, Azure CLI, gcloud (and gsutil's ~/.boto),
    # s3cmd, rclone remotes, kubeconfig tokens.
    ".aws", ".azure", ".config/gcloud", ".boto", ".s3cfg", ".config/rclone", ".kube",
    # ML services: Hugging Face and Kaggle tokens (Weights & Biases uses ~/.netrc).
    ".cache/huggingface/token", ".huggingface", ".kaggle",
    # Passwords and tokens of common tools: curl/git/W&B, PostgreSQL, MySQL, git's
    # credential store, PyPI and npm upload tokens.
    ".netrc", ".pgpass", ".my.cnf", ".git-credentials", ".pypirc", ".npmrc",
    # Jupyter: config may hold the password hash; runtime files hold live tokens.
    ".jupyter", ".local/share/jupyter/runtime",
    # History: whatever was typed, `export NGC_API_KEY=...` included.
    ".bash_history", ".zsh_history", ".python_history", ".ipython",
    # Ours: the Jupyter token (and anything else gpu-workbench keeps there).
    TOKEN_DIR,
)

BASHRC: Fact[bytes | None] = Fact(
    "bashrc",
    lambda _: Sh('if [ -f "$home/.bashrc" ]; then base64 -w0 "$home/.bashrc"; echo; '
                 "else echo absent; fi"),
    b64_or_none, needs=(LOGIN,))


def _chmod_home_command(o: BootstrapOptions) -> Sh:
    """The first path under the home that a+rX would change (only with --chmod-home)."""
    if not o.chmod_home:
        return Sh(":")
    prune = Sh(" -o ").join(sh('-path "$home"/{p}', p=p) for p in CHMOD_HOME_PRUNE)
    return sh('find "$home" \\( {prune} \\) -prune -o ! -type l \\( '
              r'\( -type d ! -perm -005 \) -o \( ! -type d ! -perm -004 \) '
              r'-o \( ! -type d -perm /111 ! -perm -001 \) \) -print -quit 2>/dev/null',
              prune=prune)


CHMOD_HOME_OFFENDER: Fact[str] = Fact("chmod_home", _chmod_home_command, str.strip,
                                      needs=(LOGIN,))


def run(ctx: HostContext) -> StepOutcome:
    login = ctx.fact(LOGIN)
    bashrc = ctx.fact(BASHRC)
    offender = ctx.fact(CHMOD_HOME_OFFENDER)
    bashrc_path = f"{login.home}/.bashrc"
    want = with_umask_once(bashrc)
    actions = []
    script: list[Sh] = []
    if want != (bashrc or b""):
        expected = None if bashrc is None else hashlib.sha256(bashrc).hexdigest()
        count = umask_line_count(bashrc)
        if bashrc is None:
            actions.append(f"created {bashrc_path} with {UMASK_LINE}")
        elif count == 0:
            actions.append(f"added {UMASK_LINE} to {bashrc_path}")
        else:
            actions.append(f"removed {count - 1} duplicate {UMASK_LINE} line(s) from {bashrc_path}")
        script.append(atomic_write(
            bashrc_path, want, expected_sha256=expected, new_mode="644",
            new_owner=f"{login.user}:{login.group}",
            # Refuse to install a .bashrc that bash cannot parse.
            validate=Sh('if command -v bash >/dev/null 2>&1; then bash -n "$1"; fi'),
        ) + Sh(" || exit $?"))
    if ctx.options.chmod_home and offender:
        actions.append(f"chmod -R a+rX {login.home} (first: {offender})")
        prune = Sh(" -o ").join(sh("-path {p}", p=login.home + "/" + p)
                                for p in CHMOD_HOME_PRUNE)
        script.append(sh("find {home} \\( {prune} \\) -prune -o ! -type l "
                         "-exec chmod a+rX {{}} + "
                         "|| {{ echo 'ERROR: chmod of the home failed'; exit 1; }}",
                         home=login.home, prune=prune))
    if not actions:
        extra = "; home already a+rX" if ctx.options.chmod_home else ""
        return ok(f"umask 0002 once in {bashrc_path}{extra}")
    if ctx.options.check:
        return ctx.would("; ".join(actions).replace("created", "create").replace(
            "added", "add").replace("removed", "remove"))
    result = ctx.remote.run(LINES.join(script))
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed("; ".join(actions))


STEP = Step("umask", run, facts=(LOGIN, BASHRC, CHMOD_HOME_OFFENDER))
