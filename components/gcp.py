"""The workstation on GCP: a GPU VM in its own VPC network, OS Login, static IP.

Its own network, because a project's "default" network usually carries
default-allow-ssh from 0.0.0.0/0, which would defeat the allow-list.
"""

from __future__ import annotations

import re

import pulumi
import pulumi_gcp as gcp

from components import network
from components.spec import SERVICE_ACCOUNT_USER, WorkstationSpec
from components.workstation import Workstation

SUBNET_CIDR = "10.42.1.0/24"
BOOT_DISK_TYPE = "pd-balanced"
DATA_DEVICE_NAME = "workbench-data"


def same_identity(caller_email: str, account: str) -> str:
    """The OS Login account, if it is the identity running `pulumi up`; else one line."""
    if caller_email and caller_email.lower() != account.lower():
        raise pulumi.RunError(
            f"gpu-workbench:gcpOsLoginAccount: {account!r} is not the identity running `pulumi "
            f"up` ({caller_email}); the OS Login API lets a caller add keys to its own profile "
            "only: set gcpOsLoginAccount to that identity, or run as the account")
    return account


def label_safe(text: str) -> str:
    """GCP labels take lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


class GcpWorkstation(Workstation):
    def __init__(
        self, name: str, spec: WorkstationSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gcp", name, spec, opts)
        self.kept_data_gb: pulumi.Input[float] = spec.data_volume_gb
        prefix = spec.name_prefix
        labels = {label_safe(k): label_safe(v) for k, v in spec.tags}
        network_tag = f"{prefix}-workstation"
        profile = spec.profile

        provider = gcp.Provider(
            f"{prefix}-gcp", project=spec.gcp_project, region=spec.region, zone=spec.zone,
            opts=self.child,
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        vpc = gcp.compute.Network(
            f"{prefix}-net", auto_create_subnetworks=False,
            description=f"gpu-workbench {spec.stack}", opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{prefix}-subnet", network=vpc.id, region=spec.region,
            ip_cidr_range=SUBNET_CIDR, opts=child,
        )
        for rule in network.port_rules(spec):
            gcp.compute.Firewall(
                f"{prefix}-allow-{rule.name_suffix}",
                network=vpc.id,
                direction="INGRESS",
                allows=[{"protocol": "tcp", "ports": [str(rule.port)]}],
                source_ranges=list(rule.cidrs),
                target_tags=[network_tag],
                description=f"{network.port_purpose(rule.port)} from the allowed CIDRs",
                opts=child,
            )
        address = gcp.compute.Address(
            f"{prefix}-ip", region=spec.region, address_type="EXTERNAL", labels=labels,
            opts=child,
        )

        # With OS Login on, the guest ignores ssh-keys metadata: the key goes
        # to the user's OS Login profile instead, and the login name follows it.
        # The OS Login API lets a caller manage keys of its own identity only
        # (terraform-google-modules/terraform-google-vm#548, 2025-12-18; read
        # 2026-11-23), so the identity running `pulumi up` must be that account.
        caller = gcp.organizations.get_client_open_id_user_info_output(
            opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        account = spec.gcp_os_login_account or ""
        gcp.oslogin.SshPublicKey(
            f"{prefix}-oslogin-key",
            user=caller.email.apply(lambda email: same_identity(email, account)),
            key=spec.ssh_public_key, project=spec.gcp_project, opts=child,
        )
        ssh_user: pulumi.Input[str] = spec.ssh_user
        if spec.gcp_os_login_kind == "service":
            unique_id = gcp.serviceaccount.get_account_output(
                account_id=account, project=spec.gcp_project,
                opts=pulumi.InvokeOutputOptions(parent=self, provider=provider)).unique_id
            ssh_user = unique_id.apply(lambda uid: SERVICE_ACCOUNT_USER.format(unique_id=uid))

        attachable = profile.accelerator_type is not None
        instance = gcp.compute.Instance(
            f"{prefix}-vm",
            zone=spec.zone,
            machine_type=profile.machine_type,
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                auto_delete=True,
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                    image=spec.machine_image or (spec.os_image.lookup if spec.os_image else ""),
                    size=spec.root_disk_gb,
                    type=BOOT_DISK_TYPE,
                    labels=labels,
                ),
            ),
            network_interfaces=[gcp.compute.InstanceNetworkInterfaceArgs(
                subnetwork=subnet.id,
                access_configs=[gcp.compute.InstanceNetworkInterfaceAccessConfigArgs(
                    nat_ip=address.address,
                )],
            )],
            # N1 takes attachable GPUs; A2/A3/G2 carry theirs in the machine type.
            guest_accelerators=[gcp.compute.InstanceGuestAcceleratorArgs(
                type=profile.accelerator_type or "", count=spec.gpu_count,
            )] if attachable else None,
            # GPU VMs cannot live-migrate: they must stop for host maintenance.
            scheduling=gcp.compute.InstanceSchedulingArgs(
                on_host_maintenance="TERMINATE", automatic_restart=True,
            ) if not spec.spot else gcp.compute.InstanceSchedulingArgs(
                # Spot: stopped (not deleted) on preemption, disks kept; GCP fixes
                # restart and maintenance for Spot VMs, so they are set as it fixes them.
                provisioning_model="SPOT", instance_termination_action="STOP",
                preemptible=True, automatic_restart=False, on_host_maintenance="TERMINATE",
            ),
            metadata={
                "enable-oslogin": "TRUE",
                # Deep Learning VM images install (or keep) their NVIDIA driver at first
                # boot with this key (components/catalog.py DLVM_INSTALL_METADATA).
                "install-nvidia-driver": "True",
            },
            tags=[network_tag],
            labels=labels,
            # The data disk is attached by its own resource (so a kept disk can
            # be re-attached); the instance must not fight it over the list.
            opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                        ignore_changes=["attachedDisks"]),
        )
        data_volume_id = self._data_volume(spec, instance, provider, labels)
        bucket = self._dataset_bucket(spec, provider, labels) if spec.dataset_bucket else None
        # The reserved address is the VM's public IP (access_configs.nat_ip).
        where = pulumi.Output.all(instance.name, instance.zone, instance.project).apply(
            lambda v: f"{v[0]} --zone {v[1]} --project {v[2]}")
        self._publish(
            address.address, data_volume_id=data_volume_id, bucket=bucket,
            machine_image=spec.machine_image or (spec.os_image.lookup if spec.os_image else ""),
            data_volume_gb=self.kept_data_gb,
            start_command=where.apply(lambda w: f"gcloud compute instances start {w}"),
            stop_command=where.apply(lambda w: f"gcloud compute instances stop {w}"),
            ssh_user=ssh_user,
        )

    def _data_volume(
        self, spec: WorkstationSpec, instance: gcp.compute.Instance, provider: gcp.Provider,
        labels: dict[str, str],
    ) -> pulumi.Output[str] | None:
        if not spec.has_data_volume:
            return None
        prefix = spec.name_prefix
        disk_id: pulumi.Input[str]
        if spec.data_volume_id:
            disk_id = spec.data_volume_id
            # projects/P/zones/Z/disks/NAME: its size, for what keeping it costs.
            _, project, _, zone, _, name = spec.data_volume_id.split("/")
            self.kept_data_gb = gcp.compute.get_disk_output(
                name=name, zone=zone, project=project,
                opts=pulumi.InvokeOutputOptions(parent=self, provider=provider)).size
        else:
            disk = gcp.compute.Disk(
                f"{prefix}-data",
                zone=spec.zone,
                size=spec.data_volume_gb,
                type=BOOT_DISK_TYPE,
                labels={**labels, "gpu-workbench-role": "data"},
                # Kept by `pulumi destroy` unless keepDataVolume: false.
                opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                            retain_on_delete=spec.keep_data_volume),
            )
            disk_id = disk.id
        gcp.compute.AttachedDisk(
            f"{prefix}-data-attach",
            disk=disk_id,
            instance=instance.id,
            zone=spec.zone,
            device_name=DATA_DEVICE_NAME,  # /dev/disk/by-id/google-<this> on the guest
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        return pulumi.Output.from_input(disk_id)

    def _dataset_bucket(
        self, spec: WorkstationSpec, provider: gcp.Provider, labels: dict[str, str]
    ) -> pulumi.Output[str]:
        bucket = gcp.storage.Bucket(
            f"{spec.name_prefix}-datasets",
            location=spec.region.upper(),
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",  # never public, whatever an ACL says
            force_destroy=not spec.keep_dataset_bucket,
            labels=labels,
            opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                        retain_on_delete=spec.keep_dataset_bucket),
        )
        return bucket.name
