"""WorkstationSpec: what the user asked for, read from stack config and validated once.

Every later step (the cloud modules, the plan, the outputs) reads this one
frozen value and never the raw config, so a bad value is caught here, before
any resource is declared, with one line that names the config key, the bad
value and what is accepted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from components import catalog, images, nvidia
from components.catalog import CLOUDS, Cloud, InstanceProfile, OsImage
from components.images import ImagePreset

CONFIG_NAMESPACE = "gpu-workbench"

DEFAULT_OPEN_PORTS = (22, 8888, 8890, 5000)
DEFAULT_IMAGE_PRESET = "clara-train"
DEFAULT_CONTAINER_IMAGE = "nvcr.io/nvidia/clara-train-sdk:v4.1"
DEFAULT_ROOT_DISK_GB = 100
DEFAULT_DATA_VOLUME_GB = 200
DEFAULT_AUTOSTOP_MINUTES = 60
MAX_AUTOSTOP_MINUTES = 7 * 24 * 60
DATA_MOUNT = "/data"
MIN_ROOT_DISK_GB = 50  # the GPU images' own root snapshots are tens of GB
MAX_ROOT_DISK_GB = 16384
SSH_PORT = 22

# The default region is the one the catalog's prices were read for.
DEFAULT_REGIONS: dict[Cloud, str] = catalog.PRICE_REGIONS
REGION_PATTERNS: dict[Cloud, re.Pattern[str]] = {
    "aws": re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$"),
    "gcp": re.compile(r"^[a-z]+-[a-z]+\d+$"),
    "azure": re.compile(r"^[a-z]+[a-z0-9]*$"),
}
# The user each cloud's GPU image logs in as, unless the stack may choose one.
FIXED_SSH_USERS: dict[Cloud, str] = {"aws": "ubuntu"}
DEFAULT_ADMIN_USER_AZURE = "azureuser"
# Azure refuses these admin names at create time; say so before that.
AZURE_RESERVED_USERS = frozenset((
    "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1",
    "1", "123", "a", "actuser", "adm", "admin2", "aspnet", "backup", "console", "david",
    "guest", "john", "owner", "root", "server", "sql", "support", "support_388945a0", "sys",
    "test2", "test3", "user4", "user5",
))
LINUX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
IMAGE_REFERENCE = re.compile(r"^[a-z0-9]+([._/:@-][A-Za-z0-9_.-]+)*$")


def is_image_reference(value: str) -> bool:
    """An image reference as the stack takes it for containerImage: the one rule that
    `fab bootstrap --image` and the Slurm tasks' registry `--image` apply too.

    Whole-string match: `re.match` with `$` would let a trailing newline through.
    """
    return IMAGE_REFERENCE.fullmatch(value) is not None


TAG_KEY = re.compile(r"^[A-Za-z0-9_.:/+@ -]{1,63}$")

VOLUME_ID_PATTERNS: dict[Cloud, str] = {
    "aws": r"^vol-[0-9a-f]{8,17}$",
    "gcp": r"^projects/[a-z][-a-z0-9]*/zones/[a-z0-9-]+/disks/[a-z]([-a-z0-9]*[a-z0-9])?$",
    "azure": (r"^/subscriptions/[^/]+/resourceGroups/[^/]+"
              r"/providers/Microsoft\.Compute/disks/[^/]+$"),
}
VOLUME_ID_EXAMPLES: dict[Cloud, str] = {
    "aws": "vol-0123456789abcdef0",
    "gcp": "projects/PROJECT/zones/ZONE/disks/NAME",
    "azure": "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/disks/NAME",
}

# Shipped in the example stacks so that `scripts/plan` runs on a fresh clone.
# Nobody holds this key's private half and these CIDRs are documentation
# ranges (RFC 5737), so a real `pulumi up` with them is refused.
EXAMPLE_KEY_COMMENT = "replace-me@gpu-workbench"
EXAMPLE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
EXAMPLE_ACCOUNT_DOMAIN = "@example.com"


class SpecError(ValueError):
    """A stack config value that cannot be built. str() is the one line to print."""

    def __init__(self, key: str, value: object, problem: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        shown = "(not set)" if value is None else repr(value)
        super().__init__(f"{CONFIG_NAMESPACE}:{key}: {shown} {problem}")


@dataclass(frozen=True)
class WorkstationSpec:
    cloud: Cloud
    stack: str
    region: str
    zone: str | None
    profile: InstanceProfile
    gpu_count: int
    container_image: str  # a full image reference, presets resolved
    image_preset: ImagePreset | None  # None: an image outside the catalog
    allowed_cidrs: tuple[str, ...]
    open_ports: tuple[int, ...]
    app_ports_from_anywhere: bool
    ssh_public_key: str
    ssh_user: str
    root_disk_gb: int
    tags: tuple[tuple[str, str], ...]
    os_image: OsImage | None = None  # the catalog image for this cloud; None: machineImage
    gcp_project: str | None = None
    gcp_os_login_account: str | None = None
    gcp_os_login_kind: str = "user"  # user, external (outside the organisation), service
    machine_image: str | None = None
    azure_self_deallocate: bool = True  # the VM's identity may deallocate it (autostop)
    spot: bool = False  # Spot capacity: stopped or deallocated on interruption, never deleted
    spot_max_price_usd: float | None = None  # AWS/Azure cap; None: up to on-demand
    # What outlives `pulumi destroy`, and what stops the machine when idle.
    data_volume_gb: int = DEFAULT_DATA_VOLUME_GB  # 0: no data volume
    keep_data_volume: bool = True
    data_volume_id: str | None = None  # re-attach a kept volume instead of creating one
    autostop_minutes: int = DEFAULT_AUTOSTOP_MINUTES  # 0: off
    azure_daily_shutdown: str | None = None  # "HH:MM" UTC
    dataset_bucket: bool = False
    keep_dataset_bucket: bool = True
    mlflow: bool = False  # an MLflow tracking server beside the container (bootstrap)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name_prefix(self) -> str:
        """Prefix for every resource name: one stack's resources are easy to find."""
        return f"wb-{self.stack}"

    @property
    def app_ports(self) -> tuple[int, ...]:
        return tuple(p for p in self.open_ports if p != SSH_PORT)

    @property
    def has_data_volume(self) -> bool:
        return self.data_volume_id is not None or self.data_volume_gb > 0

    @property
    def hourly_cost_usd(self) -> float:
        """What it costs per hour as requested: the spot snapshot for spot."""
        if self.spot:
            cost = self.profile.spot_cost(self.gpu_count)
            assert cost is not None
            return cost
        return self.profile.hourly_cost(self.gpu_count)

    @property
    def on_demand_cost_usd(self) -> float:
        return self.profile.hourly_cost(self.gpu_count)

    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)


