"""What each cloud sells, in one table: machine types, their GPUs and shapes, prices,
sold or retired (since when, and what replaces them), shape limits, consumption
options, the quota a machine consumes, and the OS images whose drivers drive them.

Every row names its sources (components/sources.py) with the date they were read;
tests/components/test_sources.py fails for a row without one. The spec refuses what
these facts say the cloud would refuse, before any resource is declared. Prices
are list prices in PRICE_REGIONS and move: the plan prints the date they were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from components.nvidia import A10, A10G, A100_40, A100_80, H100_80, H100_NVL, L4, L40S, T4, V100
from components.nvidia import Gpu as Gpu
from components.sources import READ_ON, SKYPILOT_AWS, SKYPILOT_AZURE, SKYPILOT_GCP, Source

Cloud = Literal["aws", "gcp", "azure"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp", "azure")

PRICES_READ_ON = READ_ON
PRICE_REGIONS: dict[Cloud, str] = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}

# USD per GB-month, same regions: the data volume's disk type and standard object storage.
# Azure prices managed disks by tier; this is the P15 (256 GiB) Premium SSD price per GiB.
DISK_PRICES: dict[Cloud, tuple[str, float]] = {
    "aws": ("gp3", 0.08),
    "gcp": ("pd-balanced", 0.10),
    "azure": ("Premium_LRS", 0.1485),
}
BUCKET_PRICES: dict[Cloud, float] = {"aws": 0.023, "gcp": 0.020, "azure": 0.0184}
STORAGE_PRICES = Source(
    "aws.amazon.com/ebs/pricing, cloud.google.com/compute/disks-image-pricing, "
    "azure.microsoft.com/pricing/details/managed-disks (list prices)",
    "gp3 $0.08, pd-balanced $0.10, Premium SSD P15 $0.1485 per GB-month; S3 $0.023, GCS "
    "$0.020, Blob hot $0.0184 per GB-month; carried over from the 2025-06-30 reading, not "
    "re-read on 2026-11-23", read_on="2025-06-30", confidence="medium")

# The Pulumi types of what `pulumi destroy` may keep, for the plan and the teardown
# report: data disks (with the input that holds their size in GB) and dataset buckets.
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


# --- OS images: which driver each carries ----------------------------------------------------

@dataclass(frozen=True)
class OsImage:
    """A GPU OS image the program boots: how it is found and which NVIDIA driver it carries."""

    cloud: Cloud
    name: str
    lookup: str  # SSM parameter (aws), image family (gcp), URN (azure)
    driver_branch: int | None  # None: not documented in any source we read
    driver_min: str | None  # the oldest driver version it carries, where known
    kernel_modules: Literal["open", "proprietary", "unknown"]
    login_user: str | None  # fixed by the image; None: the stack chooses
    has_container_toolkit: bool | None  # Docker + NVIDIA Container Toolkit; None: unknown
    sources: tuple[Source, ...]
    note: str = ""

    @property
    def driver_text(self) -> str:
        branch = f"R{self.driver_branch}" if self.driver_branch else "driver branch not documented"
        modules = {"open": "open kernel modules", "proprietary": "proprietary kernel modules",
                   "unknown": "kernel-module flavour not documented"}[self.kernel_modules]
        return f"{branch}, {modules}"


DLAMI_SSM = Source(
    "https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html",
    "DLAMI IDs are public SSM parameters /aws/service/deeplearning/ami/<arch>/<ami_type>/"
    "latest/ami-id, ami_type = the AMI name without deep, learning and ami")
DLAMI_OSS_RELEASES = Source(
    "docs.aws.amazon.com/dlami/latest/devguide release notes (Base OSS and Single-CUDA "
    "x86_64/ARM64 builds 2025-10-31 to 2026-10-09)",
    "2026 OSS DLAMIs carry driver 580.x until ~2026-04, then 595.x (595.91.07 in 2026-09), "
    "open kernel modules, Docker CE and NVIDIA Container Toolkit 1.18-1.20; supported "
    "instances start at G4dn; none lists P3", confidence="medium")
PARALLELCLUSTER_OSS = Source(
    "https://github.com/aws/aws-parallelcluster/issues/6014",
    "'OSS' DLAMIs use NVIDIA's open kernel modules, which need the GSP: P2/P3/G2/G3 "
    "unsupported (2024-01-16)")
DLVM_FAMILIES = Source(
    "https://cloud.google.com/deep-learning-vm/docs/images (via 2026 scripts quoting it)",
    "current DLVM families in project deeplearning-platform-release: common-cu129-ubuntu-2204-"
    "nvidia-580 (R580, CUDA 12.9); the driver branch is in the family name; whether Volta "
    "gets the proprietary modules is not stated in any source read", confidence="medium")
DLVM_INSTALL_METADATA = Source(
    "https://cloud.google.com/deep-learning-vm/docs/cli (install-nvidia-driver metadata)",
    "DLVM images install the NVIDIA driver at first boot when metadata "
    "install-nvidia-driver=True is set; a no-op where it is preinstalled", confidence="medium")
AZURE_NGC_VMI = Source(
    "hashicorp/terraform-provider-azurerm internal/services/compute tests (marketplace "
    "agreement nvidia/ngc_azure_17_11/ngc-base-version-25_9_1_gen2)",
    "newest NVIDIA GPU-Optimized VMI SKU seen: ngc-base-version-25_9_1_gen2 (Gen2); needs its "
    "Marketplace plan and terms; NVIDIA's VMI ships driver, Docker and the container toolkit; "
    "the driver branch of 25.9.1 is not stated in any source read", confidence="medium")
NVADS_A10_GRID = Source(
    "MicrosoftDocs/azure-compute-docs articles/virtual-machines/includes/"
    "virtual-machines-n-series-linux-support.md @06c2de23",
    "'The Azure NVads A10 v5 VMs only support GRID 17.x or higher driver versions' "
    "(ms.date 2025-12-01); no exception for the full-GPU NV36ads")

OS_IMAGES: tuple[OsImage, ...] = (
    OsImage(
        "aws", "dlami-base-oss-ubuntu-22.04",
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        595, "580.95.05", "open", "ubuntu", True,
        (DLAMI_SSM, DLAMI_OSS_RELEASES, PARALLELCLUSTER_OSS),
        note="Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04); resolved at up, "
             "pin it with machineImage: ami-... to keep it",
    ),
    OsImage(
        "gcp", "dlvm-common-cu129-nvidia-580",
        "projects/deeplearning-platform-release/global/images/family/"
        "common-cu129-ubuntu-2204-nvidia-580",
        580, None, "unknown", None, None,
        (DLVM_FAMILIES, DLVM_INSTALL_METADATA),
        note="Deep Learning VM, Ubuntu 22.04, CUDA 12.9; the family keeps the R580 branch",
    ),
    OsImage(
        "azure", "ngc-vmi-25.9.1-gen2",
        "nvidia:ngc_azure_17_11:ngc-base-version-25_9_1_gen2:latest",
        None, None, "unknown", None, True,
        (AZURE_NGC_VMI,),
        note="NVIDIA GPU-Optimized VMI 25.9.1 (September 2025, before R590 existed)",
    ),
)


def os_image(cloud: Cloud) -> OsImage:
    return next(i for i in OS_IMAGES if i.cloud == cloud)


# --- quotas ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Quota:
    """A quota a machine draws on, in the cloud's own words."""

    name: str  # what the console shows
    code: str  # what the API calls it
    unit: Literal["vCPUs", "GPUs"]
    scope: str  # "per region", "all regions"
    source: Source


