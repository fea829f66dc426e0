"""scripts/up and scripts/down up to the Pulumi boundary.

The Pulumi CLI cannot run here, so a stand-in `pulumi` on PATH records what it is
asked and answers as the CLI documents: `stack output --json --show-secrets` prints
the outputs object, a failing `up`/`destroy` exits non-zero. Everything on our side
of it is real: the offline plan, the confirmation, the saved outputs, the ssh entry
(read back by `ssh -G`), the bootstrap of a real test host, the teardown report."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.stacktools.test_handoff import plain_names
from tests.stacktools.test_ssh_config import ssh_g
from tests.support.bootstrap_run import REPO, STANDIN_IMAGE, recap_counts
from tests.support.testhosts import TestHost


def standin_pulumi(tmp: Path, outputs: dict[str, object], *, fail: str = "") -> Path:
    """A `pulumi` that logs its argv and serves `outputs`; `fail` names a verb that fails."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp / "outputs.json").write_text(json.dumps(outputs))
    (tmp / "export.json").write_text(json.dumps(
        {"version": 3, "deployment": {"resources": [
            {"urn": "urn:pulumi:x::gpu-workbench::pulumi:pulumi:Stack::x", "custom": False,
             "type": "pulumi:pulumi:Stack", "outputs": outputs}]}}))
    script = bin_dir / "pulumi"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {tmp}/calls
[ "$1" = {fail or "none"} ] && {{ echo "error: the cloud said no" >&2; exit 255; }}
case "$1 $2" in
  "stack output") cat {tmp}/outputs.json ;;
  "stack export") cat {tmp}/export.json ;;
esac
exit 0
""")
    script.chmod(0o755)
    return bin_dir


def run(command: str, *args: str, tmp: Path, path: Path | None = None,
        stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env.update(HOME=str(tmp), XDG_CONFIG_HOME=str(tmp / ".config"),
               PATH=f"{path}:{env['PATH']}" if path else "/usr/local/bin:/usr/bin:/bin")
    return subprocess.run([str(REPO / "scripts" / command), *args], capture_output=True,
                          text=True, env=env, timeout=300, input=stdin, cwd="/")


def calls(tmp: Path) -> list[str]:
    return (tmp / "calls").read_text().splitlines() if (tmp / "calls").exists() else []


def test_without_the_cli_up_and_down_say_so_in_one_line(tmp_path: Path) -> None:
    for command in ("up", "down"):
        proc = run(command, "aws", tmp=tmp_path)
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1
        assert "needs the Pulumi CLI, which is not installed; install it: curl -fsSL " \
               "https://get.pulumi.com | sh" in proc.stderr


def test_up_asks_first_and_builds_nothing_without_a_yes(tmp_path: Path) -> None:
    bin_dir = standin_pulumi(tmp_path, {})
    proc = run("up", "aws", tmp=tmp_path, path=bin_dir, stdin="y\n")  # not a terminal: no
    assert proc.returncode == 2
    assert "g5.2xlarge: 1 x NVIDIA A10G 24GB" in proc.stdout  # the plan, shown first
    assert "scripts/up: not built (answer y, or pass --yes)" in proc.stderr
    assert calls(tmp_path) == []


def test_a_failed_up_stops_before_anything_else(tmp_path: Path) -> None:
    bin_dir = standin_pulumi(tmp_path, {}, fail="up")
    proc = run("up", "aws", "--yes", tmp=tmp_path, path=bin_dir)
    assert proc.returncode == 2
    assert "pulumi up --stack aws --yes --skip-preview failed (exit 255)" in proc.stderr
    assert calls(tmp_path) == ["stack select --create aws", "up --stack aws --yes --skip-preview"]
    assert not (tmp_path / ".config" / "gpu-workbench" / "outputs").exists()


def test_a_plan_the_cloud_would_refuse_never_reaches_pulumi(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.p3.yaml"
    stack.write_text((REPO / "stacks" / "Pulumi.aws.yaml").read_text().replace(
        "profile: g5.2xlarge", "profile: p3.2xlarge"))
    bin_dir = standin_pulumi(tmp_path, {})
    proc = run("up", str(stack), "--yes", tmp=tmp_path, path=bin_dir)
    assert proc.returncode == 2
    assert "the plan refuses it: gpu-workbench:profile: 'p3.2xlarge' is no longer offered" in (
        proc.stderr)
    assert calls(tmp_path) == []


@pytest.mark.slow
def test_up_then_down_on_a_real_host(host: TestHost, tmp_path: Path) -> None:
    token = "Zr4" * 16
    outputs = {"cloud": "aws", "public_ip": host.ip, "ssh_user": host.user,
               "container_image": STANDIN_IMAGE, "ssh_command": f"ssh {host.user}@{host.ip}",
               "tunnel_command": f"ssh -N -L 8888:localhost:8888 -L 8890:localhost:8890 "
                                 f"-L 5000:localhost:5000 {host.user}@{host.ip}",
               "jupyter_token": token, "host_key": host.host_key_pub.read_text().strip(),
               "data_volume_id": "", "autostop_minutes": 0}
    bin_dir = standin_pulumi(tmp_path, outputs)
    known = plain_names(tmp_path)
    proc = run("up", "aws", "--yes", "--ssh-config", "yes", "-i", str(host.key_path),
               "--skip-check", tmp=tmp_path, path=bin_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert calls(tmp_path) == [
        "stack select --create aws", "up --stack aws --yes --skip-preview",
        "stack output --json --show-secrets --stack aws"]
    saved = tmp_path / ".config" / "gpu-workbench" / "outputs" / "aws.json"
    assert json.loads(saved.read_text())["jupyter_token"] == token
    assert saved.stat().st_mode & 0o777 == 0o600
    assert f"scripts/up: ssh entry wb-aws in {tmp_path}/.ssh/gpu-workbench/config" in out
    assert recap_counts(out)[host.ssh_target]["failed"] == 0
    assert out.count(token) == 1  # printed once, in the URL
    login = ssh_g(tmp_path, "wb-aws")
    assert login["hostname"] == [host.ip] and login["user"] == [host.user]
    assert ssh_g(tmp_path, "wb-aws-tunnel")["localforward"]
    assert host.ip in known.read_text()

    down = run("down", "aws", "--yes", tmp=tmp_path, path=bin_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "teardown report for stack 'aws'" in down.stdout
    assert "scripts/down: removed ssh entry wb-aws" in down.stdout
    assert not saved.exists()
    assert host.ip not in known.read_text()
    assert calls(tmp_path)[-3:] == ["stack export -s aws", "destroy -s aws --yes",
                                    "stack export -s aws"]


def test_a_failed_destroy_keeps_the_entries(tmp_path: Path) -> None:
    bin_dir = standin_pulumi(tmp_path, {"cloud": "aws"}, fail="destroy")
    outputs_dir = tmp_path / ".config" / "gpu-workbench" / "outputs"
    outputs_dir.mkdir(parents=True)
    (outputs_dir / "aws.json").write_text("{}")
    proc = run("down", "aws", "--yes", tmp=tmp_path, path=bin_dir)
    assert proc.returncode == 1
    assert "did not finish" in proc.stderr
    assert (outputs_dir / "aws.json").exists()