# --- reading config -------------------------------------------------------------------------

ConfigGetter = Callable[[str], "str | None"]


def load_spec(
    get: ConfigGetter, *, stack: str, project_dir: Path, deploying: bool,
    keys: Iterable[str] = (),
) -> WorkstationSpec:
    """Build the spec from raw config strings, as Pulumi hands them to a program.

    `get(key)` returns the raw string for `gpu-workbench:<key>` or None. Arrays
    arrive JSON-encoded, numbers and booleans as their text, as the Pulumi CLI
    passes them. `keys` are the keys the stack sets in the project namespace
    (without the prefix): one that Pulumi.yaml does not declare is refused.
    `deploying` is True for `pulumi up`: example placeholders that are fine for
    a plan are refused then.
    """
    _check_declared(keys, project_dir)
    reader = _Reader(get)
    warnings: list[str] = []

    cloud = reader.choice("cloud", CLOUDS, default=None)
    region = reader.text("region") or DEFAULT_REGIONS[cloud]
    if not REGION_PATTERNS[cloud].match(region):
        raise SpecError("region", region, f"is not a region name on {cloud} (e.g. "
                        f"{DEFAULT_REGIONS[cloud]})")
    zone = _zone(cloud, region, reader.text("zone"))

    profile = _profile(cloud, reader.text("profile"))
    gpu_count = reader.integer("gpuCount", default=profile.default_gpu_count)
    if gpu_count not in profile.gpu_counts:
        counts = ", ".join(str(c) for c in profile.gpu_counts)
        raise SpecError("gpuCount", gpu_count,
                        f"is not a GPU count {profile.name} offers; accepted: {counts}")
    machine_image = reader.text("machineImage")
    os_image = None if machine_image else catalog.os_image(cloud)
    spot, spot_max_price = _spot(cloud, profile, gpu_count, reader)
    _check_sold(cloud, profile, reader.boolean("allowRetiredProfile", default=False), spot,
                warnings)
    _check_shape(cloud, profile, gpu_count)
    _check_os_image(cloud, profile, os_image, machine_image, warnings)
    if region != catalog.PRICE_REGIONS[cloud]:
        warnings.append(
            f"prices are {catalog.PRICE_REGIONS[cloud]} list prices; {region} may differ."
        )

    container_image, image_preset = _container_image(
        reader.text("containerImage") or DEFAULT_IMAGE_PRESET, profile, os_image, warnings)

    open_ports = _ports(reader.json_list("openPorts", default=list(DEFAULT_OPEN_PORTS)))
    anywhere_ok = reader.boolean("allowAppPortsFromAnywhere", default=False)
    allowed_cidrs = _cidrs(reader.json_list("allowedCidrs", default=None))
    _check_exposure(allowed_cidrs, open_ports, anywhere_ok, warnings)

    ssh_public_key = _ssh_public_key(reader.text("sshPublicKey"), project_dir)
    ssh_user, os_login_account, os_login_kind = _ssh_user(cloud, reader)
    root_disk_gb = reader.integer("rootDiskGb", default=DEFAULT_ROOT_DISK_GB)
    if not MIN_ROOT_DISK_GB <= root_disk_gb <= MAX_ROOT_DISK_GB:
        raise SpecError("rootDiskGb", root_disk_gb,
                        f"is out of range; accepted: {MIN_ROOT_DISK_GB} to {MAX_ROOT_DISK_GB}")

    tags = _tags(reader.json_list("tags", default=[]), stack)
    gcp_project = reader.text("gcpProject")
    if gcp_project is not None and cloud != "gcp":
        raise SpecError("gcpProject", gcp_project, f"applies to gcp stacks only, not {cloud}")
    if machine_image is not None and cloud == "azure" and len(machine_image.split(":")) != 4:
        raise SpecError("machineImage", machine_image,
                        "is not an Azure image URN; accepted: publisher:offer:sku:version")
    if machine_image is not None and cloud == "aws" and not re.match(
            r"^ami-[0-9a-f]{8,17}$", machine_image):
        raise SpecError("machineImage", machine_image,
                        "is not an AMI ID; accepted: ami-0123456789abcdef0 (the machine_image "
                        "output of an earlier `pulumi up` pins it)")

    _check_placeholders(ssh_public_key, allowed_cidrs, os_login_account, deploying, warnings)
    lifecycle = _lifecycle(cloud, zone, reader)

    return WorkstationSpec(
        cloud=cloud,
        stack=stack,
        region=region,
        zone=zone,
        profile=profile,
        gpu_count=gpu_count,
        container_image=container_image,
        image_preset=image_preset,
        allowed_cidrs=allowed_cidrs,
        open_ports=open_ports,
        app_ports_from_anywhere=anywhere_ok,
        ssh_public_key=ssh_public_key,
        ssh_user=ssh_user,
        root_disk_gb=root_disk_gb,
        tags=tags,
        os_image=os_image,
        gcp_project=gcp_project,
        gcp_os_login_account=os_login_account,
        gcp_os_login_kind=os_login_kind,
        machine_image=machine_image,
        azure_self_deallocate=_azure_identity(cloud, reader, lifecycle, warnings),
        spot=spot,
        spot_max_price_usd=spot_max_price,
        **lifecycle,
        warnings=tuple(warnings),
    )