AWS_QUOTAS_SRC = Source(
    "https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html",
    "vCPU quotas, default 0 for GPU families: L-DB2E81BA Running On-Demand G and VT "
    "instances; L-417A185B Running On-Demand P instances; spot: L-3819A6DF (G and VT), "
    "L-7212CCBC (P4, P3, P2), L-C4BD4855 (P5)")
GCP_QUOTAS_SRC = Source(
    "https://cloud.google.com/compute/resource-usage; skypilot-catalog "
    "catalogs/v5/gcp/accelerator_quota_mappping.csv",
    "per-region GPU quotas NVIDIA_<MODEL>_GPUS (PREEMPTIBLE_ for Spot) plus the global "
    "GPUS_ALL_REGIONS, which new projects usually have at 0; CPU quotas CPUS (N1), G2_CPUS, "
    "A2_CPUS", confidence="medium")
AZURE_QUOTAS_SRC = Source(
    "MicrosoftDocs/azure-compute-docs articles/virtual-machines/quotas.md @02773904",
    "vCPU quotas per VM family and region plus Total Regional vCPUs; deallocated VMs count "
    "(ms.date 2026-01-16); family names as `az vm list-usage` returns them")

AWS_G = Quota("Running On-Demand G and VT instances", "L-DB2E81BA", "vCPUs", "per region",
              AWS_QUOTAS_SRC)
