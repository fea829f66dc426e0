"""Azure (azure-native checks almost nothing itself): every input asserted here."""

from __future__ import annotations

from components import catalog
from components.azure import SELF_DEALLOCATE_ACTIONS
from stacktools.mock_engine import KNOWN_AFTER_UP
from tests.support.stacks import RunStack

VM = "azure-native:compute:VirtualMachine"
NSG = "azure-native:network:NetworkSecurityGroup"


def test_vm_size_image_and_marketplace_plan(run_stack: RunStack) -> None:
    vm = run_stack("azure").one(VM).inputs
    assert vm["hardwareProfile"] == {"vmSize": "Standard_NC24ads_A100_v4"}
    publisher, offer, sku, version = catalog.os_image("azure").lookup.split(":")
    # Gen2: NC A100 v4 and NC H100 v5 boot Gen2 images only (catalog sources).
    assert (publisher, offer, sku) == ("nvidia", "ngc_azure_17_11", "ngc-base-version-25_9_1_gen2")
    assert vm["storageProfile"]["imageReference"] == {
        "publisher": publisher, "offer": offer, "sku": sku, "version": version}
    assert vm["plan"] == {"name": sku, "product": offer, "publisher": publisher}
    os_disk = vm["storageProfile"]["osDisk"]
    assert os_disk["diskSizeGB"] == 100
    assert os_disk["createOption"] == "FromImage"
    assert os_disk["managedDisk"]["storageAccountType"] == "Premium_LRS"


def test_ssh_key_only(run_stack: RunStack) -> None:
    vm = run_stack("azure", adminUser="researcher").one(VM).inputs
    os_profile = vm["osProfile"]
    assert os_profile["adminUsername"] == "researcher"
    assert "adminPassword" not in os_profile
    linux = os_profile["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    (key,) = linux["ssh"]["publicKeys"]
    assert key["path"] == "/home/researcher/.ssh/authorized_keys"
    assert key["keyData"].startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0cqv")


def test_nsg_one_rule_per_port_restricted_to_cidrs(run_stack: RunStack) -> None:
    run = run_stack("azure", allowedCidrs=["198.51.100.7/32", "192.0.2.0/28"])
    rules = run.one(NSG).inputs["securityRules"]
    assert sorted(int(r["destinationPortRange"]) for r in rules) == [22, 5000, 8888, 8890]
    for rule in rules:
        assert (rule["direction"], rule["access"], rule["protocol"]) == (
            "Inbound", "Allow", "Tcp")
        assert rule["sourceAddressPrefixes"] == ["198.51.100.7/32", "192.0.2.0/28"]
        assert "sourceAddressPrefix" not in rule  # never "*"
    priorities = [r["priority"] for r in rules]
    assert len(set(priorities)) == len(priorities)


def test_network_wiring_static_ip_and_nsg_on_nic(run_stack: RunStack) -> None:
    run = run_stack("azure")
    ip = run.one("azure-native:network:PublicIPAddress")
    assert ip.inputs["publicIPAllocationMethod"] == "Static"
    assert ip.inputs["sku"] == {"name": "Standard"}
    nic = run.one("azure-native:network:NetworkInterface")
    assert run.one(NSG).urn in nic.source_of("networkSecurityGroup")
    assert ip.urn in nic.source_of("ipConfigurations")
    assert nic.urn in run.one(VM).source_of("networkProfile")
    group = run.named("wb-azure-rg")
    assert group.inputs["location"] == "eastus"
    data_group = run.named("wb-azure-data-rg")
    for resource in run.resources:
        if resource.type.startswith("azure-native:") and "resourceGroupName" in resource.inputs:
            expected = data_group if resource.name == "wb-azure-data" else group
            assert resource.source_of("resourceGroupName") == [expected.urn], resource.name


def test_current_gpu_stacks(run_stack: RunStack) -> None:
    run = run_stack("azure")
    assert run.outputs["hourly_cost_usd"] == 3.673
    assert not any("retired" in w for w in run.warnings)
    t4 = run_stack("azure-t4")
    assert t4.one(VM).inputs["hardwareProfile"] == {"vmSize": "Standard_NC8as_T4_v3"}
    assert t4.outputs["hourly_cost_usd"] == 0.752


def test_self_deallocate_is_a_custom_role_on_this_vm_only(run_stack: RunStack) -> None:
    run = run_stack("azure")
    role = run.one("azure-native:authorization:RoleDefinition")
    group = run.named("wb-azure-rg")
    # Read and deallocate; no runCommand (root on the host), no powerOff (still billed).
    assert role.inputs["permissions"] == [
        {"actions": list(SELF_DEALLOCATE_ACTIONS), "notActions": []}]
    assert set(SELF_DEALLOCATE_ACTIONS) == {"Microsoft.Compute/virtualMachines/read",
                                           "Microsoft.Compute/virtualMachines/deallocate/action"}
    assert role.source_of("scope") == [group.urn]
    assert role.source_of("assignableScopes") == [group.urn]
    assignment = run.one("azure-native:authorization:RoleAssignment")
    vm = run.one(VM)
    assert assignment.source_of("roleDefinitionId") == [role.urn]
    assert assignment.source_of("scope") == [vm.urn]
    assert assignment.inputs["principalType"] == "ServicePrincipal"
    assert vm.inputs["identity"] == {"type": "SystemAssigned"}


def test_a_contributor_skips_the_identity_and_is_told_the_fallback(run_stack: RunStack) -> None:
    run = run_stack("azure", azureSelfDeallocate=False)
    assert not run.of_type("azure-native:authorization:RoleDefinition")
    assert not run.of_type("azure-native:authorization:RoleAssignment")
    assert "identity" not in run.one(VM).inputs
    (warning,) = [w for w in run.warnings if "azureSelfDeallocate is false" in w]
    assert "Azure keeps billing" in warning and "azureDailyShutdown" in warning


def test_start_and_stop_commands_deallocate(run_stack: RunStack) -> None:
    outputs = run_stack("azure").outputs
    assert outputs["start_command"] == KNOWN_AFTER_UP
    assert outputs["stop_command"] == KNOWN_AFTER_UP


def test_the_host_key_reaches_the_vm_as_custom_data(run_stack: RunStack) -> None:
    run = run_stack("azure")
    key = run.one("tls:index/privateKey:PrivateKey")
    assert run.one(VM).source_of("osProfile") == [key.urn]
    assert run.outputs["host_key"] == KNOWN_AFTER_UP


def test_gcp_hands_no_private_key_to_the_metadata_server(run_stack: RunStack) -> None:
    """GCP serves user data to every process on the VM, containers included."""
    run = run_stack("gcp")
    assert not run.of_type("tls:index/privateKey:PrivateKey")
    assert "user-data" not in run.one("gcp:compute/instance:Instance").inputs["metadata"]
    assert run.outputs["host_key"] == ""