class _Reader:
    """Typed access to raw config strings; each failure names its key."""

    def __init__(self, get: ConfigGetter) -> None:
        self._get = get

    def text(self, key: str) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def choice(self, key: str, accepted: tuple[Cloud, ...], default: Cloud | None) -> Cloud:
        value = self.text(key)
        if value is None and default is not None:
            return default
        if value not in accepted:
            raise SpecError(key, value, f"is not accepted; accepted: {', '.join(accepted)}")
        return cast(Cloud, value)

    def integer(self, key: str, default: int) -> int:
        value = self.text(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise SpecError(key, value, "is not a whole number") from None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.text(key)
        if value is None:
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise SpecError(key, value, "is not accepted; accepted: true, false")

    def json_list(self, key: str, default: list[Any] | None) -> list[Any]:
        value = self.text(key)
        if value is None:
            if default is None:
                raise SpecError(key, None, "must be set: a list, e.g. [\"203.0.113.7/32\"]")
            return default
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise SpecError(key, value, "is not a list; write it as a YAML list") from None
        if not isinstance(parsed, list):
            raise SpecError(key, parsed, "is not a list; write it as a YAML list")
        return parsed


def _container_image(
    value: str, profile: InstanceProfile, os_image: OsImage | None, warnings: list[str]
) -> tuple[str, ImagePreset | None]:
    """A preset name or an image reference; refuse one the GPU or the image's driver
    cannot run."""
    preset = images.find_preset(value)
    if preset is None:
        if not is_image_reference(value):
            raise SpecError("containerImage", value, "is neither a preset ("
                            + ", ".join(p.name for p in images.PRESETS)
                            + ") nor an image reference (e.g. nvcr.io/nvidia/pytorch:25.01-py3)")
        warnings.append(f"{value} is not in the image catalog: its CUDA version is unknown, "
                        "so only the bootstrap's driver check applies.")
        return value, None
    try:
        warnings.extend(images.check_gpu(preset, profile.gpu, gpu_label=profile.name))
    except images.Incompatible as err:
        raise SpecError("containerImage", value, f"cannot run here: {err}") from None
    need = nvidia.CUDA_MIN_DRIVER.get(preset.cuda[0])
    if os_image is not None and os_image.driver_min is not None:
        try:
            images.check_driver(preset, os_image.driver_min)
        except images.Incompatible as err:
            raise SpecError("containerImage", value, f"cannot run on {os_image.name}: "
                            f"{err}") from None
    elif need is not None and preset.cuda[0] >= 13:
        image = os_image.name if os_image else "machineImage"
        warnings.append(f"{preset.image} needs NVIDIA driver {need} or newer; the driver of "
                        f"{image} is not documented, so the bootstrap's compat step checks it "
                        "on the host before pulling.")
    return preset.image, preset


def _check_declared(keys: Iterable[str], project_dir: Path) -> None:
    """A key Pulumi.yaml does not declare is a typo until proven otherwise: Pulumi would
    ignore it without a word."""
    keys = sorted(keys)
    declared = declared_keys(project_dir) if keys else frozenset()
    for key in keys:
        if key not in declared:
            near = difflib.get_close_matches(key, sorted(declared), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else "see Pulumi.yaml for the keys"
            raise SpecError(key, "(set)", "is not a key "
                            f"{CONFIG_NAMESPACE} declares in Pulumi.yaml; {hint}")


def declared_keys(project_dir: Path) -> frozenset[str]:
    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text()) or {}
    return frozenset((project.get("config") or {}).keys())


def _spot(cloud: Cloud, profile: InstanceProfile, gpu_count: int, reader: _Reader
          ) -> tuple[bool, float | None]:
    """spot and its price cap, refused where the cloud or the catalog says it cannot work."""
    spot = reader.boolean("spot", default=False)
    cap_text = reader.text("spotMaxPriceUsd")
    if cap_text is None:
        cap = None
    else:
        if not spot:
            raise SpecError("spotMaxPriceUsd", cap_text, "applies with spot: true only; set "
                            f"{CONFIG_NAMESPACE}:spot: true, or remove the cap")
        if cloud == "gcp":
            raise SpecError("spotMaxPriceUsd", cap_text, "cannot be set on gcp: Spot VMs take "
                            "no price cap (they are preempted for capacity, not price); remove it")
        try:
            cap = float(cap_text)
        except ValueError:
            raise SpecError("spotMaxPriceUsd", cap_text, "is not a price in USD per hour, "
                            "e.g. \"0.60\"") from None
        if cap <= 0:
            raise SpecError("spotMaxPriceUsd", cap_text, "must be more than 0 (leave it unset "
                            "to pay up to the on-demand price)")
    if not spot:
        return False, None
    current = profile.spot_cost(gpu_count)
    if not profile.sold_as_spot or current is None:
        spot_types = [p.name for p in catalog.profiles_for(cloud)
                      if p.sold and p.sold_as_spot and p.gpu.model == profile.gpu.model]
        alternative = (f"use {spot_types[0]} for spot" if spot_types
                       else "remove spot for on-demand")
        raise SpecError("spot", "true", f"is not possible with {profile.name}: the catalog "
                        f"has no spot price for it in {catalog.PRICE_REGIONS[cloud]} "
                        f"({profile.sources[-1].cite()}); {alternative}")
    if cap is not None and cap < current:
        raise SpecError("spotMaxPriceUsd", cap_text, f"is below {profile.name}'s spot price "
                        f"${current:.4g}/h ({catalog.PRICE_REGIONS[cloud]}, read "
                        f"{catalog.PRICES_READ_ON}): the request would wait or be evicted at "
                        f"once; raise it, or leave it unset to pay up to on-demand")
    return True, cap


def _check_sold(cloud: Cloud, profile: InstanceProfile, allow_retired: bool, spot: bool,
                warnings: list[str]) -> None:
    """Retired types are refused (a reservation holder may opt in); a type sold only as
    Spot or Flex-start is refused on demand."""
    retirement = profile.retirement
    if retirement is not None:
        what = (f"is no longer offered on {cloud}: retired {retirement.since} "
                f"({retirement.source.cite()})")
        if not allow_retired:
            raise SpecError("profile", profile.name, f"{what}; use {retirement.replacement}, or "
                            f"set {CONFIG_NAMESPACE}:allowRetiredProfile: true if you hold a "
                            "reservation")
        warnings.append(f"{profile.name} {what}; building it because allowRetiredProfile is "
                        "true: `pulumi up` fails unless your account still has capacity.")
    if not profile.on_demand and not spot:
        others = [p.name for p in catalog.profiles_for(cloud)
                  if p.gpu.model == profile.gpu.model and p.on_demand and p.sold]
        same_class = [p.name for p in catalog.profiles_for(cloud)
                      if p.gpu.architecture == "Ampere" and p.on_demand and p.sold]
        alternative = (others or same_class or ["another profile"])[0]
        raise SpecError("profile", profile.name,
                        f"is sold on {cloud} only as {' or '.join(profile.sold_as)}, not "
                        f"on-demand ({profile.sources[-1].cite()}); set {CONFIG_NAMESPACE}:spot: "
                        f"true, or use {alternative} on-demand")


def _check_shape(cloud: Cloud, profile: InstanceProfile, gpu_count: int) -> None:
    """GPU counts and vCPU/memory shapes the cloud refuses at create time."""
    why = profile.shape_refusal(gpu_count)
    if why is None:
        return
    limits = profile.shape_limits
    assert limits is not None
    fixes = []
    fewest = limits.fewest_gpus_for(profile.vcpus, profile.memory_gib)
    if fewest is not None and fewest in profile.gpu_counts:
        fixes.append(f"gpuCount {fewest}")
    fits = [p.name for p in catalog.profiles_for(cloud)
            if p.gpu == profile.gpu and p.sold and p.shape_refusal(gpu_count) is None]
    if fits:
        fixes.append(f"profile {fits[0]}")
    raise SpecError("gpuCount", gpu_count,
                    f"with profile {profile.name} ({profile.machine_type} + {profile.gpu.model}) "
                    f"is refused by {cloud}: {why} ({limits.source.cite()}); use "
                    + " or ".join(fixes))


def _check_os_image(cloud: Cloud, profile: InstanceProfile, os_image: OsImage | None,
                    machine_image: str | None, warnings: list[str]) -> None:
    """The OS image's driver must drive the GPU; a GPU the cloud's GPU image cannot serve
    is refused with a profile it can."""
    if os_image is None:
        warnings.append(f"machineImage {machine_image}: its NVIDIA driver is whatever that image "
                        "carries; the bootstrap's compat and check steps test it on the host.")
        return
    why = nvidia.driver_cannot_drive(os_image.driver_branch, os_image.kernel_modules,
                                     profile.gpu) or profile.image_refusal
    if why is not None:
        drivable = [p.name for p in catalog.profiles_for(cloud) if p.sold and p.on_demand
                    and p.image_refusal is None and nvidia.driver_cannot_drive(
                        os_image.driver_branch, os_image.kernel_modules, p.gpu) is None]
        raise SpecError("profile", profile.name,
                        f"cannot be driven by {cloud}'s GPU image {os_image.name}: {why}; use "
                        f"{drivable[0]}, or set {CONFIG_NAMESPACE}:machineImage to an image "
                        "whose driver drives it")
    if profile.gpu.compute_capability < nvidia.TURING and os_image.kernel_modules == "unknown":
        warnings.append(
            f"{os_image.name} carries R{os_image.driver_branch}, the last branch for "
            f"{profile.gpu.architecture}, which drives the {profile.gpu.model} only with "
            "NVIDIA's proprietary kernel modules; which flavour this image loads is not "
            "documented, so the bootstrap's check step tells.")


def _lifecycle(cloud: Cloud, zone: str | None, reader: _Reader) -> dict[str, Any]:
    """Data volume, dataset bucket and stop policy keys."""
    data_volume_gb = reader.integer("dataVolumeGb", default=DEFAULT_DATA_VOLUME_GB)
    if data_volume_gb != 0 and not 10 <= data_volume_gb <= MAX_ROOT_DISK_GB:
        raise SpecError("dataVolumeGb", data_volume_gb, "is out of range; accepted: 0 (no "
                        f"data volume) or 10 to {MAX_ROOT_DISK_GB}")
    data_volume_id = reader.text("dataVolumeId")
    if data_volume_id is not None and not re.match(VOLUME_ID_PATTERNS[cloud], data_volume_id):
        raise SpecError("dataVolumeId", data_volume_id,
                        f"is not a {cloud} disk ID; accepted: {VOLUME_ID_EXAMPLES[cloud]}")
    if data_volume_id is not None and cloud == "gcp":
        disk_zone = data_volume_id.split("/")[3]
        if disk_zone != zone:
            raise SpecError("dataVolumeId", data_volume_id, f"is in zone {disk_zone}, not the "
                            f"stack's zone {zone}; set {CONFIG_NAMESPACE}:zone: {disk_zone}")
    autostop = reader.integer("autostopMinutes", default=DEFAULT_AUTOSTOP_MINUTES)
    if not 0 <= autostop <= MAX_AUTOSTOP_MINUTES:
        raise SpecError("autostopMinutes", autostop, "is out of range; accepted: 0 (off) to "
                        f"{MAX_AUTOSTOP_MINUTES}")
    daily = reader.text("azureDailyShutdown")
    if daily is not None:
        if cloud != "azure":
            raise SpecError("azureDailyShutdown", daily, f"applies to azure stacks only, not "
                            f"{cloud}")
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", daily):
            raise SpecError("azureDailyShutdown", daily, "is not a time; accepted: HH:MM "
                            "(24-hour, UTC), e.g. 22:00")
    return {
        "data_volume_gb": data_volume_gb,
        "keep_data_volume": reader.boolean("keepDataVolume", default=True),
        "data_volume_id": data_volume_id,
        "autostop_minutes": autostop,
        "azure_daily_shutdown": daily,
        "dataset_bucket": reader.boolean("datasetBucket", default=False),
        "keep_dataset_bucket": reader.boolean("keepDatasetBucket", default=True),
        "mlflow": reader.boolean("mlflow", default=False),
    }


def _zone(cloud: Cloud, region: str, zone: str | None) -> str | None:
    if cloud == "gcp":
        zone = zone or f"{region}-a"
        if not re.match(rf"^{re.escape(region)}-[a-z]$", zone):
            raise SpecError("zone", zone, f"is not a zone of region {region} (e.g. {region}-a)")
    elif cloud == "aws" and zone is not None:
        if not re.match(rf"^{re.escape(region)}[a-z]$", zone):
            raise SpecError("zone", zone, f"is not an availability zone of {region} "
                            f"(e.g. {region}a)")
    elif cloud == "azure" and zone is not None and zone not in ("1", "2", "3"):
        raise SpecError("zone", zone, "is not an Azure availability zone; accepted: 1, 2, 3")
    return zone


def _profile(cloud: Cloud, name: str | None) -> InstanceProfile:
    if name is None:
        return catalog.default_profile(cloud)
    profile = catalog.find_profile(cloud, name)
    if profile is not None:
        return profile
    names = ", ".join(p.name for p in catalog.profiles_for(cloud))
    elsewhere = catalog.clouds_offering(name)
    if elsewhere:
        raise SpecError("profile", name, f"is a {'/'.join(elsewhere)} profile, not offered "
                        f"on {cloud}; {cloud} profiles: {names}")
    raise SpecError("profile", name, f"is not a known profile; {cloud} profiles: {names}")


def _ports(values: list[Any]) -> tuple[int, ...]:
    ports: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise SpecError("openPorts", value, "is not a TCP port; accepted: 1 to 65535")
        if value not in ports:
            ports.append(value)
    if SSH_PORT not in ports:
        raise SpecError("openPorts", values, "must include 22: the bootstrap and the "
                        "tunnel reach the workstation over SSH")
    return tuple(ports)


def _cidrs(values: list[Any]) -> tuple[str, ...]:
    if not values:
        raise SpecError("allowedCidrs", values, "is empty; give at least one CIDR, e.g. your "
                        "own address as [\"203.0.113.7/32\"]")
    cidrs: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise SpecError("allowedCidrs", value, "is not a CIDR such as 203.0.113.7/32")
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as err:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {ipaddress.ip_network(value.strip(), strict=False)}?)"
            raise SpecError("allowedCidrs", value,
                            f"is not a valid CIDR: {err}{hint}") from None
        if str(network) not in cidrs:
            cidrs.append(str(network))
    return tuple(cidrs)