AWS_P = Quota("Running On-Demand P instances", "L-417A185B", "vCPUs", "per region",
              AWS_QUOTAS_SRC)
AWS_G_SPOT = Quota("All G and VT Spot Instance Requests", "L-3819A6DF", "vCPUs",
                   "per region", AWS_QUOTAS_SRC)
AWS_P_SPOT = Quota("All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC", "vCPUs",
                   "per region", AWS_QUOTAS_SRC)
AWS_P5_SPOT = Quota("All P5 Spot Instance Requests", "L-C4BD4855", "vCPUs", "per region",
                    AWS_QUOTAS_SRC)
AZURE_SPOT_QUOTA = Quota("Total Regional Low-priority vCPUs", "lowPriorityCores", "vCPUs",
                         "per region", Source(
                             "MicrosoftDocs/azure-compute-docs articles/virtual-machines/"
                             "spot-vms.md @3bbed19b",
                             "Spot VMs draw on a separate quota, lowPriorityCores, shared by "
                             "VMs and scale sets (ms.date 2024-08-05)"))
GCP_ALL_GPUS = Quota("GPUs (all regions)", "GPUS_ALL_REGIONS", "GPUs", "all regions",
                     GCP_QUOTAS_SRC)


def gcp_gpu_quota(model: str, spot: bool = False) -> Quota:
    prefix = "PREEMPTIBLE_" if spot else ""
    label = "Preemptible NVIDIA" if spot else "NVIDIA"
    return Quota(f"{label} {model} GPUs", f"{prefix}NVIDIA_{model}_GPUS", "GPUs", "per region",
                 GCP_QUOTAS_SRC)


def azure_family_quota(family: str, label: str) -> Quota:
    return Quota(f"Standard {label} Family vCPUs", family, "vCPUs", "per region",
                 AZURE_QUOTAS_SRC)


QUOTA_REQUESTS: dict[Cloud, str] = {
    "aws": ("aws service-quotas request-service-quota-increase --service-code ec2 "
            "--quota-code {code} --desired-value {need} --region {region}"),
    "gcp": ("console IAM & Admin > Quotas, filter {code}, Edit quotas (needs "
            "serviceusage.quotas.update)"),
    "azure": ("portal Subscriptions > Usage + quotas, {code} in {region}, New quota request "
              "(Total Regional vCPUs must cover it too)"),
}


# --- machine types ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Retirement:
    since: str  # YYYY-MM-DD the cloud stopped selling it
    replacement: str  # the profile to use instead
    source: Source


@dataclass(frozen=True)
class ShapeLimits:
    """Most vCPUs and GB of memory a machine may have per number of attached GPUs (GCP N1)."""

    per_gpu_count: dict[int, tuple[int, float]]
    source: Source

    def refusal(self, vcpus: int, memory_gb: float, gpus: int) -> str | None:
        limit = self.per_gpu_count.get(gpus)
        if limit is None:
            return None
        max_cpu, max_mem = limit
        if vcpus > max_cpu or memory_gb > max_mem:
            return (f"{gpus} GPU(s) allow at most {max_cpu} vCPUs and {max_mem:g} GB; this "
                    f"machine has {vcpus} vCPUs and {memory_gb:g} GB")
        return None

    def fewest_gpus_for(self, vcpus: int, memory_gb: float) -> int | None:
        fits = [n for n, (c, m) in sorted(self.per_gpu_count.items())
                if vcpus <= c and memory_gb <= m]
        return fits[0] if fits else None


Consumption = Literal["on-demand", "spot", "flex-start"]


