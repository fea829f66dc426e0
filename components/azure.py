"""The workstation on Azure: NVIDIA GPU-optimized VM, static IP, NSG restricted to the CIDRs.

azure-native checks only resource_group_name itself, so the tests assert the
rest of the inputs; keep every input here explicit.
"""

from __future__ import annotations

import pulumi
from pulumi_azure_native import authorization, compute, devtestlab, network, resources, storage

from components import network as rules
from components.spec import WorkstationSpec
from components.workstation import Workstation

VNET_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"
FIRST_RULE_PRIORITY = 1000
DATA_LUN = 0  # /dev/disk/azure/scsi1/lun0 on the guest
# What the VM's own identity may do to itself, and nothing more. The built-in
# Virtual Machine Contributor grants Microsoft.Compute/virtualMachines/*, which
# includes runCommand/action: any process reaching IMDS (a Jupyter terminal)
# could run scripts as root on the host. Deallocate, not powerOff: a powered-off
# VM is still billed. (MicrosoftDocs/azure-docs role-based-access-control/
# built-in-roles/compute.md @064f7ba2, ms.date 2025-09-03; read 2026-11-23.)
SELF_DEALLOCATE_ACTIONS = (
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/deallocate/action",
)


class AzureWorkstation(Workstation):
    def __init__(
        self, name: str, spec: WorkstationSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("azure", name, spec, opts)
        self.kept_data_gb: pulumi.Input[float] = spec.data_volume_gb
        prefix = spec.name_prefix
        tags = spec.tag_dict()
        location = spec.region
        # A Marketplace image needs its plan block, and its terms accepted once per
        # subscription (the plan prints the `az vm image terms accept` line).
        urn = spec.machine_image or (spec.os_image.lookup if spec.os_image else "")
        publisher, offer, sku, version = urn.split(":")
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
        data_group = self._data_group(spec) if self._needs_data_group(spec) else None
        data_disk_id = self._data_disk(spec, data_group)
        user = spec.ssh_user
        vm = compute.VirtualMachine(
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
                # Detach, never delete, the data disk with the VM.
                "data_disks": [{
                    "lun": DATA_LUN,
                    "create_option": "Attach",
                    "managed_disk": {"id": data_disk_id},
                    "delete_option": "Detach",
                }] if data_disk_id is not None else None,
            },
            # Only with autostop: an identity the idle check uses to deallocate
            # the VM (a guest poweroff leaves an Azure VM billed).
            identity={"type": compute.ResourceIdentityType.SYSTEM_ASSIGNED}
            if spec.azure_self_deallocate else None,
            # Marketplace images bill through their plan; Azure refuses the VM without it.
            plan={"name": sku, "product": offer, "publisher": publisher},
            os_profile={
                "computer_name": prefix,
                "admin_username": user,
                # cloud-init installs the stack's host key (custom data is not served
                # by IMDS, so a container cannot read it).
                "custom_data": self._host_key_custom_data(),
                "linux_configuration": {
                    "disable_password_authentication": True,
                    "ssh": {"public_keys": [{
                        "path": f"/home/{user}/.ssh/authorized_keys",
                        "key_data": spec.ssh_public_key,
                    }]},
                },
            },
            network_profile={"network_interfaces": [{"id": nic.id, "primary": True}]},
            # Spot: deallocated (not deleted) on eviction, disks kept; -1 pays up to
            # the on-demand price, so the VM is never evicted for price.
            priority="Spot" if spec.spot else None,
            eviction_policy="Deallocate" if spec.spot else None,
            billing_profile={"max_price": spec.spot_max_price_usd or -1} if spec.spot else None,
            zones=[spec.zone] if spec.zone else None,
            tags=tags,
            opts=child,
        )
        self._stop_policy(spec, group, vm)
        bucket = self._dataset_container(spec, data_group) if spec.dataset_bucket else None
        where = pulumi.Output.all(group.name, vm.name).apply(lambda v: f"-g {v[0]} -n {v[1]}")
        self._publish(
            public_ip.ip_address.apply(lambda ip: ip or ""),
            data_volume_id=pulumi.Output.from_input(data_disk_id) if data_disk_id else None,
            bucket=bucket,
            machine_image=urn,
            data_volume_gb=self.kept_data_gb,
            start_command=where.apply(lambda w: f"az vm start {w}"),
            # deallocate, not stop: a stopped (powered-off) VM is still billed.
            stop_command=where.apply(lambda w: f"az vm deallocate {w}"),
        )

    @staticmethod
    def _needs_data_group(spec: WorkstationSpec) -> bool:
        return (spec.has_data_volume and not spec.data_volume_id) or spec.dataset_bucket

    def _data_group(self, spec: WorkstationSpec) -> resources.ResourceGroup:
        """Kept data lives in its own group: deleting the workstation's group
        would delete everything in it, retained or not."""
        keep = (spec.has_data_volume and spec.keep_data_volume) or (
            spec.dataset_bucket and spec.keep_dataset_bucket)
        return resources.ResourceGroup(
            f"{spec.name_prefix}-data-rg", location=spec.region,
            tags={**spec.tag_dict(), "gpu-workbench-role": "data"},
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=keep),
        )

    def _data_disk(
        self, spec: WorkstationSpec, data_group: resources.ResourceGroup | None
    ) -> pulumi.Input[str] | None:
        if not spec.has_data_volume:
            return None
        if spec.data_volume_id:
            # .../resourceGroups/RG/providers/Microsoft.Compute/disks/NAME: its size.
            parts = spec.data_volume_id.split("/")
            self.kept_data_gb = compute.get_disk_output(
                resource_group_name=parts[4], disk_name=parts[8],
                opts=pulumi.InvokeOutputOptions(parent=self)).disk_size_gb.apply(
                    lambda size: size or 0)
            return spec.data_volume_id
        assert data_group is not None
        disk = compute.Disk(
            f"{spec.name_prefix}-data",
            resource_group_name=data_group.name,
            location=spec.region,
            creation_data={"create_option": "Empty"},
            disk_size_gb=spec.data_volume_gb,
            sku={"name": "Premium_LRS"},
            zones=[spec.zone] if spec.zone else None,
            tags={**spec.tag_dict(), "gpu-workbench-role": "data"},
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=spec.keep_data_volume),
        )
        return disk.id

    def _stop_policy(
        self, spec: WorkstationSpec, group: resources.ResourceGroup, vm: compute.VirtualMachine
    ) -> None:
        if spec.azure_self_deallocate:
            principal = vm.identity.apply(lambda identity: identity.principal_id if identity
                                          else "")
            # A custom role: read and deallocate, assignable in this group only.
            role = authorization.RoleDefinition(
                f"{spec.name_prefix}-self-deallocate-role",
                role_name=f"gpu-workbench {spec.stack} self-deallocate",
                description="Read and deallocate this gpu-workbench VM (its idle autostop)",
                scope=group.id,
                assignable_scopes=[group.id],
                permissions=[{"actions": list(SELF_DEALLOCATE_ACTIONS), "not_actions": []}],
                opts=self.child,
            )
            authorization.RoleAssignment(
                f"{spec.name_prefix}-self-deallocate",
                principal_id=principal,
                principal_type="ServicePrincipal",
                role_definition_id=role.id,
                scope=vm.id,  # this VM only
                opts=self.child,
            )
        if spec.azure_daily_shutdown:
            # Azure's own auto-shutdown deallocates; the name format is fixed.
            devtestlab.GlobalSchedule(
                f"{spec.name_prefix}-daily-shutdown",
                name=vm.name.apply(lambda name: f"shutdown-computevm-{name}"),
                resource_group_name=group.name,
                location=spec.region,
                status="Enabled",
                task_type="ComputeVmShutdownTask",
                daily_recurrence={"time": spec.azure_daily_shutdown.replace(":", "")},
                time_zone_id="UTC",
                notification_settings={"status": "Disabled"},
                target_resource_id=vm.id,
                tags=spec.tag_dict(),
                opts=self.child,
            )

    def _dataset_container(
        self, spec: WorkstationSpec, data_group: resources.ResourceGroup | None
    ) -> pulumi.Output[str]:
        assert data_group is not None
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=spec.keep_dataset_bucket)
        account = storage.StorageAccount(
            # Storage account names: 3-24 lowercase letters and digits.
            "".join(ch for ch in f"wb{spec.stack}data" if ch.isalnum()).lower()[:17],
            resource_group_name=data_group.name,
            location=spec.region,
            kind="StorageV2",
            sku={"name": "Standard_LRS"},
            allow_blob_public_access=False,
            enable_https_traffic_only=True,
            minimum_tls_version="TLS1_2",
            encryption={
                "key_source": "Microsoft.Storage",
                "services": {"blob": {"enabled": True, "key_type": "Account"}},
            },
            tags=spec.tag_dict(),
            opts=keep,
        )
        container = storage.BlobContainer(
            f"{spec.name_prefix}-datasets",
            resource_group_name=data_group.name,
            account_name=account.name,
            public_access=storage.PublicAccess.NONE,
            opts=keep,
        )
        return pulumi.Output.concat(account.name, "/", container.name)
