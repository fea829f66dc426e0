"""Stopping billing and keeping data (issue 5), as the program declares it per cloud."""

from __future__ import annotations

import pulumi
import pytest

from stacktools.mock_engine import KNOWN_AFTER_UP, run_program
from stacktools.plan import kept_after_destroy, stop_policy
from tests.support.stacks import RunStack, stack_config

AWS_VOLUME = "aws:ebs/volume:Volume"
GCP_DISK = "gcp:compute/disk:Disk"
AZURE_DISK = "azure-native:compute:Disk"


def test_aws_data_volume_kept_encrypted_tagged_and_attached(run_stack: RunStack) -> None:
    run = run_stack("aws")
    volume = run.one(AWS_VOLUME)
    assert volume.retain_on_delete is True
    assert (volume.inputs["size"], volume.inputs["type"], volume.inputs["encrypted"]) == (
        200, "gp3", True)
    assert volume.inputs["tags"]["stack"] == "aws"
    subnet = run.one("aws:ec2/subnet:Subnet")
    assert volume.inputs["availabilityZone"] == subnet.inputs["availabilityZone"]
    attach = run.one("aws:ec2/volumeAttachment:VolumeAttachment")
    assert attach.source_of("volumeId") == [volume.urn]
    assert attach.source_of("instanceId") == [run.one("aws:ec2/instance:Instance").urn]
    assert run.outputs["data_volume_id"] == KNOWN_AFTER_UP
    assert run.outputs["data_volume_kept"] is True and run.outputs["data_mount"] == "/data"


def test_aws_poweroff_stops_rather_than_terminates(run_stack: RunStack) -> None:
    vm = run_stack("aws").one("aws:ec2/instance:Instance").inputs
    assert vm["instanceInitiatedShutdownBehavior"] == "stop"


def test_aws_reattach_a_kept_volume_in_its_zone(run_stack: RunStack) -> None:
    run = run_stack("aws", dataVolumeId="vol-0abc1234def567890")
    assert not run.of_type(AWS_VOLUME)
    attach = run.one("aws:ec2/volumeAttachment:VolumeAttachment")
    assert attach.inputs["volumeId"] == "vol-0abc1234def567890"
    (lookup,) = run.invokes_of("aws:ebs/getVolume:getVolume")
    assert lookup.args["filters"] == [{"name": "volume-id", "values": ["vol-0abc1234def567890"]}]
    assert run.outputs["data_volume_id"] == "vol-0abc1234def567890"


def test_data_volume_not_kept_when_the_stack_says_so(run_stack: RunStack) -> None:
    for stack, kind in (("aws", AWS_VOLUME), ("gcp", GCP_DISK), ("azure", AZURE_DISK)):
        run = run_stack(stack, keepDataVolume=False)
        assert run.one(kind).retain_on_delete is False
        assert run.outputs["data_volume_kept"] is False


def test_no_data_volume(run_stack: RunStack) -> None:
    run = run_stack("gcp", dataVolumeGb=0)
    assert not run.of_type(GCP_DISK) and not run.of_type("gcp:compute/attachedDisk:AttachedDisk")
    assert run.outputs["data_mount"] == ""
    assert kept_after_destroy(run, "gcp").monthly_usd == 0


def test_gcp_disk_kept_and_instance_leaves_attachment_alone(run_stack: RunStack) -> None:
    run = run_stack("gcp")
    disk = run.one(GCP_DISK)
    assert disk.retain_on_delete and disk.inputs["size"] == 200
    assert disk.inputs["zone"] == "us-central1-a"
    assert disk.inputs["labels"]["stack"] == "gcp"
    attach = run.one("gcp:compute/attachedDisk:AttachedDisk")
    assert attach.source_of("disk") == [disk.urn]
    assert attach.inputs["deviceName"] == "workbench-data"
    assert "attachedDisks" in run.one("gcp:compute/instance:Instance").ignore_changes


def test_gcp_reattach_must_match_the_zone(run_stack: RunStack) -> None:
    disk = "projects/lab/zones/us-central1-a/disks/wb-gcp-data-1a2b3c"
    run = run_stack("gcp", dataVolumeId=disk)
    assert run.one("gcp:compute/attachedDisk:AttachedDisk").inputs["disk"] == disk
    with pytest.raises(pulumi.RunError, match=r"dataVolumeId.*is in zone us-east1-b"):
        run_program(stack_config(
            "gcp", dataVolumeId="projects/lab/zones/us-east1-b/disks/d"), "gcp")