@dataclass(frozen=True)
class InstanceProfile:
    """One machine type a stack can ask for (config key `profile`), with its facts."""

    cloud: Cloud
    name: str
    machine_type: str  # what the cloud API calls it
    gpu: Gpu
    gpu_counts: tuple[int, ...]  # counts the type accepts (N1 attaches GPUs: several)
    vcpus: int
    memory_gib: float
    price_usd_hour: float  # the machine; for GCP N1 without the GPUs
    sources: tuple[Source, ...]  # shape, price, availability
    accelerator_type: str | None = None  # GCP guest accelerator name (attachable GPUs)
    price_per_gpu_usd_hour: float = 0.0
    spot_price_usd_hour: float | None = None  # a snapshot; spot prices move by the hour
    spot_price_per_gpu_usd_hour: float = 0.0  # GCP N1: the attached GPU's spot price
    retirement: Retirement | None = None
    sold_as: tuple[Consumption, ...] = ("on-demand", "spot")
    shape_limits: ShapeLimits | None = None
    quotas: tuple[Quota, ...] = ()
    spot_quotas: tuple[Quota, ...] = ()
    image_refusal: str | None = None  # why the cloud's GPU OS image cannot drive it
    image_refusal_source: Source | None = None
    recommended: bool = False  # the type the NVIDIA Clara guides use
    note: str = ""
    limits: tuple[str, ...] = field(default=(), repr=False)

    @property
    def sold(self) -> bool:
        return self.retirement is None

    @property
    def replacement(self) -> str | None:
        return self.retirement.replacement if self.retirement else None

    @property
    def default_gpu_count(self) -> int:
        return self.gpu_counts[0]

    @property
    def on_demand(self) -> bool:
        return "on-demand" in self.sold_as

    def hourly_cost(self, gpu_count: int) -> float:
        return round(self.price_usd_hour + self.price_per_gpu_usd_hour * gpu_count, 4)

    def shape_refusal(self, gpu_count: int) -> str | None:
        if self.shape_limits is None:
            return None
        return self.shape_limits.refusal(self.vcpus, self.memory_gib, gpu_count)

    @property
    def sold_as_spot(self) -> bool:
        return "spot" in self.sold_as and self.spot_price_usd_hour is not None

    def spot_cost(self, gpu_count: int) -> float | None:
        """The spot snapshot for the machine and its GPUs (N1: the GPUs' spot price too)."""
        if self.spot_price_usd_hour is None:
            return None
        return round(self.spot_price_usd_hour
                     + self.spot_price_per_gpu_usd_hour * gpu_count, 4)

    def quota_needs(self, gpu_count: int, spot: bool = False) -> list[tuple[Quota, int]]:
        quotas = self.spot_quotas if spot else self.quotas
        return [(q, self.vcpus if q.unit == "vCPUs" else gpu_count) for q in quotas]


# AWS ---------------------------------------------------------------------------------------
P3_RETIRED = Source(
    "https://github.com/zalando-incubator/kubernetes-on-aws/pull/8685 (AWS's email quoted); "
    "https://github.com/dstackai/gpuhunt/pull/233",
    "AWS asked P3 customers to 'migrate to newer generation EC2 G or P instances by December "
    "20, 2025' (2024-12-23); the EC2 API no longer describes p3.* (gpuhunt, 2026-05-25); "
    "SkyPilot dropped p3 rows on 2026-07-13")
P5_SINGLE = Source(
    "skypilot-catalog catalogs/v9/aws/vms.csv @3e9a1751; hashicorp/terraform-provider-aws#44322",
    "p5.4xlarge: 1 x H100 80GB, 16 vCPU, 256 GiB, $6.88/h on-demand list; no US spot price; "
    "on-demand capacity reported scarce (modelplaneai/modelplane#113, 2026-06-08)",
    confidence="medium")

# GCP ---------------------------------------------------------------------------------------
N1_V100_LIMITS = Source(
    "https://cloud.google.com/compute/docs/gpus (as encoded in skypilot sky/catalog/"
    "gcp_catalog.py and dstackai/gpuhunt providers/gcp.py @35841515, 2026-08-19)",
    "N1 with nvidia-tesla-v100: 1 GPU up to 12 vCPUs and 78 GB, 2 -> 24/156, 4 -> 48/312, "
    "8 -> 96/624")
A3_SPOT_ONLY = Source(
    "https://cloud.google.com/compute/docs/accelerator-optimized-machines"
    "#consumption_option_availability_by_machine_type (cited by dstackai/gpuhunt commit "
    "64f01a2, 2025-09-29)",
    "A3 High with fewer than 8 GPUs (a3-highgpu-1g/2g/4g) is sold only as Spot or "
    "Flex-start, not on-demand")
