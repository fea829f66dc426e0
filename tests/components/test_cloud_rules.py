"""Each rule a cloud enforces at create time, refused by the plan before anything is
declared: the refusal (one line: key, value, rule, source, a working alternative) beside
its accepted neighbour. The rules and their sources live in components/catalog.py,
components/nvidia.py and components/images.py."""

from __future__ import annotations

import dataclasses

import pulumi
import pytest

from components import catalog
from stacktools.mock_engine import ProgramRun, run_program
from tests.support.stacks import stack_config


def refused(stack: str, **overrides: object) -> str:
    config = stack_config(stack, **overrides)
    run = ProgramRun(stack=stack, config=config)
    with pytest.raises(pulumi.RunError) as caught:
        run_program(config, stack, run=run)
    assert run.resources == [], "nothing is declared before validation passes"
    message = str(caught.value)
    assert "\n" not in message
    return message


def accepted(stack: str, **overrides: object) -> ProgramRun:
    return run_program(stack_config(stack, **overrides), stack)


# --- types no longer offered ------------------------------------------------------------------

def test_retired_aws_p3_is_refused_with_date_source_and_replacement() -> None:
    line = refused("aws", profile="p3.2xlarge")
    assert line.startswith("gpu-workbench:profile: 'p3.2xlarge' is no longer offered on aws: "
                           "retired 2025-12-20")
    assert "zalando-incubator/kubernetes-on-aws/pull/8685" in line  # the source, cited
    assert "use g5.2xlarge" in line and "allowRetiredProfile: true" in line
    assert accepted("aws", profile="g5.2xlarge").one("aws:ec2/instance:Instance")


def test_retired_azure_ncv3_is_refused_and_the_opt_in_builds_with_a_warning() -> None:
    line = refused("azure", profile="Standard_NC6s_v3")
    assert "retired 2025-09-30" in line and "use Standard_NC24ads_A100_v4" in line
    run = accepted("azure", profile="Standard_NC6s_v3", allowRetiredProfile=True)
    assert run.one("azure-native:compute:VirtualMachine").inputs["hardwareProfile"] == {
        "vmSize": "Standard_NC6s_v3"}
    assert any("allowRetiredProfile is true" in w for w in run.warnings)


def test_opt_in_does_not_override_a_driver_that_cannot_drive_the_gpu() -> None:
    """A P3 reservation still needs an AMI whose driver drives a V100: the OSS DLAMI's
    open kernel modules and R595 cannot; a pinned AMI of the user's own is accepted."""
    line = refused("aws", profile="p3.2xlarge", allowRetiredProfile=True)
    assert line.startswith("gpu-workbench:profile: 'p3.2xlarge' cannot be driven by aws's GPU "
                           "image dlami-base-oss-ubuntu-22.04: driver branch R595 does not drive "
                           "the NVIDIA V100 16GB (Volta): R580 is the last branch for Volta")
    assert "set gpu-workbench:machineImage" in line
    run = accepted("aws", profile="p3.2xlarge", allowRetiredProfile=True,
                   machineImage="ami-0123456789abcdef0")
    assert run.one("aws:ec2/instance:Instance").inputs["ami"] == "ami-0123456789abcdef0"


# --- shapes and counts ------------------------------------------------------------------------

def test_gcp_n1_with_one_v100_above_12_vcpus_is_refused() -> None:
    line = refused("gcp", profile="n1-standard-16-v100")
    assert line.startswith("gpu-workbench:gpuCount: 1 with profile n1-standard-16-v100 "
                           "(n1-standard-16 + NVIDIA V100 16GB) is refused by gcp: 1 GPU(s) "
                           "allow at most 12 vCPUs and 78 GB; this machine has 16 vCPUs and 60 GB")
    assert "cloud.google.com/compute/docs/gpus" in line
    assert "use gpuCount 2 or profile n1-highmem-8-v100" in line
    assert accepted("gcp", profile="n1-standard-16-v100", gpuCount=2)
    assert accepted("gcp", profile="n1-highmem-8-v100", gpuCount=1)


def test_a_gpu_count_the_type_does_not_take_is_refused() -> None:
    line = refused("azure", gpuCount=2)
    assert "is not a GPU count Standard_NC24ads_A100_v4 offers; accepted: 1" in line
    assert accepted("gcp", gpuCount=8)  # N1 attaches 8 V100s within 96 vCPUs / 624 GB


