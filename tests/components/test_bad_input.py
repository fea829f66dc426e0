"""Bad stack config: one line naming the key, the value and what is accepted; nothing declared."""

from __future__ import annotations

import subprocess

import pulumi
import pytest

from stacktools.mock_engine import PROJECT_DIR, ProgramRun, run_program
from tests.support.stacks import stack_config

GOOD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0cqv/1My5bSWFzNkRvjVZUx96tdsPv+pZy8ewiZSXm me@x"

CASES = [
    # (stack, overrides, config key named, fragments the message must hold)
    ("aws", {"cloud": "oracle"}, "cloud", ["'oracle'", "aws, gcp, azure"]),
    ("aws", {"profile": "p9.mega"}, "profile", ["'p9.mega'", "g6.2xlarge"]),
    ("aws", {"profile": "g2-standard-8"}, "profile", ["gcp profile", "not offered on aws"]),
    ("azure", {"profile": "p3.2xlarge"}, "profile", ["aws profile", "Standard_NC6s_v3"]),
    ("aws", {"gpuCount": 4}, "gpuCount", ["4", "g5.2xlarge", "accepted: 1"]),
    ("gcp", {"gpuCount": 3}, "gpuCount", ["3", "accepted: 1, 2, 4, 8"]),
    ("aws", {"gpuCount": "two"}, "gpuCount", ["'two'", "whole number"]),
    ("aws", {"allowedCidrs": ["10.0.0.300/32"]}, "allowedCidrs", ["'10.0.0.300/32'", "CIDR"]),
    ("aws", {"allowedCidrs": ["10.1.2.3/24"]}, "allowedCidrs",
     ["'10.1.2.3/24'", "did you mean 10.1.2.0/24"]),
    ("aws", {"allowedCidrs": []}, "allowedCidrs", ["[]", "at least one CIDR"]),
    ("aws", {"allowedCidrs": None}, "allowedCidrs", ["(not set)", "must be set"]),
    ("gcp", {"allowedCidrs": "203.0.113.7/32"}, "allowedCidrs", ["not a list"]),
    ("aws", {"openPorts": [22, 70000]}, "openPorts", ["70000", "1 to 65535"]),
    ("aws", {"openPorts": [22, 0]}, "openPorts", ["0", "1 to 65535"]),
    ("aws", {"openPorts": [8888]}, "openPorts", ["must include 22"]),
    ("aws", {"sshPublicKey": None}, "sshPublicKey", ["(not set)", "~/.ssh/id_ed25519.pub"]),
    ("aws", {"sshPublicKey": "~/.ssh/does-not-exist.pub"}, "sshPublicKey",
     ["does-not-exist.pub", "neither a public key nor a readable file"]),
    ("aws", {"sshPublicKey": "ssh-ed25519 not*base64"}, "sshPublicKey", ["not base64"]),
    ("aws", {"sshPublicKey": "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"}, "sshPublicKey",
     ["is damaged", "not a ssh-ed25519 key"]),
    ("aws", {"sshPublicKey": "ssh-dss AAAA x"}, "sshPublicKey", ["neither a public key"]),
    ("aws", {"allowedCidrs": ["0.0.0.0/0"]}, "allowedCidrs",
     ["'0.0.0.0/0'", "8888, 8890, 5000", "allowAppPortsFromAnywhere: true"]),
    ("azure", {"allowedCidrs": ["::/0"]}, "allowedCidrs", ["'::/0'", "allowAppPortsFromAnywhere"]),
    ("aws", {"allowAppPortsFromAnywhere": "yes"}, "allowAppPortsFromAnywhere",
     ["'yes'", "true, false"]),
    ("aws", {"rootDiskGb": 10}, "rootDiskGb", ["10", "50 to 16384"]),
    ("aws", {"adminUser": "alice"}, "adminUser", ["'alice'", "logs in as ubuntu"]),
    ("azure", {"adminUser": "admin"}, "adminUser", ["reserved on Azure"]),
    ("azure", {"adminUser": "Bad User"}, "adminUser", ["not a Linux user name"]),
    ("gcp", {"gcpOsLoginAccount": None}, "gcpOsLoginAccount", ["Google account"]),
    ("aws", {"gcpOsLoginAccount": "me@x.org"}, "gcpOsLoginAccount", ["gcp stacks only"]),
    ("gcp", {"zone": "europe-west4-a"}, "zone", ["not a zone of region us-central1"]),
    ("aws", {"region": "US East"}, "region", ["not a region name on aws"]),
    ("aws", {"tags": ["owner"]}, "tags", ["'owner'", "key=value"]),
    ("aws", {"tags": ["stack=other"]}, "tags", ["overrides a tag"]),
    ("aws", {"containerImage": "not an image"}, "containerImage", ["image reference"]),
    ("azure", {"machineImage": "nvidia:offer"}, "machineImage", ["publisher:offer:sku:version"]),
    ("aws", {"dataVolumeGb": 5}, "dataVolumeGb", ["5", "0 (no data volume) or 10"]),
    ("aws", {"dataVolumeId": "disk-123"}, "dataVolumeId", ["'disk-123'", "vol-0123456789abcdef0"]),
    ("azure", {"dataVolumeId": "vol-0abc1234def567890"}, "dataVolumeId",
     ["not a azure disk ID", "/subscriptions/SUB"]),
    ("aws", {"autostopMinutes": -5}, "autostopMinutes", ["-5", "0 (off) to 10080"]),
    ("aws", {"keepDataVolume": "maybe"}, "keepDataVolume", ["'maybe'", "true, false"]),
]