GCP_SHAPES = Source(
    "skypilot-catalog catalogs/v8/gcp/vms.csv @006059e0",
    "g2-standard-8 8 vCPU 32 GB 1 x L4; a2-highgpu-1g 12 vCPU 85 GB 1 x A100 40GB; "
    "a3-highgpu-1g 26 vCPU 234 GB 1 x H100; n1-highmem-8 8 vCPU 52 GB; n1-standard-16 16 "
    "vCPU 60 GB; V100 in us-central1-a/b/c/f", confidence="medium")

# Azure -------------------------------------------------------------------------------------
NCV3_RETIRED = Source(
    "MicrosoftDocs/azure-compute-docs articles/virtual-machines/ncv3-retirement.md @11277ad7",
    "NCv3 (Standard_NC6s_v3 ...) retired 2025-09-30; replacements NCads_H100_v5, or cheaper "
    "NCasT4_v3 / NVadsA10_v5 (ms.date 2025-05-28)")
AZURE_SIZES = Source(
    "MicrosoftDocs/azure-compute-docs articles/virtual-machines/sizes/gpu-accelerated/"
    "{ncast4v3,nvadsa10v5,nca100v4,ncadsh100v5}-series.md",
    "NC8as_T4_v3 8 vCPU 56 GiB 1 x T4; NV36ads_A10_v5 36 vCPU 440 GiB 1 x A10; "
    "NC24ads_A100_v4 24 vCPU 220 GB 1 x A100 80GB, Gen2 only; NC40ads_H100_v5 40 vCPU 320 GB "
    "1 x H100 NVL 94GB, Gen2 only (ms.date 2024-07-31)")

