"""scripts/bootstrap: hand a stack's outputs to `fab ... bootstrap`.

    scripts/bootstrap aws                     # pulumi stack output --json -s aws
    scripts/bootstrap outputs.json -i ~/.ssh/id_ed25519 --skip-check

The argument is a file holding `pulumi stack output --json --show-secrets`,
or a stack name (then the Pulumi CLI is asked, with --show-secrets, and the
outputs are saved, mode 600, in ~/.config/gpu-workbench/outputs/STACK.json,
outside the repository). The host, login user, cloud, image, MLflow
(mlflow_url) and the data volume (data_volume_id, data_mount) come from the
outputs; -i and --prompt-for-sudo-password go to fab itself; every other
argument goes to the bootstrap task. The stack's jupyter_token secret reaches
fab through the environment (WORKBENCH_JUPYTER_TOKEN), never its command line,
and is not printed here: the bootstrap prints it once, in the JupyterLab URL.
A saved outputs file that holds secrets must be private (mode 600): one that
group or others may read is refused, as ssh refuses such a private key.

Host key: when the outputs carry the machine's host key (`host_key`, an
OpenSSH public key line) and/or its fingerprint (`host_key_fingerprint`,
SHA256:...), the key is pinned in known_hosts for public_ip before fab runs,
and fab accepts the host only with that key. A known_hosts entry for that
address with another key is refused here, with the command that removes it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection

from bootstrap.options import CLOUDS, JUPYTER_TOKEN_ENV, normalize_fingerprint
from bootstrap.remote import HostKeyCheck, key_label, remove_command

REPO = Path(__file__).resolve().parents[1]
FAB_CORE_FLAGS_WITH_VALUE = ("-i", "--identity")
FAB_CORE_FLAGS = ("--prompt-for-sudo-password", "--prompt-for-passphrase")


# Outputs that hold a secret when saved with --show-secrets ("[secret]" otherwise).
SECRET_OUTPUTS = ("jupyter_token",)


class HandoffError(Exception):
    """Bad input: the message is for the user, as is."""


def secrets_in(outputs: dict[str, Any]) -> list[str]:
    """The secret outputs whose values are there in the clear."""
    return [k for k in SECRET_OUTPUTS
            if isinstance(outputs.get(k), str) and outputs[k] and outputs[k] != "[secret]"]


def outputs_dir() -> Path:
    """Where saved outputs live: the user's config dir, never the repository."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "gpu-workbench" / "outputs"


def save_outputs(stack: str, text: str) -> Path:
    """Write a stack's outputs to outputs_dir()/STACK.json, mode 600 from the first byte
    (a temp file made 600 by mkstemp, then renamed), in a 700 directory."""
    directory = outputs_dir()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", stack) + ".json")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_private(path: Path, outputs: dict[str, Any]) -> None:
    """Refuse a saved outputs file with secrets in it that group or others may read."""
    secrets = secrets_in(outputs)
    mode = path.stat().st_mode & 0o777
    if secrets and mode & 0o077:
        raise HandoffError(
            f"{path} holds secrets ({', '.join(secrets)}) and is readable by others (mode "
            f"{mode:o}): chmod 600 {shlex.quote(str(path))}, then run again (or pass the "
            "stack's name: its outputs are then kept in "
            f"{outputs_dir()}, mode 600)")


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
    if source == str(path):
        check_private(path, outputs)
    else:
        saved = save_outputs(arg, text)  # for a later run without the CLI
        print(f"scripts/bootstrap: outputs of stack {arg} saved to {saved} (mode 600)",
              file=sys.stderr, flush=True)
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


def stack_host_key(outputs: dict[str, Any]) -> tuple[paramiko.PKey | None, str | None]:
    """(host key, SHA256 fingerprint) the stack vouches for; (None, None) when it says
    nothing. The two outputs must agree when both are there."""
    line = outputs.get("host_key") or None
    given = outputs.get("host_key_fingerprint") or None
    key = None
    if line is not None:
        fields = str(line).split()
        try:
            key = paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1],
                                                                             validate=True))
        except (IndexError, ValueError, binascii.Error, paramiko.SSHException) as exc:
            raise HandoffError(f"host_key {str(line)[:40]!r}... is not an OpenSSH public host "
                               "key line (e.g. 'ssh-ed25519 AAAA...')") from exc
    fingerprint = None
    if given is not None:
        try:
            fingerprint = normalize_fingerprint(str(given))
        except ValueError as exc:
            raise HandoffError(f"host_key_fingerprint: {exc}") from None
    if key is not None and fingerprint is not None and key.fingerprint != fingerprint:
        raise HandoffError(f"the outputs disagree: host_key is {key_label(key)}, "
                           f"host_key_fingerprint is {fingerprint}")
    return key, (key.fingerprint if key is not None else fingerprint)


def pin_host_key(outputs: dict[str, Any]) -> str | None:
    """Write or verify the stack's host key in known_hosts for public_ip (port 22).

    The files are the ones fab will read (ssh_config's UserKnownHostsFile, or
    ~/.ssh/known_hosts). Returns a line to print, or None when the outputs carry
    no host key. A recorded key that is not the stack's is refused.
    """
    key, fingerprint = stack_host_key(outputs)
    if fingerprint is None:
        return None
    lines: list[str] = []
    check = HostKeyCheck(Connection(str(outputs["public_ip"]), user=str(outputs["ssh_user"]),
                                    config=Config()), on_new=lines.append)
    if key is not None:
        relevant = [e for e in check.known if e.key.get_name() == key.get_name()]
    else:
        relevant = check.known
    if any(e.key.fingerprint == fingerprint for e in relevant):
        return f"host key of {check.name} pinned already: {fingerprint} (the stack's)"
    if relevant:
        stale = relevant[0]
        raise HandoffError(
            f"host key for {check.name} in known_hosts is {key_label(stale.key)} "
            f"({stale.where}), not the stack's {fingerprint}; not bootstrapping; if the VM "
            f"was rebuilt, remove the stale entry: {remove_command(check.name, stale.path)}")
    if key is None:  # fab checks the fingerprint when it first meets the host
        return f"host key of {check.name}: fab accepts only {fingerprint} (the stack's)"
    try:
        check.record(key, "the stack's host_key")
    except Exception as exc:  # HostKeyRefused: the file cannot be written
        raise HandoffError(str(exc)) from exc
    return lines[0] if lines else None


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
    # The disk the stack attached: the data-volume step uses that one and no other.
    if outputs.get("data_volume_id") and not {"--data-volume-id", "--data-device"} & set(task):
        from_outputs += ["--data-volume-id", str(outputs["data_volume_id"])]
    _key, fingerprint = stack_host_key(outputs)
    if fingerprint is not None and "--host-key-fingerprint" not in task:
        from_outputs += ["--host-key-fingerprint", fingerprint]
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
        pinned = pin_host_key(outputs)
    except HandoffError as exc:
        print(f"scripts/bootstrap: {exc}", file=sys.stderr)
        return 2
    if pinned:
        print(f"scripts/bootstrap: {pinned}", flush=True)
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
