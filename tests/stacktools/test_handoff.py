"""scripts/bootstrap: a stack's outputs in, a bootstrap of that host out."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from stacktools.handoff import (
    HandoffError,
    fab_argv,
    identity_from_ssh_command,
    pin_host_key,
    stack_host_key,
    token_env,
)
from tests.support.bootstrap_run import REPO, STANDIN_IMAGE, recap_counts
from tests.support.testhosts import TestHost

SCRIPT = str(REPO / "scripts" / "bootstrap")

OUTPUTS = {
    "public_ip": "203.0.113.7", "ssh_user": "ubuntu", "cloud": "azure",
    "container_image": "nvcr.io/nvidia/clara-train-sdk:v4.1",
    "ssh_command": "ssh ubuntu@203.0.113.7",
    "tunnel_command": "ssh -N -L 5000:localhost:5000 -L 8888:localhost:8888 "
                      "-L 8890:localhost:8890 ubuntu@203.0.113.7",
    "jupyter_url": "http://localhost:8890/lab", "aiaa_url": "http://localhost:5000",
    "hourly_cost_usd": 1.14, "instance_type": "Standard_NC4as_T4_v3",
}


def script(*args: str, env: dict[str, str] | None = None,
           home: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("FABRIC_") and k != "XDG_CONFIG_HOME"}
    # Never the real home: a stack name saves its outputs under ~/.config.
    full["HOME"] = str(home if home is not None else Path(tempfile.mkdtemp(prefix="wb-home-")))
    full.update(env or {})
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=full,
                          timeout=180, cwd="/")


def key_fingerprint(pub: Path) -> str:
    """The SHA256:... fingerprint `ssh-keygen -lf` prints for a public key file."""
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def new_key(where: Path, name: str) -> Path:
    """A fresh ed25519 key pair; returns the public half."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(where / name)],
                   check=True)
    return where / f"{name}.pub"


def plain_names(home: Path) -> Path:
    """A HOME whose ssh_config writes plain known_hosts names (not the box's setting)."""
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "config").write_text("Host *\n  HashKnownHosts no\n  GlobalKnownHostsFile /dev/null\n")
    return ssh / "known_hosts"


def test_fab_command_from_outputs() -> None:
    argv = fab_argv(OUTPUTS, ["-i", "/keys/k", "--skip-check", "--prompt-for-sudo-password"],
                    "fab")
    assert argv == ["fab", "-H", "ubuntu@203.0.113.7", "-i", "/keys/k",
                    "--prompt-for-sudo-password", "bootstrap", "--cloud", "azure", "--image",
                    "nvcr.io/nvidia/clara-train-sdk:v4.1", "--skip-check"]


def test_explicit_task_flags_win_and_key_comes_from_ssh_command() -> None:
    outputs = {**OUTPUTS, "ssh_command": "ssh -i ~/.ssh/work ubuntu@203.0.113.7"}
    argv = fab_argv(outputs, ["--image", "mine:1"], "fab")
    assert argv[argv.index("-i") + 1] == os.path.expanduser("~/.ssh/work")
    assert argv.count("--image") == 1 and argv[-1] == "mine:1"
    assert identity_from_ssh_command("ssh ubuntu@h") is None
    with pytest.raises(HandoffError):
        fab_argv(OUTPUTS, ["-i"], "fab")


def test_mlflow_and_token_from_outputs() -> None:
    outputs = {**OUTPUTS, "mlflow_url": "http://localhost:5001", "jupyter_token": "T" * 48}
    argv = fab_argv(outputs, [], "fab")
    assert argv[-1] == "--mlflow" and "T" * 48 not in " ".join(argv)
    assert token_env(outputs) == {"WORKBENCH_JUPYTER_TOKEN": "T" * 48}
    assert token_env({**OUTPUTS, "jupyter_token": "[secret]"}) == {}
    assert "--mlflow" not in fab_argv({**OUTPUTS, "mlflow_url": ""}, [], "fab")
    # fab runs from the repository root: a relative requirements file is made absolute.
    argv = fab_argv(OUTPUTS, ["--requirements", "req.txt", "--pip", "rich"], "fab")
    assert argv[-4:] == ["--requirements", os.path.abspath("req.txt"), "--pip", "rich"]


