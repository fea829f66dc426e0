"""The workstation on AWS: a GPU EC2 instance in its own VPC, reachable only from the stack's CIDRs.

Translation only: which ports open to which CIDRs, names, tags and outputs
come from the spec and components/network.py.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components import network
from components.spec import WorkstationSpec
from components.workstation import Workstation

VPC_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"
# 1: only the host reaches IMDSv2; a container (one more hop) does not, so code in
# a Jupyter terminal cannot read the instance's user data or role credentials.
IMDS_HOP_LIMIT = 1
# Nitro instances show it as an NVMe device whose serial is the volume ID;
# the bootstrap finds it either way.
DATA_DEVICE = "/dev/sdf"


def first_zone(zones: list[str], machine_type: str, region: str) -> str:
    """The first zone that offers the type; none is one line, not an IndexError."""
    if not zones:
        raise pulumi.RunError(
            f"{machine_type} is not offered in any zone of {region} (EC2 "
            "DescribeInstanceTypeOfferings returned none): choose another gpu-workbench:region "
            "or profile")
    return sorted(zones)[0]


class AwsWorkstation(Workstation):
    def __init__(
        self, name: str, spec: WorkstationSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aws", name, spec, opts)
        prefix = spec.name_prefix
        tags = spec.tag_dict()

        provider = aws.Provider(f"{prefix}-aws", region=spec.region, opts=self.child)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        lookup = pulumi.InvokeOutputOptions(parent=self, provider=provider)

        image_id: pulumi.Input[str]
        if spec.machine_image:
            image_id = spec.machine_image  # pinned: the machine built next month is this one
        else:
            assert spec.os_image is not None
            # AWS publishes each DLAMI's current ID as a public SSM parameter; the
            # variant (and so the driver branch) is chosen by GPU in the catalog.
            image_id = aws.ssm.get_parameter_output(name=spec.os_image.lookup, opts=lookup).value
        # A kept EBS volume to re-attach: its zone (the instance must join it) and size.
        kept = aws.ebs.get_volume_output(
            filters=[{"name": "volume-id", "values": [spec.data_volume_id]}], opts=lookup
        ) if spec.data_volume_id else None
        zone: pulumi.Input[str]
        if spec.zone:
            zone = spec.zone
        elif kept is not None:
            zone = kept.availability_zone
        else:
            # Not every zone of a region offers every GPU type: ask which do.
            offerings = aws.ec2.get_instance_type_offerings_output(
                location_type="availability-zone",
                filters=[{"name": "instance-type", "values": [spec.profile.machine_type]}],
                opts=lookup,
            )
            zone = offerings.locations.apply(
                lambda zones: first_zone(zones, spec.profile.machine_type, spec.region))

        vpc = aws.ec2.Vpc(
            f"{prefix}-vpc",
            cidr_block=VPC_CIDR,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={**tags, "Name": f"{prefix}-vpc"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{prefix}-igw", vpc_id=vpc.id, tags={**tags, "Name": f"{prefix}-igw"}, opts=child
        )
        subnet = aws.ec2.Subnet(
            f"{prefix}-subnet",
            vpc_id=vpc.id,
            cidr_block=SUBNET_CIDR,
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags={**tags, "Name": f"{prefix}-subnet"},
            opts=child,
        )
        routes = aws.ec2.RouteTable(
            f"{prefix}-routes",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags={**tags, "Name": f"{prefix}-routes"},
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            f"{prefix}-routes-assoc", subnet_id=subnet.id, route_table_id=routes.id, opts=child
        )

        group = aws.ec2.SecurityGroup(
            f"{prefix}-sg",
            vpc_id=vpc.id,
            description=f"gpu-workbench {spec.stack}: ports {spec.open_ports} from allowed CIDRs",
            tags={**tags, "Name": f"{prefix}-sg"},
            opts=child,
        )
        for rule in network.ingress_rules(spec):
            # Named by port and CIDR, so editing the allow-list touches only
            # the rules that change.
            aws.vpc.SecurityGroupIngressRule(
                f"{prefix}-in-{rule.port}-{rule.cidr.replace('/', '_')}",
                security_group_id=group.id,
                ip_protocol="tcp",
                from_port=rule.port,
                to_port=rule.port,
                cidr_ipv6=rule.cidr if rule.ipv6 else None,
                cidr_ipv4=None if rule.ipv6 else rule.cidr,
                description=rule.description,
                tags=tags,
                opts=child,
            )
        # Creating a group drops AWS's default allow-all egress: the workstation
        # still has to pull containers and packages.
        aws.vpc.SecurityGroupEgressRule(
            f"{prefix}-out-all",
            security_group_id=group.id,
            ip_protocol="-1",
            cidr_ipv4="0.0.0.0/0",
            description="all outbound (image and package downloads)",
            tags=tags,
            opts=child,
        )

        key = aws.ec2.KeyPair(
            f"{prefix}-key", key_name_prefix=f"{prefix}-", public_key=spec.ssh_public_key,
            tags=tags, opts=child,
        )
        instance = aws.ec2.Instance(
            f"{prefix}-vm",
            ami=image_id,
            user_data=self._host_key_user_data(),
            instance_type=spec.profile.machine_type,
            subnet_id=subnet.id,
            vpc_security_group_ids=[group.id],
            key_name=key.key_name,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",  # IMDSv2 only
                "http_put_response_hop_limit": IMDS_HOP_LIMIT,
            },
            root_block_device={
                "volume_type": "gp3",
                "volume_size": spec.root_disk_gb,
                "encrypted": True,
                "delete_on_termination": True,
                "tags": tags,
            },
            # A guest `poweroff` (the idle autostop) stops the instance, which
            # ends compute billing; "terminate" would throw the machine away.
            instance_initiated_shutdown_behavior="stop",
            # Spot: a persistent request that stops on interruption (the only way
            # RunInstances accepts "stop"), so the root and data volumes stay.
            instance_market_options={
                "market_type": "spot",
                "spot_options": {
                    "spot_instance_type": "persistent",
                    "instance_interruption_behavior": "stop",
                    **({"max_price": f"{spec.spot_max_price_usd}"}
                       if spec.spot_max_price_usd is not None else {}),
                },
            } if spec.spot else None,
            tags={**tags, "Name": f"{prefix}-vm"},
            opts=child,
        )
        data_volume_id = self._data_volume(spec, zone, instance, provider)
        bucket = self._dataset_bucket(spec, provider) if spec.dataset_bucket else None
        address = aws.ec2.Eip(
            f"{prefix}-ip",
            domain="vpc",
            instance=instance.id,
            tags={**tags, "Name": f"{prefix}-ip"},
            # The address only routes once the VPC has its gateway.
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[gateway]),
        )
        region = spec.region
        self._publish(
            address.public_ip, data_volume_id=data_volume_id, bucket=bucket,
            machine_image=instance.ami,
            data_volume_gb=kept.size if kept is not None else spec.data_volume_gb,
            start_command=instance.id.apply(
                lambda i: f"aws ec2 start-instances --instance-ids {i} --region {region}"),
            stop_command=instance.id.apply(
                lambda i: f"aws ec2 stop-instances --instance-ids {i} --region {region}"),
        )

    def _data_volume(
        self, spec: WorkstationSpec, zone: pulumi.Input[str], instance: aws.ec2.Instance,
        provider: aws.Provider,
    ) -> pulumi.Output[str] | None:
        if not spec.has_data_volume:
            return None
        prefix = spec.name_prefix
        volume_id: pulumi.Input[str]
        if spec.data_volume_id:
            volume_id = spec.data_volume_id
        else:
            volume = aws.ebs.Volume(
                f"{prefix}-data",
                availability_zone=zone,
                size=spec.data_volume_gb,
                type="gp3",
                encrypted=True,
                tags={**spec.tag_dict(), "Name": f"{prefix}-data", "gpu-workbench-role": "data"},
                # Kept by `pulumi destroy` (dropped from the state, left in the
                # account) unless the stack says keepDataVolume: false.
                opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                            retain_on_delete=spec.keep_data_volume),
            )
            volume_id = volume.id
        aws.ec2.VolumeAttachment(
            f"{prefix}-data-attach",
            device_name=DATA_DEVICE,
            volume_id=volume_id,
            instance_id=instance.id,
            stop_instance_before_detaching=True,  # a clean unmount, not a yanked disk
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        return pulumi.Output.from_input(volume_id)

    def _dataset_bucket(self, spec: WorkstationSpec, provider: aws.Provider) -> pulumi.Output[str]:
        prefix = spec.name_prefix
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        bucket = aws.s3.Bucket(
            f"{prefix}-datasets",
            # Not kept: destroy empties it first, as the stack asked.
            force_destroy=not spec.keep_dataset_bucket,
            tags=spec.tag_dict(),
            opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                        retain_on_delete=spec.keep_dataset_bucket),
        )
        aws.s3.BucketPublicAccessBlock(
            f"{prefix}-datasets-private", bucket=bucket.id, block_public_acls=True,
            block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{prefix}-datasets-owner", bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{prefix}-datasets-sse", bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child,
        )
        return bucket.bucket
