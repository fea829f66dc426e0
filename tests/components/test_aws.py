"""AWS: every input that decides what gets built, as the program declares it."""

from __future__ import annotations

import pytest

from components import catalog
from components.aws import first_zone
from stacktools.mock_engine import KNOWN_AFTER_UP
from tests.support.stacks import RunStack

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
INSTANCE = "aws:ec2/instance:Instance"


def test_instance_type_image_disk_and_imdsv2(run_stack: RunStack) -> None:
    run = run_stack("aws")
    vm = run.one(INSTANCE).inputs
    assert vm["instanceType"] == "g5.2xlarge"
    assert vm["ami"] == KNOWN_AFTER_UP  # from the lookup below, never invented
    assert vm["metadataOptions"]["httpTokens"] == "required"
    assert vm["metadataOptions"]["httpEndpoint"] == "enabled"
    # 1: the host reaches IMDS, a container (one hop more) does not.
    assert vm["metadataOptions"]["httpPutResponseHopLimit"] == 1
    disk = vm["rootBlockDevice"]
    assert (disk["volumeType"], disk["volumeSize"], disk["encrypted"]) == ("gp3", 100, True)
    assert vm["tags"]["project"] == "gpu-workbench" and vm["tags"]["stack"] == "aws"


def test_ami_comes_from_the_dlami_ssm_parameter_for_the_gpu(run_stack: RunStack) -> None:
    run = run_stack("aws")
    (lookup,) = run.invokes_of("aws:ssm/getParameter:getParameter")
    # AWS's documented public parameter for the OSS-driver DLAMI (catalog sources).
    assert lookup.args["name"] == (
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/"
        "latest/ami-id")
    assert lookup.args["name"] == catalog.os_image("aws").lookup
    assert run.outputs["machine_image"] == KNOWN_AFTER_UP


def test_a_pinned_ami_is_used_as_is_and_looked_up_nowhere(run_stack: RunStack) -> None:
    run = run_stack("aws", machineImage="ami-0123456789abcdef0")
    assert run.one(INSTANCE).inputs["ami"] == "ami-0123456789abcdef0"
    assert not run.invokes_of("aws:ssm/getParameter:getParameter")
    assert run.outputs["machine_image"] == "ami-0123456789abcdef0"
    assert any("machineImage ami-0123456789abcdef0: its NVIDIA driver" in w
               for w in run.warnings)


def test_no_zone_offering_the_type_is_one_line() -> None:
    import pulumi

    with pytest.raises(pulumi.RunError) as caught:
        first_zone([], "g5.2xlarge", "us-east-1")
    message = str(caught.value)
    assert "\n" not in message
    assert "g5.2xlarge is not offered in any zone of us-east-1" in message
    assert "gpu-workbench:region" in message
    assert first_zone(["us-east-1c", "us-east-1a"], "g5.2xlarge", "us-east-1") == "us-east-1a"


def test_start_and_stop_commands_are_the_aws_cli_for_this_instance(run_stack: RunStack) -> None:
    outputs = run_stack("aws").outputs
    # The instance ID exists only after up: the command is known then, never guessed.
    assert outputs["start_command"] == KNOWN_AFTER_UP
    assert outputs["stop_command"] == KNOWN_AFTER_UP


def test_zone_comes_from_offerings_unless_set(run_stack: RunStack) -> None:
    run = run_stack("aws")
    (offerings,) = run.invokes_of(
        "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings")
    assert offerings.args["filters"] == [{"name": "instance-type", "values": ["g5.2xlarge"]}]
    pinned = run_stack("aws", zone="us-east-1c")
    assert pinned.one("aws:ec2/subnet:Subnet").inputs["availabilityZone"] == "us-east-1c"
    assert not pinned.invokes_of("aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings")


def test_one_ingress_rule_per_port_and_cidr(run_stack: RunStack) -> None:
    cidrs = ["198.51.100.23/32", "2001:db8:1::/48"]
    run = run_stack("aws", allowedCidrs=cidrs)
    opened = [
        (r.inputs["fromPort"], r.inputs["toPort"], r.inputs["ipProtocol"],
         r.inputs.get("cidrIpv4"), r.inputs.get("cidrIpv6"))
        for r in run.of_type(INGRESS)
    ]
    expected = (
        [(p, p, "tcp", "198.51.100.23/32", None) for p in (22, 8888, 8890, 5000)]
        + [(p, p, "tcp", None, "2001:db8:1::/48") for p in (22, 8888, 8890, 5000)]
    )
    assert len(opened) == len(expected) and set(opened) == set(expected)
    group = run.one("aws:ec2/securityGroup:SecurityGroup")
    assert all(r.source_of("securityGroupId") == [group.urn] for r in run.of_type(INGRESS))
    assert run.one(INSTANCE).source_of("vpcSecurityGroupIds") == [group.urn]


def test_egress_allows_downloads_only_outbound(run_stack: RunStack) -> None:
    egress = run_stack("aws").one(
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule").inputs
    assert (egress["ipProtocol"], egress["cidrIpv4"]) == ("-1", "0.0.0.0/0")


def test_key_pair_carries_the_users_public_key(run_stack: RunStack, tmp_path) -> None:
    key = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHXk6m0EjpgxEbTKcOO7flXvS0Ch6l6qo8vBqlQnQ8vP "
           "alice@lab")
    path = tmp_path / "id.pub"
    path.write_text(key + "\n")
    run = run_stack("aws", sshPublicKey=str(path))
    assert run.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"] == key
    assert run.outputs["ssh_user"] == "ubuntu"


def test_region_goes_to_the_provider(run_stack: RunStack) -> None:
    run = run_stack("aws", region="eu-west-1")
    assert run.one("pulumi:providers:aws").inputs["region"] == "eu-west-1"


def test_outputs_never_invent_cloud_values(run_stack: RunStack) -> None:
    outputs = run_stack("aws").outputs
    assert outputs["public_ip"] == KNOWN_AFTER_UP
    assert outputs["ssh_command"] == KNOWN_AFTER_UP
    assert outputs["hourly_cost_usd"] == 1.212
    assert outputs["instance_type"] == "g5.2xlarge"
    assert outputs["gpu"] == "1 x NVIDIA A10G 24GB"


def test_jupyter_token_is_generated_once_and_secret(run_stack: RunStack) -> None:
    from stacktools.mock_engine import SECRET

    run = run_stack("aws")
    token = run.one("random:index/randomPassword:RandomPassword").inputs
    assert (token["length"], token["special"]) == (48, False)
    assert run.outputs["jupyter_token"] == SECRET


def test_the_host_key_is_the_stacks_and_reaches_the_machine_by_user_data(
        run_stack: RunStack) -> None:
    run = run_stack("aws")
    key = run.one("tls:index/privateKey:PrivateKey")
    assert key.inputs["algorithm"] == "ED25519"
    # User data (cloud-init) is built from the key: its only source.
    assert run.one(INSTANCE).source_of("userData") == [key.urn]
    assert run.outputs["host_key"] == KNOWN_AFTER_UP  # generated at up, then pinned
    assert run.outputs["host_key_fingerprint"] == KNOWN_AFTER_UP
