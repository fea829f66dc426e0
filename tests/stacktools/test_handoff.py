"""scripts/bootstrap: a stack's outputs in, a bootstrap of that host out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from stacktools.handoff import HandoffError, fab_argv, identity_from_ssh_command, token_env
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
    full = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    if home is not None:
        full["HOME"] = str(home)
    full.update(env or {})
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=full,
                          timeout=180, cwd="/")


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
    proc = script("aws", env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert log.read_text().strip() == f"{REPO} stack output --json --show-secrets -s aws"
    assert proc.returncode == 2 and "stack aws: no public_ip in the outputs" in proc.stderr


@pytest.mark.slow
def test_saved_outputs_bootstrap_a_test_host(host: TestHost, tmp_path: Path) -> None:
    token = "Kq7" * 16  # as the stack's RandomPassword makes it: 48 letters and digits
    outputs = {**OUTPUTS, "public_ip": host.ip, "ssh_user": host.user,
               "container_image": STANDIN_IMAGE,
               "ssh_command": f"ssh {host.user}@{host.ip}", "jupyter_token": token}
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(outputs, indent=2))
    proc = script(str(saved), "-i", str(host.key_path), "--skip-check", home=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.startswith(f"scripts/bootstrap: fab -H {host.ssh_target} -i {host.key_path} "
                          f"bootstrap --cloud azure --image {STANDIN_IMAGE} --skip-check  "
                          "(Jupyter token from the stack, in WORKBENCH_JUPYTER_TOKEN)\n")
    # The stack's token is the container's, and is printed once: in the URL.
    assert out.count(token) == 1 and f"/lab?token={token}" in out
    assert host.out("cat /home/wb/.config/gpu-workbench/jupyter_token").strip() == token
    assert recap_counts(out)[host.ssh_target]["failed"] == 0
    assert host.docker_info()["DockerRootDir"] == "/mnt/docker"
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