def test_azure_kept_disk_lives_outside_the_deleted_group(run_stack: RunStack) -> None:
    run = run_stack("azure")
    disk = run.one(AZURE_DISK)
    data_group = run.named("wb-azure-data-rg")
    assert disk.retain_on_delete and data_group.retain_on_delete
    assert disk.source_of("resourceGroupName") == [data_group.urn]
    assert not run.named("wb-azure-rg").retain_on_delete
    assert disk.inputs["creationData"] == {"createOption": "Empty"}
    assert disk.inputs["diskSizeGB"] == 200
    vm = run.one("azure-native:compute:VirtualMachine")
    (data_disk,) = vm.inputs["storageProfile"]["dataDisks"]
    assert (data_disk["lun"], data_disk["createOption"], data_disk["deleteOption"]) == (
        0, "Attach", "Detach")
    assert disk.urn in vm.source_of("storageProfile")


def test_azure_deallocates_itself_through_its_identity(run_stack: RunStack) -> None:
    run = run_stack("azure")
    vm = run.one("azure-native:compute:VirtualMachine")
    assert vm.inputs["identity"] == {"type": "SystemAssigned"}
    role = run.one("azure-native:authorization:RoleAssignment")
    assert role.source_of("scope") == [vm.urn]  # this VM, nothing wider
    assert role.inputs["principalType"] == "ServicePrincipal"
    assert any("deallocate" in line for line in stop_policy(run, "azure"))
    off = run_stack("azure", autostopMinutes=0)
    assert not off.of_type("azure-native:authorization:RoleAssignment")
    assert "identity" not in off.one("azure-native:compute:VirtualMachine").inputs


def test_azure_daily_shutdown_schedule(run_stack: RunStack) -> None:
    run = run_stack("azure", azureDailyShutdown="22:30")
    schedule = run.one("azure-native:devtestlab:GlobalSchedule").inputs
    assert schedule["taskType"] == "ComputeVmShutdownTask"
    assert schedule["dailyRecurrence"] == {"time": "2230"}
    assert schedule["timeZoneId"] == "UTC" and schedule["status"] == "Enabled"
    with pytest.raises(pulumi.RunError, match=r"azureDailyShutdown.*azure stacks only"):
        run_program(stack_config("aws", azureDailyShutdown="22:30"), "aws")
    with pytest.raises(pulumi.RunError, match="azureDailyShutdown: '25:00'"):
        run_program(stack_config("azure", azureDailyShutdown="25:00"), "azure")


def test_buckets_are_private_and_encrypted(run_stack: RunStack) -> None:
    aws = run_stack("aws", datasetBucket=True)
    bucket = aws.one("aws:s3/bucket:Bucket")
    assert bucket.retain_on_delete and bucket.inputs["forceDestroy"] is False
    block = aws.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                          "ignorePublicAcls", "restrictPublicBuckets"))
    sse = aws.one("aws:s3/bucketServerSideEncryptionConfiguration:"
                  "BucketServerSideEncryptionConfiguration").inputs
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    assert aws.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs[
        "rule"] == {"objectOwnership": "BucketOwnerEnforced"}

    gcp = run_stack("gcp", datasetBucket=True, keepDatasetBucket=False).one(
        "gcp:storage/bucket:Bucket")
    assert gcp.inputs["publicAccessPrevention"] == "enforced"
    assert gcp.inputs["uniformBucketLevelAccess"] is True
    assert gcp.inputs["forceDestroy"] is True and not gcp.retain_on_delete

    azure = run_stack("azure", datasetBucket=True)
    account = azure.one("azure-native:storage:StorageAccount").inputs
    assert account["allowBlobPublicAccess"] is False
    assert account["enableHttpsTrafficOnly"] is True
    assert account["encryption"]["services"]["blob"]["enabled"] is True
    container = azure.one("azure-native:storage:BlobContainer")
    assert container.inputs["publicAccess"] == "None" and container.retain_on_delete


def test_plan_prints_kept_volume_policy_and_monthly_cost(run_stack: RunStack) -> None:
    expected = {"aws": 16.00, "gcp": 20.00, "azure": 29.70}
    for stack, monthly in expected.items():
        run = run_stack(stack)
        kept = kept_after_destroy(run, stack)  # type: ignore[arg-type]
        assert kept.monthly_usd == monthly
        assert any("KEPT by `pulumi destroy`" in line for line in kept.lines)
        assert "autostop after 60 idle minutes" in stop_policy(run, stack)[0]  # type: ignore[arg-type]
    off = run_stack("aws", autostopMinutes=0)
    assert "autostop off" in stop_policy(off, "aws")[0]


def test_plan_says_a_reattached_volume_is_left_alone(run_stack: RunStack) -> None:
    for stack, volume in (("aws", "vol-0abc1234def567890"),
                          ("azure", "/subscriptions/s/resourceGroups/wb-data/providers/"
                                    "Microsoft.Compute/disks/wb-azure-data")):
        kept = kept_after_destroy(run_stack(stack, dataVolumeId=volume), stack)  # type: ignore[arg-type]
        assert kept.lines[0].startswith(f"data volume {volume}: re-attached at /data")
        assert kept.monthly_usd == 0