# --- how a type is sold ------------------------------------------------------------------------

def test_a3_below_8_gpus_on_demand_is_refused() -> None:
    line = refused("gcp-a100", profile="a3-highgpu-1g")
    assert line.startswith("gpu-workbench:profile: 'a3-highgpu-1g' is sold on gcp only as "
                           "spot or flex-start, not on-demand")
    assert "consumption_option_availability_by_machine_type" in line
    assert "use a2-highgpu-1g on-demand" in line
    assert accepted("gcp-a100", profile="a2-highgpu-1g")


# --- OS image and driver -------------------------------------------------------------------------

def test_a_size_the_images_driver_cannot_drive_is_refused() -> None:
    line = refused("azure", profile="Standard_NV36ads_A10_v5")
    assert "cannot be driven by azure's GPU image ngc-vmi-25.9.1-gen2" in line
    assert "only NVIDIA's GRID (vGPU) driver" in line
    assert accepted("azure", profile="Standard_NC24ads_A100_v4")


def test_undocumented_kernel_modules_on_a_v100_are_said_not_hidden() -> None:
    run = accepted("gcp")
    (warning,) = [w for w in run.warnings if "kernel modules" in w]
    assert "R580, the last branch for Volta" in warning
    assert "not documented" in warning and "check step" in warning


def test_a_container_the_images_known_driver_cannot_run_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An image documented to carry R570 cannot run a CUDA 13 container (580.65.06+)."""
    old = dataclasses.replace(catalog.os_image("aws"), driver_branch=570,
                              driver_min="570.172.08")
    monkeypatch.setattr(catalog, "os_image", lambda cloud: old)
    line = refused("aws-l4")
    assert line.startswith("gpu-workbench:containerImage: 'pytorch' cannot run on "
                           "dlami-base-oss-ubuntu-22.04")
    assert "driver 580.65.06 or newer; this host has 570.172.08" in line
    assert accepted("aws-l4", containerImage="pytorch-cuda12")


def test_a_container_whose_cuda_the_gpu_cannot_run_is_refused() -> None:
    assert "CUDA 11.4 predates the NVIDIA H100 80GB" in refused(
        "aws-h100", containerImage="clara-train")
    assert "CUDA 13 needs compute capability 7.5" in refused("gcp", containerImage="pytorch")
    assert accepted("gcp", containerImage="tensorflow1")


# --- config hygiene ---------------------------------------------------------------------------

def test_an_undeclared_key_is_refused_naming_the_nearest() -> None:
    config = stack_config("aws")
    config["gpu-workbench:autostopMinute"] = "0"
    with pytest.raises(pulumi.RunError) as caught:
        run_program(config, "aws")
    assert str(caught.value) == (
        "gpu-workbench:autostopMinute: '(set)' is not a key gpu-workbench declares in "
        "Pulumi.yaml; did you mean autostopMinutes?")
    assert accepted("aws", autostopMinutes=0).outputs["autostop_minutes"] == 0


@pytest.mark.parametrize("cidrs", [["0.0.0.0/1", "128.0.0.0/1"],
                                   ["::/1", "8000::/1"],
                                   ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"]])
def test_cidrs_that_together_cover_everything_count_as_anywhere(cidrs: list[str]) -> None:
    line = refused("aws", allowedCidrs=cidrs)
    assert "would open app ports 8888, 8890, 5000 to the whole internet (together they are" in line
    assert "allowAppPortsFromAnywhere: true" in line


def test_a_broad_range_that_is_not_everything_is_accepted() -> None:
    run = accepted("aws", allowedCidrs=["0.0.0.0/1", "128.0.0.0/2"])
    assert not any("open to" in w for w in run.warnings)


def test_no_zone_offering_the_type_fails_the_program_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a preview would see it: EC2 returns no offering for the type in the region."""
    from stacktools import mock_engine

    monkeypatch.setitem(mock_engine.INVOKE_RESULTS,
                        "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings",
                        {"id": "us-east-1", "locations": [], "instanceTypes": [],
                         "locationTypes": []})
    with pytest.raises(pulumi.RunError) as caught:
        run_program(stack_config("aws"), "aws")
    message = str(caught.value)
    assert message == ("g5.2xlarge is not offered in any zone of us-east-1 (EC2 "
                       "DescribeInstanceTypeOfferings returned none): choose another "
                       "gpu-workbench:region or profile")