PROFILES: tuple[InstanceProfile, ...] = (
    # --- AWS (us-east-1) ---
    InstanceProfile(
        "aws", "p3.2xlarge", "p3.2xlarge", V100, (1,), 8, 61, 3.06, (SKYPILOT_AWS,),
        retirement=Retirement("2025-12-20", "g5.2xlarge", P3_RETIRED), recommended=True,
        quotas=(AWS_P,),
        image_refusal="no current AWS Deep Learning AMI drives a V100 (OSS DLAMIs use "
                      "NVIDIA's open kernel modules, Turing and newer)",
        image_refusal_source=PARALLELCLUSTER_OSS,
    ),
    InstanceProfile("aws", "g4dn.xlarge", "g4dn.xlarge", T4, (1,), 4, 16, 0.526,
                    (SKYPILOT_AWS,), spot_price_usd_hour=0.2017,
                    quotas=(AWS_G,), spot_quotas=(AWS_G_SPOT,)),
    InstanceProfile("aws", "g5.2xlarge", "g5.2xlarge", A10G, (1,), 8, 32, 1.212,
                    (SKYPILOT_AWS,), spot_price_usd_hour=0.4533,
                    quotas=(AWS_G,), spot_quotas=(AWS_G_SPOT,)),
    InstanceProfile("aws", "g6.2xlarge", "g6.2xlarge", L4, (1,), 8, 32, 0.9776,
                    (SKYPILOT_AWS,), spot_price_usd_hour=0.4320,
                    quotas=(AWS_G,), spot_quotas=(AWS_G_SPOT,)),
    InstanceProfile("aws", "g6e.2xlarge", "g6e.2xlarge", L40S, (1,), 8, 64, 2.24208,
                    (SKYPILOT_AWS,), spot_price_usd_hour=0.7193,
                    quotas=(AWS_G,), spot_quotas=(AWS_G_SPOT,)),
    InstanceProfile("aws", "p4d.24xlarge", "p4d.24xlarge", A100_40, (8,), 96, 1152, 21.957642,
                    (SKYPILOT_AWS,), spot_price_usd_hour=2.51, quotas=(AWS_P,),
                    spot_quotas=(AWS_P_SPOT,)),
    InstanceProfile("aws", "p5.4xlarge", "p5.4xlarge", H100_80, (1,), 16, 256, 6.88,
                    (SKYPILOT_AWS, P5_SINGLE), sold_as=("on-demand",), quotas=(AWS_P,),
                    note="on-demand capacity has been reported scarce"),
    InstanceProfile("aws", "p5.48xlarge", "p5.48xlarge", H100_80, (8,), 192, 2048, 55.04,
                    (SKYPILOT_AWS,), spot_price_usd_hour=17.25, quotas=(AWS_P,),
                    spot_quotas=(AWS_P5_SPOT,)),
    # --- GCP (us-central1) ---
    InstanceProfile(
        "gcp", "n1-standard-16-v100", "n1-standard-16", V100, (1, 2, 4, 8), 16, 60, 0.76,
        (SKYPILOT_GCP, GCP_SHAPES), accelerator_type="nvidia-tesla-v100",
        price_per_gpu_usd_hour=2.48, spot_price_usd_hour=0.2089,
        spot_price_per_gpu_usd_hour=1.0885,
        shape_limits=ShapeLimits({1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
                                 N1_V100_LIMITS),
        quotas=(gcp_gpu_quota("V100"), GCP_ALL_GPUS), recommended=True,
        spot_quotas=(gcp_gpu_quota("V100", spot=True), GCP_ALL_GPUS),
    ),
    InstanceProfile(
        "gcp", "n1-highmem-8-v100", "n1-highmem-8", V100, (1, 2, 4, 8), 8, 52, 0.47321,
        (SKYPILOT_GCP, GCP_SHAPES), accelerator_type="nvidia-tesla-v100",
        price_per_gpu_usd_hour=2.48, spot_price_usd_hour=0.12932,
        spot_price_per_gpu_usd_hour=1.0885,
        shape_limits=ShapeLimits({1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
                                 N1_V100_LIMITS),
        quotas=(gcp_gpu_quota("V100"), GCP_ALL_GPUS),
        spot_quotas=(gcp_gpu_quota("V100", spot=True), GCP_ALL_GPUS),
    ),
    InstanceProfile("gcp", "g2-standard-8", "g2-standard-8", L4, (1,), 8, 32, 0.854,
                    (SKYPILOT_GCP, GCP_SHAPES), spot_price_usd_hour=0.341,
                    quotas=(gcp_gpu_quota("L4"), GCP_ALL_GPUS),
                    spot_quotas=(gcp_gpu_quota("L4", spot=True), GCP_ALL_GPUS)),
    InstanceProfile("gcp", "a2-highgpu-1g", "a2-highgpu-1g", A100_40, (1,), 12, 85, 3.673,
                    (SKYPILOT_GCP, GCP_SHAPES), spot_price_usd_hour=1.804,
                    quotas=(gcp_gpu_quota("A100"), GCP_ALL_GPUS),
                    spot_quotas=(gcp_gpu_quota("A100", spot=True), GCP_ALL_GPUS)),
    # Not sold on-demand: its price is the spot snapshot (host + GPU spot rows).
    InstanceProfile("gcp", "a3-highgpu-1g", "a3-highgpu-1g", H100_80, (1,), 26, 234, 3.35,
                    (SKYPILOT_GCP, GCP_SHAPES, A3_SPOT_ONLY), spot_price_usd_hour=3.35,
                    sold_as=("spot", "flex-start"),
                    quotas=(gcp_gpu_quota("H100"), GCP_ALL_GPUS),
                    spot_quotas=(gcp_gpu_quota("H100", spot=True), GCP_ALL_GPUS)),
    # --- Azure (eastus) ---
    InstanceProfile(
        "azure", "Standard_NC6s_v3", "Standard_NC6s_v3", V100, (1,), 6, 112, 3.06,
        (SKYPILOT_AZURE,),
        retirement=Retirement("2025-09-30", "Standard_NC24ads_A100_v4", NCV3_RETIRED),
        recommended=True, quotas=(azure_family_quota("standardNCSv3Family", "NCSv3"),),
    ),
    InstanceProfile("azure", "Standard_NC8as_T4_v3", "Standard_NC8as_T4_v3", T4, (1,), 8, 56,
                    0.752, (SKYPILOT_AZURE, AZURE_SIZES), spot_price_usd_hour=0.089638,
                    quotas=(azure_family_quota("standardNCASv3_T4Family", "NCASv3_T4"),),
                    spot_quotas=(AZURE_SPOT_QUOTA,)),
    InstanceProfile(
        "azure", "Standard_NV36ads_A10_v5", "Standard_NV36ads_A10_v5", A10, (1,), 36, 440, 3.20,
        (SKYPILOT_AZURE, AZURE_SIZES), spot_price_usd_hour=0.80,
        quotas=(azure_family_quota("standardNVADSA10v5Family", "NVADSA10v5"),),
        spot_quotas=(AZURE_SPOT_QUOTA,),
        image_refusal="NVads A10 v5 sizes run only NVIDIA's GRID (vGPU) driver, which "
                      "NVIDIA's GPU-Optimized VMI does not carry",
        image_refusal_source=NVADS_A10_GRID,
    ),
    InstanceProfile("azure", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", A100_80,
                    (1,), 24, 220, 3.673, (SKYPILOT_AZURE, AZURE_SIZES),
                    spot_price_usd_hour=0.444433,
                    quotas=(azure_family_quota("standardNCADSA100v4Family", "NCADSA100v4"),),
                    spot_quotas=(AZURE_SPOT_QUOTA,)),
    # The catalog's spot price for it equals on-demand: no usable spot price known.
    InstanceProfile("azure", "Standard_NC40ads_H100_v5", "Standard_NC40ads_H100_v5", H100_NVL,
                    (1,), 40, 320, 6.98, (SKYPILOT_AZURE, AZURE_SIZES), sold_as=("on-demand",),
                    quotas=(azure_family_quota("standardNCadsH100v5Family", "NCadsH100v5"),),
                    spot_quotas=(AZURE_SPOT_QUOTA,)),
)


# What an interruption does to a spot machine on each cloud, as configured here.
SPOT_INTERRUPTION: dict[Cloud, tuple[str, Source]] = {
    "aws": ("AWS stops the instance after a two-minute notice (a persistent request with "
            "interruption behaviour stop); the root and data volumes stay and are billed, "
            "memory is lost; EC2 starts it again when capacity returns",
            Source("https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/interruption-behavior.html",
                   "stop on interruption needs a persistent request and an EBS root; while "
                   "stopped only EBS is billed; only EC2 restarts it, same AZ and type")),
    "gcp": ("GCP stops the VM after a 30-second notice (termination action STOP); its disks "
            "stay and are billed, memory is lost; start it again yourself (start_command)",
            Source("https://cloud.google.com/compute/docs/instances/spot",
                   "Spot VMs are stopped (default) or deleted on preemption; automatic "
                   "restart and host maintenance cannot be set", confidence="medium")),
    "azure": ("Azure deallocates the VM (eviction policy Deallocate, 30-second notice as a "
              "Preempt scheduled event); its disks stay and are billed, the temporary disk "
              "and memory are lost; start it again yourself, capacity permitting",
              Source("MicrosoftDocs/azure-compute-docs articles/virtual-machines/spot-vms.md "
                     "@3bbed19b",
                     "evicted when Azure needs the capacity or the price exceeds maxPrice; "
                     "Deallocate keeps the disks; -1 pays up to on-demand (ms.date "
                     "2024-08-05)")),
}


def profiles_for(cloud: Cloud) -> tuple[InstanceProfile, ...]:
    return tuple(p for p in PROFILES if p.cloud == cloud)


def find_profile(cloud: Cloud, name: str) -> InstanceProfile | None:
    return next((p for p in profiles_for(cloud) if p.name == name), None)


def clouds_offering(name: str) -> tuple[Cloud, ...]:
    """The clouds whose catalog holds a profile of this name (for error messages)."""
    return tuple(p.cloud for p in PROFILES if p.name == name)


def recommended_profile(cloud: Cloud) -> InstanceProfile:
    """The type the NVIDIA Clara guides used on this cloud (perhaps retired or refused)."""
    return next(p for p in profiles_for(cloud) if p.recommended)


# What a stack without `profile` builds: the guide's machine where the cloud still sells
# it in a shape it accepts, else its nearest current equivalent (stacks/Pulumi.<cloud>.yaml
# say why each).
DEFAULT_PROFILES: dict[Cloud, str] = {
    "aws": "g5.2xlarge",
    "gcp": "n1-highmem-8-v100",
    "azure": "Standard_NC24ads_A100_v4",
}


def default_profile(cloud: Cloud) -> InstanceProfile:
    profile = find_profile(cloud, DEFAULT_PROFILES[cloud])
    assert profile is not None
    return profile
