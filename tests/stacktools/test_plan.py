"""`scripts/plan` as a user runs it: exit 0, the type, GPU, ports with CIDRs, cost."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from stacktools.mock_engine import PROJECT_DIR

# (type, GPU, cost, driver line, quota line): a type sold today in a shape the cloud
# accepts, its OS image's driver branch, the quota it consumes.
EXPECTED = {
    "aws": ("g5.2xlarge", "NVIDIA A10G 24GB", "$1.21/hour", "R595, open kernel modules",
            "L-DB2E81BA (Running On-Demand G and VT instances): 8 vCPUs in us-east-1; raise "
            "it: aws service-quotas request-service-quota-increase --service-code ec2 "
            "--quota-code L-DB2E81BA --desired-value 8 --region us-east-1"),
    "gcp": ("n1-highmem-8", "NVIDIA V100 16GB", "$2.95/hour",
            "R580, kernel-module flavour not documented",
            "NVIDIA_V100_GPUS (NVIDIA V100 GPUs): 1 GPU in us-central1"),
    "azure": ("Standard_NC24ads_A100_v4", "NVIDIA A100 80GB", "$3.67/hour",
              "driver branch not documented",
              "standardNCADSA100v4Family (Standard NCADSA100v4 Family vCPUs): 24 vCPUs in eastus"),
}


def plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROJECT_DIR / "scripts" / "plan"), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stack", sorted(EXPECTED))
def test_plan_of_each_default_stack(stack: str) -> None:
    result = plan(stack)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    machine, gpu, cost, driver, quota = EXPECTED[stack]
    assert re.search(rf"instance\s+{re.escape(machine)}: 1 x {gpu}", out)
    assert "RETIRED" not in out
    assert cost in out
    assert re.search(rf"^  driver\s+{re.escape(driver)}", out, re.M)
    assert re.search(rf"^  {re.escape(quota)}", out, re.M)
    for port in (22, 8888, 8890, 5000):
        assert re.search(rf"^\s+{port}\s+.*203\.0\.113\.7/32$", out, re.M), port
    assert re.search(r"^  public_ip\s+\(known after up\)$", out, re.M)
    assert "Resources (" in out and "Workstation  workstation" in out


def test_plan_takes_a_path_and_prints_what_the_program_declared(tmp_path) -> None:
    text = (PROJECT_DIR / "stacks" / "Pulumi.gcp-l4.yaml").read_text()
    stack = tmp_path / "Pulumi.lab.yaml"
    stack.write_text(text.replace("    - 203.0.113.7/32", "    - 198.51.100.0/24\n"
                                  "    - 192.0.2.44/32"))
    result = plan(str(stack))
    assert result.returncode == 0, result.stderr
    assert "stack 'lab'" in result.stdout
    assert re.search(r"^\s+8890\s+.*198\.51\.100\.0/24, 192\.0\.2\.44/32$", result.stdout, re.M)
    assert "g2-standard-8: 1 x NVIDIA L4 24GB" in result.stdout


def test_program_imports_only_the_chosen_cloud_sdk() -> None:
    probe = (
        "import sys\n"
        "from stacktools.mock_engine import run_program, read_stack_config, PROJECT_DIR\n"
        "run_program(read_stack_config(PROJECT_DIR / 'stacks/Pulumi.azure.yaml'), 'azure')\n"
        "clouds = ('pulumi_aws', 'pulumi_gcp', 'pulumi_azure_native')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in clouds}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['pulumi_azure_native']"
