"""The workstation on Azure: NVIDIA GPU-optimized VM, static IP, NSG restricted to the CIDRs.

azure-native checks only resource_group_name itself, so the tests assert the
rest of the inputs; keep every input here explicit.
"""

from __future__ import annotations

import pulumi
from pulumi_azure_native import compute, network, resources

from components import network as rules
from components.spec import WorkstationSpec
from components.workstation import Workstation

# NVIDIA GPU-Optimized VMI from the Azure Marketplace. A Marketplace image
# needs its plan block, and its terms accepted once per subscription:
#   az vm image terms accept --urn nvidia:ngc_azure_17_11:ngc-base-version-24_03_4_gen2:latest
NVIDIA_VMI_URN = "nvidia:ngc_azure_17_11:ngc-base-version-24_03_4_gen2:latest"
VNET_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"
FIRST_RULE_PRIORITY = 1000


class AzureWorkstation(Workstation):
    def __init__(
        self, name: str, spec: WorkstationSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("azure", name, spec, opts)
        prefix = spec.name_prefix
        tags = spec.tag_dict()
        location = spec.region
        publisher, offer, sku, version = (spec.machine_image or NVIDIA_VMI_URN).split(":")
        child = self.child

        group = resources.ResourceGroup(
            f"{prefix}-rg", location=location, tags=tags, opts=child
        )
        vnet = network.VirtualNetwork(
            f"{prefix}-vnet",
            resource_group_name=group.name,
            location=location,
            address_space={"address_prefixes": [VNET_CIDR]},
            tags=tags,
            opts=child,
        )
        subnet = network.Subnet(
            f"{prefix}-subnet",
            resource_group_name=group.name,
            virtual_network_name=vnet.name,
            address_prefix=SUBNET_CIDR,
            opts=child,
        )
        nsg = network.NetworkSecurityGroup(
            f"{prefix}-nsg",
            resource_group_name=group.name,
            location=location,
            security_rules=[
                {
                    "name": f"allow-{rule.name_suffix}",
                    "description": f"{rules.port_purpose(rule.port)} from the allowed CIDRs",
                    "priority": FIRST_RULE_PRIORITY + index,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "source_address_prefixes": list(rule.cidrs),
                    "source_port_range": "*",
                    "destination_address_prefix": "*",
                    "destination_port_range": str(rule.port),
                }
                for index, rule in enumerate(rules.port_rules(spec))
            ],
            tags=tags,
            opts=child,
        )
        public_ip = network.PublicIPAddress(
            f"{prefix}-ip",
            resource_group_name=group.name,
            location=location,
            public_ip_allocation_method="Static",
            sku={"name": "Standard"},
            zones=[spec.zone] if spec.zone else None,
            tags=tags,
            opts=child,
        )
        nic = network.NetworkInterface(
            f"{prefix}-nic",
            resource_group_name=group.name,
            location=location,
            ip_configurations=[{
                "name": "primary",
                "subnet": {"id": subnet.id},
                "public_ip_address": {"id": public_ip.id},
                "private_ip_allocation_method": "Dynamic",
            }],
            network_security_group={"id": nsg.id},
            tags=tags,
            opts=child,
        )
        user = spec.ssh_user
        compute.VirtualMachine(
            f"{prefix}-vm",
            resource_group_name=group.name,
            location=location,
            hardware_profile={"vm_size": spec.profile.machine_type},
            storage_profile={
                "image_reference": {
                    "publisher": publisher, "offer": offer, "sku": sku, "version": version,
                },
                "os_disk": {
                    "create_option": "FromImage",
                    "disk_size_gb": spec.root_disk_gb,
                    "managed_disk": {"storage_account_type": "Premium_LRS"},
                    "delete_option": "Delete",
                },
            },
            # Marketplace images bill through their plan; Azure refuses the VM without it.
            plan={"name": sku, "product": offer, "publisher": publisher},
            os_profile={
                "computer_name": prefix,
                "admin_username": user,
                "linux_configuration": {
                    "disable_password_authentication": True,
                    "ssh": {"public_keys": [{
                        "path": f"/home/{user}/.ssh/authorized_keys",
                        "key_data": spec.ssh_public_key,
                    }]},
                },
            },
            network_profile={"network_interfaces": [{"id": nic.id, "primary": True}]},
            zones=[spec.zone] if spec.zone else None,
            tags=tags,
            opts=child,
        )
        self._publish(public_ip.ip_address.apply(lambda ip: ip or ""))
