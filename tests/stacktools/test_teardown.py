"""The teardown report, from state exports shaped like `pulumi stack export` (apitype v3)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from stacktools.mock_engine import PROJECT_DIR, run_program
from stacktools.teardown import leftovers, report
from tests.support.stacks import stack_config


def export_of(stack: str, **overrides: object) -> dict[str, Any]:
    """The state `pulumi up` would leave for this stack: the program's own resources and
    options, with made-up IDs standing in for the cloud's."""
    run = run_program(stack_config(stack, **overrides), stack)
    resources = [{
        "urn": r.urn, "custom": r.custom, "type": r.type, "id": f"id-{i}",
        "inputs": json.loads(json.dumps(r.inputs, default=str)),
        **({"retainOnDelete": True} if r.retain_on_delete else {}),
    } for i, r in enumerate(run.resources)]
    stack_resource = {"urn": f"urn:pulumi:{stack}::gpu-workbench::pulumi:pulumi:Stack::x",
                      "custom": False, "type": "pulumi:pulumi:Stack",
                      "outputs": json.loads(json.dumps(run.outputs, default=str))}
    return {"version": 3, "deployment": {"manifest": {},
                                         "resources": [stack_resource, *resources]}}


EMPTY = {"version": 3, "deployment": {"manifest": {}, "resources": []}}


def test_destroy_keeps_only_the_data_volume_and_prices_it() -> None:
    found = leftovers(export_of("aws"), EMPTY)
    assert [(f.type, f.on_purpose, f.monthly_usd) for f in found] == [
        ("aws:ebs/volume:Volume", True, 16.0)]
    text = report("aws", found, {"aws"})
    assert "kept on purpose: aws:ebs/volume:Volume wb-aws-data" in text
    assert "about $16.00/month" in text
    assert "aws resourcegroupstaggingapi get-resources --tag-filters Key=stack,Values=aws" in text


def test_not_kept_means_nothing_left() -> None:
    found = leftovers(export_of("gcp", keepDataVolume=False), EMPTY)
    assert found == []
    assert "nothing of the stack is left" in report("gcp", found, {"gcp"})


def test_a_resource_destroy_failed_to_remove_is_reported() -> None:
    before = export_of("azure")
    vm = next(r for r in before["deployment"]["resources"]
              if r["type"] == "azure-native:compute:VirtualMachine")
    after = {"version": 3, "deployment": {"resources": [vm]}}
    found = leftovers(before, after)
    assert {(f.type, f.on_purpose) for f in found} == {
        ("azure-native:compute:VirtualMachine", False),
        ("azure-native:compute:Disk", True),
        ("azure-native:resources:ResourceGroup", True),
    }
    assert "STILL EXISTS" in report("azure", found, {"azure"})


def test_a_reattached_kept_volume_is_listed_with_its_monthly_cost() -> None:
    """dataVolumeId: the disk is not the stack's, so destroy leaves it, billed; its size
    is the data_volume_gb output that up read from the cloud."""
    before = export_of("aws", dataVolumeId="vol-0abc1234def567890")
    outputs = before["deployment"]["resources"][0]["outputs"]
    assert outputs["data_volume_id"] == "vol-0abc1234def567890"
    outputs["data_volume_gb"] = 500  # as `pulumi up` reads it (getVolume's size)
    found = leftovers(before, EMPTY)
    (volume,) = found
    assert (volume.type, volume.cloud_id, volume.on_purpose, volume.monthly_usd) == (
        "data volume (re-attached)", "vol-0abc1234def567890", True, 40.0)
    text = report("aws", found, {"aws"})
    assert "500 GB disk attached by dataVolumeId" in text and "about $40.00/month" in text


def test_cli_from_a_saved_export_and_outputs(tmp_path: Path) -> None:
    state = tmp_path / "export.json"
    state.write_text(json.dumps(export_of("gcp", datasetBucket=True)))
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "teardown"), "gcp",
                             "--from-state", str(state)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "kept on purpose: gcp:compute/disk:Disk wb-gcp-data" in result.stdout
    assert "kept on purpose: gcp:storage/bucket:Bucket wb-gcp-datasets" in result.stdout
    assert "about $20.00/month plus bucket storage by use" in result.stdout

    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"cloud": "aws", "data_volume_id": "vol-0abc1234def567890",
                                   "data_volume_kept": True, "dataset_bucket": ""}))
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "teardown"), "aws",
                             "--from-outputs", str(outputs)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vol-0abc1234def567890" in result.stdout


def test_cli_errors_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "export.json"
    bad.write_text("{not json")
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "teardown"), "aws",
                             "--from-state", str(bad)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


def test_without_the_cli_it_says_what_to_do_instead() -> None:
    import shutil

    if shutil.which("pulumi"):
        import pytest

        pytest.skip("a Pulumi CLI is installed here")
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "teardown"), "aws"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Pulumi CLI is not installed" in result.stderr and "--from-state" in result.stderr


def test_a_partly_failed_destroy_still_reports_what_is_left(tmp_path: Path) -> None:
    """The Pulumi CLI cannot run here, so a stand-in on PATH answers as pulumi documents:
    `stack export` prints the state as JSON, a failed `destroy` exits non-zero and leaves
    what it could not delete in the state. The teardown's own logic is what is tested."""
    before = export_of("azure")
    vm = next(r for r in before["deployment"]["resources"]
              if r["type"] == "azure-native:compute:VirtualMachine")
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(
        {"version": 3, "deployment": {"resources": [vm]}}))
    calls = tmp_path / "calls"
    standin = tmp_path / "bin" / "pulumi"
    standin.parent.mkdir()
    standin.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$1" in
  stack) if [ -e {tmp_path}/destroyed ]; then cat {tmp_path}/after.json
         else cat {tmp_path}/before.json; fi ;;
  destroy) touch {tmp_path}/destroyed; echo "error: deleting the VM failed" >&2; exit 255 ;;
esac
""")
    standin.chmod(0o755)
    import os

    env = {**os.environ, "PATH": f"{standin.parent}:{os.environ['PATH']}"}
    result = subprocess.run([str(PROJECT_DIR / "scripts" / "teardown"), "azure", "--yes"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stderr
    assert calls.read_text().splitlines() == [
        "stack export -s azure", "destroy -s azure --yes", "stack export -s azure"]
    assert "did not finish: what it left is listed below" in result.stderr
    assert "STILL EXISTS: destroy did not remove it: azure-native:compute:VirtualMachine" in (
        result.stdout)
    assert "kept on purpose: azure-native:compute:Disk wb-azure-data" in result.stdout
