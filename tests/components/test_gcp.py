"""GCP: machine, accelerator, image, OS Login, firewall sources, as declared."""

from __future__ import annotations

from components.gcp import NVIDIA_VMI
from stacktools.mock_engine import KNOWN_AFTER_UP
from tests.support.stacks import RunStack

INSTANCE = "gcp:compute/instance:Instance"
FIREWALL = "gcp:compute/firewall:Firewall"


def test_n1_with_attached_v100(run_stack: RunStack) -> None:
    vm = run_stack("gcp").one(INSTANCE).inputs
    assert vm["machineType"] == "n1-standard-16"
    assert vm["zone"] == "us-central1-a"
    assert vm["guestAccelerators"] == [{"type": "nvidia-tesla-v100", "count": 1}]
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"
    disk = vm["bootDisk"]
    assert disk["initializeParams"]["image"] == NVIDIA_VMI
    assert "nvidia" in NVIDIA_VMI and "vmi" in NVIDIA_VMI
    assert disk["initializeParams"]["size"] == 100
    assert disk["autoDelete"] is True


def test_gpu_count_reaches_the_accelerator(run_stack: RunStack) -> None:
    vm = run_stack("gcp", gpuCount=2).one(INSTANCE).inputs
    assert vm["guestAccelerators"] == [{"type": "nvidia-tesla-v100", "count": 2}]


def test_built_in_gpu_types_attach_nothing(run_stack: RunStack) -> None:
    vm = run_stack("gcp-l4").one(INSTANCE).inputs
    assert vm["machineType"] == "g2-standard-8"
    assert not vm.get("guestAccelerators")
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_os_login_on_and_key_in_the_login_profile(run_stack: RunStack) -> None:
    run = run_stack("gcp", gcpOsLoginAccount="alice.smith@uni.example.org")
    vm = run.one(INSTANCE).inputs
    assert vm["metadata"] == {"enable-oslogin": "TRUE"}
    key = run.one("gcp:oslogin/sshPublicKey:SshPublicKey").inputs
    assert key["user"] == "alice.smith@uni.example.org"
    assert key["key"].startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0cqv")
    assert run.outputs["ssh_user"] == "alice_smith_uni_example_org"


def test_firewall_sources_and_target_tags(run_stack: RunStack) -> None:
    cidrs = ["198.51.100.0/24", "192.0.2.10/32", "2001:db8::/64"]
    run = run_stack("gcp", allowedCidrs=cidrs)
    vm = run.one(INSTANCE).inputs
    network = run.one("gcp:compute/network:Network")
    assert network.inputs["autoCreateSubnetworks"] is False
    opened = []
    for rule in run.of_type(FIREWALL):
        inputs = rule.inputs
        assert inputs["direction"] == "INGRESS"
        assert inputs["targetTags"] == vm["tags"]
        assert rule.source_of("network") == [network.urn]
        (allow,) = inputs["allows"]
        assert allow["protocol"] == "tcp"
        for port in allow["ports"]:
            opened.append((int(port), tuple(inputs["sourceRanges"])))
    v4, v6 = ("198.51.100.0/24", "192.0.2.10/32"), ("2001:db8::/64",)
    assert sorted(opened) == sorted(
        [(p, v4) for p in (22, 8888, 8890, 5000)] + [(p, v6) for p in (22, 8888, 8890, 5000)]
    )


def test_static_address_is_the_nat_ip(run_stack: RunStack) -> None:
    run = run_stack("gcp")
    address = run.one("gcp:compute/address:Address")
    vm = run.one(INSTANCE)
    assert address.urn in vm.source_of("networkInterfaces")
    assert run.outputs["public_ip"] == KNOWN_AFTER_UP


def test_hourly_cost_adds_machine_and_gpus(run_stack: RunStack) -> None:
    assert run_stack("gcp").outputs["hourly_cost_usd"] == round(0.76 + 2.48, 4)
    assert run_stack("gcp", gpuCount=4).outputs["hourly_cost_usd"] == round(0.76 + 4 * 2.48, 4)
