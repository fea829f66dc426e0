"""Instance profiles: what each GPU machine type is, costs and whether it is still sold.

One table for three clouds, read by the spec (validation), the cloud modules
(what to ask for) and the plan (what to print). Prices are on-demand list
prices in USD per hour for the region named in `PRICE_REGIONS`, as read on
`PRICES_READ_ON`; they move, so the plan prints that date beside every price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Cloud = Literal["aws", "gcp", "azure"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp", "azure")

# The list prices below were read from each cloud's public pricing pages.
PRICES_READ_ON = "2025-06-30"
PRICE_REGIONS: dict[Cloud, str] = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}


# USD per GB-month, same regions and date: the data volume's disk type and
# standard object storage. Azure prices managed disks by tier; this is the
# P15 (256 GiB) Premium SSD price per GiB, close for the sizes used here.
DISK_PRICES: dict[Cloud, tuple[str, float]] = {
    "aws": ("gp3", 0.08),
    "gcp": ("pd-balanced", 0.10),
    "azure": ("Premium_LRS", 0.1485),
}
BUCKET_PRICES: dict[Cloud, float] = {"aws": 0.023, "gcp": 0.020, "azure": 0.0184}

# The Pulumi types of what `pulumi destroy` may keep, for the plan and the
# teardown report: data disks (with the input that holds their size in GB)
# and dataset buckets.
DATA_DISK_TYPES: dict[str, tuple[Cloud, str]] = {
    "aws:ebs/volume:Volume": ("aws", "size"),
    "gcp:compute/disk:Disk": ("gcp", "size"),
    "azure-native:compute:Disk": ("azure", "diskSizeGB"),
}
BUCKET_TYPES: dict[str, Cloud] = {
    "aws:s3/bucket:Bucket": "aws",
    "gcp:storage/bucket:Bucket": "gcp",
    "azure-native:storage:BlobContainer": "azure",
}


def disk_monthly_usd(cloud: Cloud, size_gb: float) -> float:
    return round(size_gb * DISK_PRICES[cloud][1], 2)


@dataclass(frozen=True)
class Gpu:
    model: str  # marketing name, e.g. "NVIDIA V100 16GB"
    architecture: str  # Volta, Ampere, Ada, Hopper
    compute_capability: tuple[int, int]  # CUDA compute capability (major, minor)
    memory_gib: int


V100 = Gpu("NVIDIA V100 16GB", "Volta", (7, 0), 16)
A10G = Gpu("NVIDIA A10G 24GB", "Ampere", (8, 6), 24)
A10 = Gpu("NVIDIA A10 24GB", "Ampere", (8, 6), 24)
L4 = Gpu("NVIDIA L4 24GB", "Ada Lovelace", (8, 9), 24)
A100_40 = Gpu("NVIDIA A100 40GB", "Ampere", (8, 0), 40)
A100_80 = Gpu("NVIDIA A100 80GB", "Ampere", (8, 0), 80)
H100_80 = Gpu("NVIDIA H100 80GB", "Hopper", (9, 0), 80)
H100_NVL = Gpu("NVIDIA H100 NVL 94GB", "Hopper", (9, 0), 94)


@dataclass(frozen=True)
class InstanceProfile:
    """One machine type a stack can ask for, with the GPUs it carries.

    `gpu_counts` lists the counts the type accepts. Most types have their GPUs
    built in (one count); GCP's N1 types take attachable GPUs, so several.
    `price_per_gpu_usd_hour` is the attachable GPU's own price (GCP N1 only).
    """

    cloud: Cloud
    name: str  # the profile name a stack uses (config key `profile`)
    machine_type: str  # what the cloud API calls it
    gpu: Gpu
    gpu_counts: tuple[int, ...]
    vcpus: int
    memory_gib: float
    price_usd_hour: float  # the machine (for GCP N1: without the GPU)
    sold: bool = True
    replacement: str | None = None  # a current profile to suggest when not sold
    accelerator_type: str | None = None  # GCP guest accelerator name (attachable GPUs)
    price_per_gpu_usd_hour: float = 0.0
    recommended: bool = False  # the type the NVIDIA Clara guides use
    # GCP caps vCPUs per attached GPU on N1 (12 per V100 in its GPU tables):
    # a bigger machine with too few GPUs is refused at create time.
    max_vcpus_per_gpu: int | None = None

    @property
    def default_gpu_count(self) -> int:
        return self.gpu_counts[0]

    def vcpu_limit_exceeded(self, gpu_count: int) -> bool:
        limit = self.max_vcpus_per_gpu
        return limit is not None and self.vcpus > limit * gpu_count

    def hourly_cost(self, gpu_count: int) -> float:
        return round(self.price_usd_hour + self.price_per_gpu_usd_hour * gpu_count, 4)


PROFILES: tuple[InstanceProfile, ...] = (
    # --- AWS (us-east-1) ---
    InstanceProfile(
        "aws", "p3.2xlarge", "p3.2xlarge", V100, (1,), 8, 61, 3.06,
        sold=False, replacement="g6.2xlarge", recommended=True,
    ),
    InstanceProfile("aws", "g5.2xlarge", "g5.2xlarge", A10G, (1,), 8, 32, 1.212),
    InstanceProfile("aws", "g6.2xlarge", "g6.2xlarge", L4, (1,), 8, 32, 0.9776),
    InstanceProfile("aws", "p4d.24xlarge", "p4d.24xlarge", A100_40, (8,), 96, 1152, 21.96),
    InstanceProfile("aws", "p5.48xlarge", "p5.48xlarge", H100_80, (8,), 192, 2048, 55.04),
    # --- GCP (us-central1) ---
    InstanceProfile(
        "gcp", "n1-standard-16-v100", "n1-standard-16", V100, (1, 2, 4), 16, 60, 0.7600,
        accelerator_type="nvidia-tesla-v100", price_per_gpu_usd_hour=2.48, recommended=True,
        max_vcpus_per_gpu=12,
    ),
    InstanceProfile("gcp", "g2-standard-8", "g2-standard-8", L4, (1,), 8, 32, 0.8536),
    InstanceProfile("gcp", "a2-highgpu-1g", "a2-highgpu-1g", A100_40, (1,), 12, 85, 3.6731),
    InstanceProfile("gcp", "a3-highgpu-1g", "a3-highgpu-1g", H100_80, (1,), 26, 234, 11.0613),
    # --- Azure (eastus) ---
    InstanceProfile(
        "azure", "Standard_NC6s_v3", "Standard_NC6s_v3", V100, (1,), 6, 112, 3.06,
        sold=False, replacement="Standard_NC24ads_A100_v4", recommended=True,
    ),
    InstanceProfile("azure", "Standard_NV36ads_A10_v5", "Standard_NV36ads_A10_v5", A10, (1,),
                    36, 440, 3.20),
    InstanceProfile("azure", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", A100_80,
                    (1,), 24, 220, 3.673),
    InstanceProfile("azure", "Standard_NC40ads_H100_v5", "Standard_NC40ads_H100_v5", H100_NVL,
                    (1,), 40, 320, 6.98),
)


def profiles_for(cloud: Cloud) -> tuple[InstanceProfile, ...]:
    return tuple(p for p in PROFILES if p.cloud == cloud)


def find_profile(cloud: Cloud, name: str) -> InstanceProfile | None:
    for profile in profiles_for(cloud):
        if profile.name == name:
            return profile
    return None


def clouds_offering(name: str) -> tuple[Cloud, ...]:
    """The clouds whose catalog holds a profile of this name (for error messages)."""
    return tuple(p.cloud for p in PROFILES if p.name == name)


def recommended_profile(cloud: Cloud) -> InstanceProfile:
    return next(p for p in profiles_for(cloud) if p.recommended)