def open_to_anywhere(cidrs: tuple[str, ...]) -> list[str]:
    """The address families the CIDRs cover completely, as 0.0.0.0/0 or ::/0: one /0, or
    several ranges that together are the whole space (0.0.0.0/1 + 128.0.0.0/1)."""
    whole = []
    for everything in ("0.0.0.0/0", "::/0"):
        family = ipaddress.ip_network(everything)
        nets = [n for n in map(ipaddress.ip_network, cidrs) if n.version == family.version]
        if list(ipaddress.collapse_addresses(nets)) == [family]:  # type: ignore[type-var]
            whole.append(everything)
    return whole


def _check_exposure(
    cidrs: tuple[str, ...], ports: tuple[int, ...], anywhere_ok: bool, warnings: list[str]
) -> None:
    anywhere = open_to_anywhere(cidrs)
    if not anywhere:
        return
    app_ports = [p for p in ports if p != SSH_PORT]
    if app_ports and not anywhere_ok:
        together = "" if anywhere[0] in cidrs else f" (together they are {anywhere[0]})"
        shown = anywhere[0] if anywhere[0] in cidrs else list(cidrs)
        raise SpecError("allowedCidrs", shown,
                        f"would open app ports {', '.join(map(str, app_ports))} to the whole "
                        f"internet{together}; use your own CIDR, or set "
                        f"{CONFIG_NAMESPACE}:allowAppPortsFromAnywhere: true to accept that")
    if app_ports:
        warnings.append(
            f"app ports {', '.join(map(str, app_ports))} are open to {', '.join(anywhere)} "
            "(allowAppPortsFromAnywhere: true); JupyterLab relies on its token alone."
        )
    warnings.append(f"SSH (22) is open to {', '.join(anywhere)}; key-only login, but "
                    "expect scanners.")


