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

# AWS Deep Learning Base AMI with NVIDIA driver, Docker and the NVIDIA
# container toolkit, published by Amazon; the newest matching one is used.
DLAMI_OWNER = "amazon"
DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
VPC_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"
# Containers reach IMDSv2 through one more network hop than the host.
IMDS_HOP_LIMIT = 2


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

        ami = aws.ec2.get_ami_output(
            owners=[DLAMI_OWNER],
            most_recent=True,
            filters=[
                {"name": "name", "values": [spec.machine_image or DLAMI_NAME]},
                {"name": "architecture", "values": ["x86_64"]},
                {"name": "state", "values": ["available"]},
            ],
            opts=lookup,
        )
        zone: pulumi.Input[str]
        if spec.zone:
            zone = spec.zone
        else:
            # Not every zone of a region offers every GPU type: ask which do.
            offerings = aws.ec2.get_instance_type_offerings_output(
                location_type="availability-zone",
                filters=[{"name": "instance-type", "values": [spec.profile.machine_type]}],
                opts=lookup,
            )
            zone = offerings.locations.apply(lambda zones: sorted(zones)[0])

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
            ami=ami.id,
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
            tags={**tags, "Name": f"{prefix}-vm"},
            opts=child,
        )
        address = aws.ec2.Eip(
            f"{prefix}-ip",
            domain="vpc",
            instance=instance.id,
            tags={**tags, "Name": f"{prefix}-ip"},
            # The address only routes once the VPC has its gateway.
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[gateway]),
        )
        self._publish(address.public_ip)
