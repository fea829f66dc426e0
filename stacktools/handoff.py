"""scripts/bootstrap: hand a stack's outputs to `fab ... bootstrap`.

    scripts/bootstrap aws                     # pulumi stack output --json -s aws
    scripts/bootstrap outputs.json -i ~/.ssh/id_ed25519 --skip-check

The argument is a file holding `pulumi stack output --json --show-secrets`,
or a stack name (then the Pulumi CLI is asked, with --show-secrets). The host,
login user, cloud, image and MLflow (mlflow_url) come from the outputs; -i and
--prompt-for-sudo-password go to fab itself; every other argument goes to the
bootstrap task. The stack's jupyter_token secret reaches fab through the
environment (WORKBENCH_JUPYTER_TOKEN), never its command line, and is not
printed here: the bootstrap prints it once, in the JupyterLab URL.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bootstrap.options import CLOUDS, JUPYTER_TOKEN_ENV

REPO = Path(__file__).resolve().parents[1]
FAB_CORE_FLAGS_WITH_VALUE = ("-i", "--identity")
FAB_CORE_FLAGS = ("--prompt-for-sudo-password", "--prompt-for-passphrase")


class HandoffError(Exception):
    """Bad input: the message is for the user, as is."""


def load_outputs(arg: str) -> dict[str, Any]:
    path = Path(arg)
    if path.is_file():
        text = path.read_text()
        source = str(path)
    else:
        pulumi = shutil.which("pulumi")
        if pulumi is None:
            raise HandoffError(
                f"{arg!r} is not a file, and reading stack {arg!r} needs the Pulumi CLI, which "
                "is not installed (https://www.pulumi.com/docs/install/). Or save the outputs "
                "where it is: pulumi stack output --json -s STACK > outputs.json, and pass "
                "that file.")
        # --show-secrets: the Jupyter token is a secret output; it is read here
        # and handed on in the environment, never shown.
        proc = subprocess.run([pulumi, "stack", "output", "--json", "--show-secrets", "-s", arg],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HandoffError(f"pulumi stack output -s {arg} failed: "
                               f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        text = proc.stdout
        source = f"stack {arg}"
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HandoffError(f"{source}: not the JSON of `pulumi stack output --json`: "
                           f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(outputs, dict):
        raise HandoffError(f"{source}: expected a JSON object of stack outputs")
    for key in ("public_ip", "ssh_user"):
        if not outputs.get(key):
            raise HandoffError(f"{source}: no {key} in the outputs (is the stack up? "
                               "`pulumi up` first)")
    cloud = outputs.get("cloud")
    if cloud is not None and cloud not in CLOUDS:
        raise HandoffError(f"{source}: cloud is {cloud!r}, expected one of {', '.join(CLOUDS)}")
    return outputs


def identity_from_ssh_command(ssh_command: str | None) -> str | None:
    """The -i of the stack's ssh_command output, when it names one."""
    if not ssh_command:
        return None
    words = shlex.split(ssh_command)
    for i, word in enumerate(words):
        if word == "-i" and i + 1 < len(words):
            return os.path.expanduser(words[i + 1])
    return None


def fab_argv(outputs: dict[str, Any], args: list[str], fab: str) -> list[str]:
    core: list[str] = []
    task: list[str] = []
    has_identity = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in FAB_CORE_FLAGS_WITH_VALUE:
            if i + 1 >= len(args):
                raise HandoffError(f"{arg} needs a value")
            core += ["-i", str(Path(os.path.expanduser(args[i + 1])).resolve())]
            has_identity = True
            i += 2
            continue
        if arg == "--requirements" and i + 1 < len(args):
            # fab runs from the repository root: a relative path must not change meaning.
            task += [arg, str(Path(os.path.expanduser(args[i + 1])).resolve())]
            i += 2
            continue
        if arg in FAB_CORE_FLAGS:
            core.append(arg)
        else:
            task.append(arg)
        i += 1
    if not has_identity:
        key = identity_from_ssh_command(outputs.get("ssh_command"))
        if key:
            core += ["-i", key]
    target = f"{outputs['ssh_user']}@{outputs['public_ip']}"
    from_outputs = []
    if outputs.get("cloud") and "--cloud" not in task:
        from_outputs += ["--cloud", outputs["cloud"]]
    if outputs.get("container_image") and "--image" not in task:
        from_outputs += ["--image", outputs["container_image"]]
    if outputs.get("mlflow_url") and "--mlflow" not in task:
        from_outputs.append("--mlflow")
    # The stop policy and the kept data volume, as the stack declared them.
    if "autostop_minutes" in outputs and "--autostop-minutes" not in task:
        from_outputs += ["--autostop-minutes", str(int(outputs["autostop_minutes"]))]
    if outputs.get("data_mount") and "--data-mount" not in task:
        from_outputs += ["--data-mount", outputs["data_mount"]]
        if "--workspace" not in task:  # the workspace lives on the kept volume
            from_outputs += ["--workspace", f"{outputs['data_mount']}/workspace"]
    return [fab, "-H", target, *core, "bootstrap", *from_outputs, *task]


def token_env(outputs: dict[str, Any]) -> dict[str, str]:
    """The stack's Jupyter token for fab's environment; {} when the outputs hold none.

    Saved without --show-secrets, the JSON says "[secret]": then the host's own
    token is used, and the user is told why.
    """
    token = outputs.get("jupyter_token")
    if isinstance(token, str) and token and token != "[secret]":
        return {JUPYTER_TOKEN_ENV: token}
    return {}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    fab = str(Path(sys.executable).parent / "fab")
    try:
        outputs = load_outputs(argv[0])
        command = fab_argv(outputs, argv[1:], fab)
    except HandoffError as exc:
        print(f"scripts/bootstrap: {exc}", file=sys.stderr)
        return 2
    shown = " ".join(shlex.quote(w) for w in ["fab", *command[1:]])
    env = dict(os.environ)
    secret = token_env(outputs)
    if secret:
        env.update(secret)
        shown += f"  (Jupyter token from the stack, in {JUPYTER_TOKEN_ENV})"
    elif outputs.get("jupyter_token") == "[secret]":
        print("scripts/bootstrap: the outputs hide jupyter_token ([secret]); the host's own "
              "token is used (save them with --show-secrets to use the stack's)",
              file=sys.stderr, flush=True)
    print(f"scripts/bootstrap: {shown}", flush=True)
    # fab finds fabfile.py from the repo root.
    os.chdir(REPO)
    os.execve(fab, command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