def _ssh_public_key(value: str | None, project_dir: Path) -> str:
    if value is None:
        raise SpecError("sshPublicKey", None, "must be set: your SSH public key, or a path "
                        "to it such as ~/.ssh/id_ed25519.pub")
    text = value
    if not value.startswith(SSH_KEY_TYPES):
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = project_dir / path
        if not path.is_file():
            raise SpecError("sshPublicKey", value, "is neither a public key nor a readable "
                            "file; accepted: an OpenSSH public key (ssh-ed25519 AAAA...) or "
                            "its path")
        text = path.read_text(errors="replace").strip()
    if "PRIVATE KEY" in text:
        raise SpecError("sshPublicKey", value, "is a private key; give the .pub file")
    parts = text.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise SpecError("sshPublicKey", value, "is not an OpenSSH public key; accepted types: "
                        + ", ".join(SSH_KEY_TYPES))
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise SpecError("sshPublicKey", value, "has a key body that is not base64") from None
    # The blob starts with its own type name: a length-prefixed string.
    type_len = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4:4 + type_len].decode(errors="replace") != parts[0]:
        raise SpecError("sshPublicKey", value, f"is damaged: its body is not a {parts[0]} key")
    return " ".join(parts[:3])


def _ssh_user(cloud: Cloud, reader: _Reader) -> tuple[str, str | None, str]:
    """The login user; on GCP also the Google account whose OS Login profile gets the key,
    and its kind (user, external, service), which decides the login name."""
    admin_user = reader.text("adminUser")
    account = reader.text("gcpOsLoginAccount")
    external = reader.boolean("gcpOsLoginExternal", default=False)
    if account is not None and cloud != "gcp":
        raise SpecError("gcpOsLoginAccount", account, f"applies to gcp stacks only, not {cloud}")
    if external and cloud != "gcp":
        raise SpecError("gcpOsLoginExternal", "true", f"applies to gcp stacks only, not {cloud}")
    if cloud in FIXED_SSH_USERS:
        fixed = FIXED_SSH_USERS[cloud]
        if admin_user not in (None, fixed):
            raise SpecError("adminUser", admin_user, f"cannot be chosen on {cloud}: its GPU "
                            f"image logs in as {fixed}; remove the key or set it to {fixed}")
        return fixed, None, "user"
    if cloud == "gcp":
        if account is None or not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", account):
            raise SpecError("gcpOsLoginAccount", account, "must be the Google account (e.g. "
                            "you@your-university.edu) whose OS Login profile gets the key")
        if admin_user is not None:
            raise SpecError("adminUser", admin_user, "cannot be chosen on gcp: OS Login derives "
                            "the login user from gcpOsLoginAccount; remove the key")
        kind = ("service" if account.lower().endswith(".gserviceaccount.com")
                else "external" if external else "user")
        return os_login_user(account, kind), account, kind
    user = admin_user or DEFAULT_ADMIN_USER_AZURE
    if user in AZURE_RESERVED_USERS:
        raise SpecError("adminUser", user, "is reserved on Azure; e.g. azureuser")
    if not LINUX_USER.match(user):
        raise SpecError("adminUser", user, "is not a Linux user name ([a-z_][a-z0-9_-]*, "
                        "at most 32 characters)")
    return user, account, "user"


