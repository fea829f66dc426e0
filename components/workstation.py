"""What every cloud's workstation component shares: its outputs.

Each cloud module builds its resources and hands the public IP here; the
strings a user needs (ssh, tunnel, URLs, cost) are derived the same way for
every cloud, so `pulumi stack output` reads alike on AWS, GCP and Azure.
"""

from __future__ import annotations

import base64

import pulumi
import pulumi_random
import pulumi_tls

from components import access, cloud_init
from components.spec import DATA_MOUNT, WorkstationSpec

OUTPUT_NAMES = (
    "cloud",
    "instance_type",
    "gpu",
    "public_ip",
    "ssh_user",
    "ssh_command",
    "tunnel_command",
    "jupyter_url",
    "aiaa_url",
    "mlflow_url",
    "hourly_cost_usd",
    "container_image",
    "data_volume_id",
    "data_volume_gb",
    "data_volume_kept",
    "data_mount",
    "dataset_bucket",
    "autostop_minutes",
    "jupyter_token",
    "machine_image",
    "start_command",
    "stop_command",
    "host_key",
    "host_key_fingerprint",
)
JUPYTER_TOKEN_LENGTH = 48


class Workstation(pulumi.ComponentResource):
    """Base of the per-cloud components; subclasses call `_publish(public_ip)` last."""

    outputs: dict[str, pulumi.Output[object]]

    def __init__(
        self, cloud_type: str, name: str, spec: WorkstationSpec,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"gpu-workbench:{cloud_type}:Workstation", name, None, opts)
        self.spec = spec
        self.child = pulumi.ResourceOptions(parent=self)
        self.host_key: pulumi_tls.PrivateKey | None = None

    def _host_key_user_data(self) -> pulumi.Output[str]:
        """The machine's SSH host key, made here and handed over through cloud-init, so
        scripts/bootstrap pins it before the first connection (host_key output). The
        private half stays a secret in the stack's state."""
        self.host_key = pulumi_tls.PrivateKey(
            f"{self.spec.name_prefix}-host-key", algorithm="ED25519", opts=self.child)
        data = pulumi.Output.all(self.host_key.private_key_openssh,
                                 self.host_key.public_key_openssh).apply(
            lambda keys: cloud_init.user_data(keys[0], keys[1]))
        return pulumi.Output.secret(data)

    def _host_key_custom_data(self) -> pulumi.Output[str]:
        """The same, base64-encoded, as Azure's osProfile.customData takes it."""
        return self._host_key_user_data().apply(
            lambda text: base64.b64encode(text.encode()).decode())

    def _publish(
        self,
        public_ip: pulumi.Output[str],
        *,
        data_volume_id: pulumi.Output[str] | None,
        bucket: pulumi.Output[str] | None,
        machine_image: pulumi.Input[str],
        data_volume_gb: pulumi.Input[float],
        start_command: pulumi.Input[str],
        stop_command: pulumi.Input[str],
        ssh_user: pulumi.Input[str] | None = None,
    ) -> None:
        """Export the outputs every cloud shares. start/stop_command are the cloud CLI's
        own commands for this machine: the way back after an autostop, and a manual stop
        that ends compute billing."""
        spec = self.spec
        # Generated once, kept in the stack's state as a secret: the plan and
        # `pulumi stack output` never show it unless asked (--show-secrets);
        # scripts/bootstrap hands it to the container.
        token = pulumi_random.RandomPassword(
            f"{spec.name_prefix}-jupyter-token", length=JUPYTER_TOKEN_LENGTH, special=False,
            opts=self.child,
        )
        # The login user is the spec's, except an OS Login service account (sa_<id>).
        user = pulumi.Output.from_input(ssh_user if ssh_user is not None else spec.ssh_user)
        values: dict[str, object] = {
            "cloud": spec.cloud,
            "instance_type": spec.profile.machine_type,
            "gpu": f"{spec.gpu_count} x {spec.profile.gpu.model}",
            "public_ip": public_ip,
            "ssh_user": user,
            "ssh_command": pulumi.Output.all(user, public_ip).apply(
                lambda v: access.ssh_command(v[0], v[1])),
            "tunnel_command": pulumi.Output.all(user, public_ip).apply(
                lambda v: access.tunnel_command(spec, v[1], v[0])),
            "jupyter_url": access.jupyter_url(),
            "aiaa_url": access.aiaa_url(),
            "mlflow_url": access.mlflow_url(spec),
            "hourly_cost_usd": spec.hourly_cost_usd,
            "container_image": spec.container_image,
            "data_volume_id": data_volume_id if data_volume_id is not None else "",
            # A re-attached volume's real size (looked up at up): what keeping it costs.
            "data_volume_gb": data_volume_gb if spec.has_data_volume else 0,
            "data_volume_kept": spec.has_data_volume and spec.keep_data_volume,
            "data_mount": DATA_MOUNT if spec.has_data_volume else "",
            "dataset_bucket": bucket if bucket is not None else "",
            "autostop_minutes": spec.autostop_minutes,
            # RandomPassword marks its result secret in the engine; say so here
            # too, so the program never depends on that. (The SDK's stub types
            # the argument as Never, hence the ignore.)
            "jupyter_token": pulumi.Output.secret(token.result),  # type: ignore[arg-type]
            "machine_image": machine_image,
            "start_command": start_command,
            "stop_command": stop_command,
            # Known before the first connection where the stack made the key (AWS, Azure);
            # GCP serves user data to containers, so there the bootstrap accepts the key
            # on first use and prints its fingerprint.
            "host_key": self.host_key.public_key_openssh.apply(lambda k: k.strip())
            if self.host_key else "",
            "host_key_fingerprint": self.host_key.public_key_fingerprint_sha256
            if self.host_key else "",
        }
        assert tuple(values) == OUTPUT_NAMES, "every cloud exports the same outputs"
        self.outputs = {k: pulumi.Output.from_input(v) for k, v in values.items()}
        self.register_outputs(self.outputs)
