"""The workstation on GCP: a GPU VM in its own VPC network, OS Login, static IP.

Its own network, because a project's "default" network usually carries
default-allow-ssh from 0.0.0.0/0, which would defeat the allow-list.
"""

from __future__ import annotations

import re

import pulumi
import pulumi_gcp as gcp

from components import network
from components.spec import WorkstationSpec
from components.workstation import Workstation

# NVIDIA GPU-Optimized VMI (driver, Docker, NVIDIA container toolkit), from
# NVIDIA's Marketplace project. Override with gpu-workbench:machineImage.
NVIDIA_VMI = (
    "projects/mpi-nvidia-ngc-public/global/images/nvidia-gpu-cloud-vmi-base-2025-9-1-x86-64"
)
SUBNET_CIDR = "10.42.1.0/24"
BOOT_DISK_TYPE = "pd-balanced"


def label_safe(text: str) -> str:
    """GCP labels take lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


class GcpWorkstation(Workstation):
    def __init__(
        self, name: str, spec: WorkstationSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gcp", name, spec, opts)
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
        gcp.oslogin.SshPublicKey(
            f"{prefix}-oslogin-key", user=spec.gcp_os_login_account or "",
            key=spec.ssh_public_key, project=spec.gcp_project, opts=child,
        )

        attachable = profile.accelerator_type is not None
        gcp.compute.Instance(
            f"{prefix}-vm",
            zone=spec.zone,
            machine_type=profile.machine_type,
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                auto_delete=True,
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                    image=spec.machine_image or NVIDIA_VMI,
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
            ),
            metadata={"enable-oslogin": "TRUE"},
            tags=[network_tag],
            labels=labels,
            opts=child,
        )
        # The reserved address is the VM's public IP (access_configs.nat_ip).
        self._publish(address.address)