# OS Login's POSIX names (GoogleCloudPlatform/compute-image-packages#692, 2018-11-28;
# hashicorp/packer-plugin-googlecompute#254/#272, 2025-05; google/syzkaller#4423,
# 2024-01-10; read 2026-11-23): the email with every character outside [a-z0-9]
# turned into "_"; accounts outside the organisation get "ext_" and are cut to 32
# characters; service accounts are sa_<numeric unique id>, known only to Google.
SERVICE_ACCOUNT_USER = "sa_{unique_id}"


def os_login_user(account: str, kind: str) -> str:
    if kind == "service":
        return SERVICE_ACCOUNT_USER
    name = re.sub(r"[^a-z0-9]", "_", account.lower())
    return ("ext_" + name)[:32] if kind == "external" else name


def _azure_identity(cloud: Cloud, reader: _Reader, lifecycle: dict[str, Any],
                    warnings: list[str]) -> bool:
    """Whether the VM gets an identity that may deallocate it (the idle autostop)."""
    wanted = reader.boolean("azureSelfDeallocate", default=True)
    if cloud != "azure":
        if reader.text("azureSelfDeallocate") is not None:
            raise SpecError("azureSelfDeallocate", reader.text("azureSelfDeallocate"),
                            f"applies to azure stacks only, not {cloud}")
        return False
    if lifecycle["autostop_minutes"] and not wanted:
        fallback = (f"Azure's daily auto-shutdown at {lifecycle['azure_daily_shutdown']} "
                    "deallocates it" if lifecycle["azure_daily_shutdown"] else
                    "set azureDailyShutdown: \"22:00\" so Azure's own schedule deallocates it")
        warnings.append("azureSelfDeallocate is false: the idle autostop can only power the VM "
                        "off, which Azure keeps billing for; " + fallback + ".")
    return wanted and bool(lifecycle["autostop_minutes"])