def test_bad_inputs_say_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "outputs.json"
    missing.write_text(json.dumps({"public_ip": "203.0.113.7"}))
    proc = script(str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"scripts/bootstrap: {missing}: no ssh_user in the outputs "
                                   "(is the stack up? `pulumi up` first)")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert "not the JSON of `pulumi stack output --json`" in script(str(broken)).stderr
    no_cli = script("aws", env={"PATH": "/usr/bin:/bin"})
    assert no_cli.returncode == 2
    assert "needs the Pulumi CLI, which is not installed" in no_cli.stderr


def test_stack_name_asks_the_pulumi_cli(tmp_path: Path) -> None:
    """No Pulumi CLI can be installed here; a stand-in on PATH records how it is called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pulumi-args"
    (bin_dir / "pulumi").write_text(
        f"#!/bin/sh\necho \"$PWD $*\" > {log}\necho '{json.dumps({'public_ip': ''})}'\n")
    (bin_dir / "pulumi").chmod(0o755)
    proc = script("aws", env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, home=tmp_path)
    assert log.read_text().strip() == f"{REPO} stack output --json --show-secrets -s aws"
    assert proc.returncode == 2 and "stack aws: no public_ip in the outputs" in proc.stderr


@pytest.mark.slow
def test_saved_outputs_bootstrap_a_test_host(host: TestHost, tmp_path: Path) -> None:
    token = "Kq7" * 16  # as the stack's RandomPassword makes it: 48 letters and digits
    outputs = {**OUTPUTS, "public_ip": host.ip, "ssh_user": host.user,
               "container_image": STANDIN_IMAGE,
               "ssh_command": f"ssh {host.user}@{host.ip}", "jupyter_token": token}
    outputs["host_key"] = host.host_key_pub.read_text().strip()  # the stack pins its key
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(outputs, indent=2))
    saved.chmod(0o600)  # it holds the token
    plain_names(tmp_path)
    proc = script(str(saved), "-i", str(host.key_path), "--skip-check",
                  "--docker-min-free-gib", "1", home=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    known = tmp_path / ".ssh" / "known_hosts"
    fingerprint = key_fingerprint(host.host_key_pub)
    assert out.startswith(
        f"scripts/bootstrap: new host {host.ip}: ED25519 {fingerprint} added to {known} "
        "(plain; the stack's host_key)\n"
        f"scripts/bootstrap: fab -H {host.ssh_target} -i {host.key_path} bootstrap --cloud "
        f"azure --image {STANDIN_IMAGE} --host-key-fingerprint {fingerprint} --skip-check "
        "--docker-min-free-gib 1  "
        "(Jupyter token from the stack, in WORKBENCH_JUPYTER_TOKEN)\n"), out
    assert "new host" not in out.split("\n", 1)[1]  # fab found the key pinned
    # The stack's token is the container's, and is printed once: in the URL.
    assert out.count(token) == 1 and f"/lab?token={token}" in out
    assert host.out("cat /home/wb/.config/gpu-workbench/jupyter_token").strip() == token
    assert recap_counts(out)[host.ssh_target]["failed"] == 0
    # An Azure stack's OS disk has room (here: at least 1 GiB): Docker stays on it.
    assert host.docker_info()["DockerRootDir"] == "/var/lib/docker"
    assert host.out("docker inspect -f '{{.Config.Image}}' workbench").strip() == STANDIN_IMAGE


def test_stop_policy_and_data_volume_from_outputs() -> None:
    outputs = {**OUTPUTS, "autostop_minutes": 45, "data_mount": "/data",
               "data_volume_id": "vol-0abc1234def567890"}
    argv = fab_argv(outputs, [], "fab")
    task = argv[argv.index("bootstrap"):]
    assert task[task.index("--autostop-minutes") + 1] == "45"
    assert task[task.index("--data-mount") + 1] == "/data"
    assert task[task.index("--workspace") + 1] == "/data/workspace"
    mine = fab_argv(outputs, ["--workspace", "~/ws", "--autostop-minutes", "0"], "fab")
    assert mine.count("--workspace") == 1 and mine.count("--autostop-minutes") == 1
    assert "--data-mount" not in fab_argv({**OUTPUTS, "data_mount": ""}, [], "fab")
    # The stack's volume goes along, so the bootstrap uses that disk and no other ...
    assert task[task.index("--data-volume-id") + 1] == "vol-0abc1234def567890"
    # ... unless the user names a device (the two would contradict each other).
    assert "--data-volume-id" not in fab_argv(outputs, ["--data-device", "/dev/sdg"], "fab")
    assert "--data-volume-id" not in fab_argv({**OUTPUTS, "data_volume_id": ""}, [], "fab")


def test_outputs_read_from_a_stack_are_saved_private_outside_the_repository(
        tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    outputs = {**OUTPUTS, "public_ip": "127.0.0.1", "jupyter_token": "Kq7" * 16}
    (bin_dir / "pulumi").write_text(f"#!/bin/sh\necho '{json.dumps(outputs)}'\n")
    (bin_dir / "pulumi").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    proc = script("team/aws", "--wait-timeout", "1",
                  env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, home=home)
    saved = home / ".config" / "gpu-workbench" / "outputs" / "team_aws.json"
    assert (f"scripts/bootstrap: outputs of stack team/aws saved to {saved} (mode 600)"
            in proc.stderr.splitlines())
    assert json.loads(saved.read_text()) == outputs
    assert (saved.stat().st_mode & 0o777, saved.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert [p.name for p in saved.parent.iterdir()] == ["team_aws.json"]  # no temp left
    # The saved file is what a later run without the Pulumi CLI takes.
    again = script(str(saved), "--wait-timeout", "1", env={"PATH": "/usr/bin:/bin"}, home=home)
    assert "scripts/bootstrap: fab -H ubuntu@127.0.0.1" in again.stdout


def test_a_saved_outputs_file_with_secrets_must_be_private(tmp_path: Path) -> None:
    saved = tmp_path / "outputs-aws.json"
    saved.write_text(json.dumps({**OUTPUTS, "public_ip": "127.0.0.1",
                                 "jupyter_token": "Kq7" * 16}))
    saved.chmod(0o644)
    refused = script(str(saved), home=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"scripts/bootstrap: {saved} holds secrets (jupyter_token) and is readable by others "
        f"(mode 644): chmod 600 {saved}, then run again (or pass the stack's name: its "
        f"outputs are then kept in {tmp_path}/.config/gpu-workbench/outputs, mode 600)"]
    assert "fab -H" not in refused.stdout
    # Without --show-secrets the token reads "[secret]": nothing to protect.
    saved.write_text(json.dumps({**OUTPUTS, "public_ip": "127.0.0.1",
                                 "jupyter_token": "[secret]"}))
    hidden = script(str(saved), "--wait-timeout", "1", home=tmp_path)
    assert "holds secrets" not in hidden.stderr and "fab -H" in hidden.stdout


def test_saved_outputs_are_ignored_by_git() -> None:
    for name in ("outputs-aws.json", "outputs-gcp-l4.json", "aws.outputs.json"):
        proc = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO)
        assert proc.returncode == 0, f"{name} is not ignored"


def test_the_stacks_host_key_is_pinned_before_fab_runs(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    known = plain_names(tmp_path)
    pub = new_key(tmp_path, "host")
    line = pub.read_text().strip()  # "ssh-ed25519 AAAA... comment", as a stack would give it
    outputs = {**OUTPUTS, "host_key": line}
    fingerprint = key_fingerprint(pub)
    assert pin_host_key(outputs) == (f"new host 203.0.113.7: ED25519 {fingerprint} added to "
                                     f"{known} (plain; the stack's host_key)")
    assert known.read_text() == f"203.0.113.7 {' '.join(line.split()[:2])}\n"
    found = subprocess.run(["ssh-keygen", "-F", "203.0.113.7", "-f", str(known)],
                           capture_output=True, text=True).stdout
    assert "found: line 1" in found
    # Once pinned, again is a no-op; fab is told the fingerprint either way.
    assert pin_host_key(outputs) == (f"host key of 203.0.113.7 pinned already: {fingerprint} "
                                     "(the stack's)")
    argv = fab_argv({**outputs, "host_key_fingerprint": fingerprint}, [], "fab")
    assert argv[argv.index("--host-key-fingerprint") + 1] == fingerprint
    # A fingerprint alone cannot be written down: fab checks it when it meets the host.
    other = {**OUTPUTS, "public_ip": "203.0.113.8", "host_key_fingerprint": fingerprint + "="}
    assert pin_host_key(other) == (f"host key of 203.0.113.8: fab accepts only {fingerprint} "
                                   "(the stack's)")
    assert "203.0.113.8" not in known.read_text()


def test_host_key_outputs_that_make_no_sense_are_refused(tmp_path: Path) -> None:
    pub = new_key(tmp_path, "a")
    with pytest.raises(HandoffError, match="the outputs disagree: host_key is ED25519 SHA256:"):
        stack_host_key({"host_key": pub.read_text(),
                        "host_key_fingerprint": key_fingerprint(new_key(tmp_path, "b"))})
    with pytest.raises(HandoffError, match="is not an OpenSSH public host key line"):
        stack_host_key({"host_key": "ssh-ed25519 not-base64!"})
    with pytest.raises(HandoffError, match="is not a SHA256 host key fingerprint"):
        stack_host_key({"host_key_fingerprint": "MD5:16:27:ac"})
    assert stack_host_key({"host_key": "", "host_key_fingerprint": ""}) == (None, None)


def test_a_recorded_key_that_is_not_the_stacks_is_refused_before_fab(tmp_path: Path) -> None:
    known = plain_names(tmp_path)
    stale = new_key(tmp_path, "old")
    known.write_text(f"203.0.113.7 {' '.join(stale.read_text().split()[:2])}\n")
    stack = new_key(tmp_path, "new")
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps({**OUTPUTS, "host_key": stack.read_text().strip()}))
    proc = script(str(saved), home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"scripts/bootstrap: host key for 203.0.113.7 in known_hosts is ED25519 "
        f"{key_fingerprint(stale)} ({known}:1), not the stack's {key_fingerprint(stack)}; "
        f"not bootstrapping; if the VM was rebuilt, remove the stale entry: "
        f"ssh-keygen -R '203.0.113.7' -f {known}"]
    assert proc.stdout == ""  # fab never ran
    assert len(known.read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_host_that_does_not_offer_the_stacks_key_is_refused_before_login(
        bare_host: TestHost, tmp_path: Path) -> None:
    """The stack says key A; whatever answers at public_ip offers key B: an impostor."""
    before = bare_host.read_file("/home/wb/.bashrc")
    stack = new_key(tmp_path, "stack")
    for outputs in ({"host_key": stack.read_text().strip()},
                    {"host_key_fingerprint": key_fingerprint(stack)}):
        home = tmp_path / ("home-" + next(iter(outputs)))
        known = plain_names(home)
        saved = home / "outputs.json"
        saved.write_text(json.dumps({**OUTPUTS, **outputs, "public_ip": bare_host.ip,
                                     "ssh_user": bare_host.user}))
        proc = script(str(saved), "-i", str(bare_host.key_path), home=home)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        offered = key_fingerprint(bare_host.host_key_pub)
        errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
        if "host_key" in outputs:  # pinned first, so fab sees a changed key
            assert errors == [
                f"{bare_host.ssh_target}: error: host key mismatch for {bare_host.ip}: "
                f"known_hosts has ED25519 {key_fingerprint(stack)} ({known}:1), the host "
                f"offers ED25519 {offered}; stopped before logging in (no key, password or "
                f"token sent); if the machine was rebuilt, remove the stale entry: "
                f"ssh-keygen -R '{bare_host.ip}' -f {known}"]
        else:  # nothing pinned: fab meets a new host that is not the stack's
            assert errors == [
                f"{bare_host.ssh_target}: error: host key of {bare_host.ip} is not the stack's: "
                f"the stack's outputs say {key_fingerprint(stack)}, the host offers ED25519 "
                f"{offered}; stopped before logging in (nothing sent)"]
            assert not known.exists()
    assert bare_host.read_file("/home/wb/.bashrc") == before
    assert "Accepted" not in (bare_host.dir / "sshd.log").read_text()