@pytest.mark.parametrize(("stack", "overrides", "key", "fragments"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_value_is_one_line_naming_the_key(
    stack: str, overrides: dict[str, object], key: str, fragments: list[str]
) -> None:
    config = stack_config(stack, **overrides)
    run = ProgramRun(stack=stack, config=config)
    with pytest.raises(pulumi.RunError) as caught:
        run_program(config, stack, run=run)
    message = str(caught.value)
    assert message.startswith(f"gpu-workbench:{key}: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert run.resources == []  # validation happens before any resource is declared


def test_private_key_file_is_refused(tmp_path) -> None:
    path = tmp_path / "id_ed25519"
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
                    "-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(pulumi.RunError, match=r"is a private key; give the \.pub file"):
        run_program(stack_config("aws", sshPublicKey=str(path)), "aws")


def test_anywhere_with_opt_in_builds_and_warns() -> None:
    run = run_program(stack_config(
        "aws", allowedCidrs=["0.0.0.0/0"], allowAppPortsFromAnywhere=True), "aws")
    assert any("app ports 8888, 8890, 5000 are open to 0.0.0.0/0" in w for w in run.warnings)
    ssh_only = run_program(stack_config(
        "aws", allowedCidrs=["0.0.0.0/0"], openPorts=[22]), "aws")
    assert any("SSH (22) is open to 0.0.0.0/0" in w for w in ssh_only.warnings)


def test_plan_exits_nonzero_with_one_line_and_no_traceback(tmp_path) -> None:
    text = (PROJECT_DIR / "stacks" / "Pulumi.aws.yaml").read_text()
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(text.replace("203.0.113.7/32", "203.0.113.999/32"))
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "plan"), str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: gpu-workbench:allowedCidrs: '203.0.113.999/32' ")
    assert "Traceback" not in result.stderr


def test_plan_names_the_stacks_when_one_is_missing() -> None:
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "plan"), "nope"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no stack file" in result.stderr
    assert "aws, aws-h100, aws-l4, aws-spot, azure, azure-spot, azure-t4, gcp" in result.stderr


def test_up_refuses_the_example_values(monkeypatch) -> None:
    """`pulumi up` (not a preview) must not build with the shipped example key or CIDR."""
    from pathlib import Path

    from components.spec import SpecError, load_spec

    config = stack_config("aws")

    def get(key: str) -> str | None:
        return config.get(f"gpu-workbench:{key}")

    with pytest.raises(SpecError, match=r"sshPublicKey.*example value"):
        load_spec(get, stack="aws", project_dir=Path("."), deploying=True)
    config["gpu-workbench:sshPublicKey"] = GOOD_KEY
    with pytest.raises(SpecError, match=r"allowedCidrs.*documentation range"):
        load_spec(get, stack="aws", project_dir=Path("."), deploying=True)
    config["gpu-workbench:allowedCidrs"] = '["130.60.0.0/16"]'
    spec = load_spec(get, stack="aws", project_dir=Path("."), deploying=True)
    assert spec.allowed_cidrs == ("130.60.0.0/16",)