def _tags(values: list[Any], stack: str) -> tuple[tuple[str, str], ...]:
    tags: dict[str, str] = {"project": "gpu-workbench", "stack": stack}
    for value in values:
        if not isinstance(value, str) or "=" not in value:
            raise SpecError("tags", value, "is not a tag; accepted: \"key=value\" strings")
        key, _, tag_value = value.partition("=")
        key = key.strip()
        if not TAG_KEY.match(key):
            raise SpecError("tags", value, "has a key that clouds refuse; use letters, "
                            "digits and _.:/+@- (at most 63)")
        if key in ("project", "stack"):
            raise SpecError("tags", value, "overrides a tag gpu-workbench sets itself "
                            "(project, stack); use another key")
        tags[key] = tag_value.strip()
    return tuple(tags.items())


def _check_placeholders(
    key: str,
    cidrs: tuple[str, ...],
    account: str | None,
    deploying: bool,
    warnings: list[str],
) -> None:
    """The example stacks plan on a fresh clone; `pulumi up` needs the user's own values."""
    found: list[tuple[str, str]] = []
    if key.endswith(EXAMPLE_KEY_COMMENT):
        found.append(("sshPublicKey", "the example key shipped with gpu-workbench"))
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        if any(network.version == ex.version and network.subnet_of(ex)  # type: ignore[arg-type]
               for ex in EXAMPLE_NETWORKS):
            found.append(("allowedCidrs", f"{cidr}, a documentation range nobody connects from"))
    if account is not None and account.endswith(EXAMPLE_ACCOUNT_DOMAIN):
        found.append(("gcpOsLoginAccount", f"{account}, an example account"))
    for key_name, what in found:
        if deploying:
            raise SpecError(key_name, what, "is an example value; set your own before "
                            "`pulumi up`")
        warnings.append(f"{CONFIG_NAMESPACE}:{key_name} is {what}; set your own before "
                        "`pulumi up`.")
