"""`scripts/plan STACK`: the offline plan of one stack, printed for a person.

Everything printed as fact is read back from what the program declared under
the mock engine (resource inputs, invoke arguments, exports) plus the
catalog; values only a cloud can give print as "(known after up)".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from bootstrap.onhost.workbench_idle_check import check_interval_ms, human_span
from components import catalog, images, network
from stacktools.mock_engine import (
    KNOWN_AFTER_UP,
    PROJECT_DIR,
    DeclaredResource,
    OfflineError,
    ProgramRun,
    read_stack_config,
    run_program,
    stack_file,
)

# --- reading facts back from the declared resources ----------------------------------------


def firewall_openings(run: ProgramRun) -> dict[int, list[str]]:
    """Port -> source CIDRs, as the declared firewall resources open them."""
    opened: dict[int, list[str]] = defaultdict(list)
    for rule in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        inputs = rule.inputs
        assert inputs["fromPort"] == inputs["toPort"], "one port per rule"
        opened[int(inputs["fromPort"])].append(inputs.get("cidrIpv4") or inputs["cidrIpv6"])
    for firewall in run.of_type("gcp:compute/firewall:Firewall"):
        for allow in firewall.inputs["allows"]:
            for port in allow["ports"]:
                opened[int(port)].extend(firewall.inputs["sourceRanges"])
    for nsg in run.of_type("azure-native:network:NetworkSecurityGroup"):
        for rule in nsg.inputs.get("securityRules", []):
            if rule["direction"] == "Inbound" and rule["access"] == "Allow":
                opened[int(rule["destinationPortRange"])].extend(rule["sourceAddressPrefixes"])
    return {port: opened[port] for port in sorted(opened)}


@dataclass(frozen=True)
class Machine:
    cloud: catalog.Cloud
    machine_type: str
    gpu_count: int
    profile: catalog.InstanceProfile | None
    image: str
    disk: str


def declared_machine(run: ProgramRun) -> Machine:
    """The instance as declared: type, GPU count, OS image and root disk."""
    for vm in run.of_type("aws:ec2/instance:Instance"):
        lookups = run.invokes_of("aws:ssm/getParameter:getParameter")
        image = (f"AMI from public SSM parameter {lookups[0].args['name']} (AMI ID "
                 f"{KNOWN_AFTER_UP}; pin it with machineImage: <the machine_image output>)"
                 if lookups else f"pinned AMI {vm.inputs['ami']} (machineImage)")
        disk = vm.inputs["rootBlockDevice"]
        return _machine(
            "aws", vm.inputs["instanceType"], None, image,
            f"{disk['volumeSize']:.0f} GB {disk['volumeType']}"
            f"{', encrypted' if disk.get('encrypted') else ', NOT encrypted'}",
        )
    for vm in run.of_type("gcp:compute/instance:Instance"):
        accelerators = vm.inputs.get("guestAccelerators") or []
        params = vm.inputs["bootDisk"]["initializeParams"]
        return _machine(
            "gcp", vm.inputs["machineType"],
            int(sum(a["count"] for a in accelerators)) if accelerators else None,
            params["image"],
            f"{params['size']:.0f} GB {params['type']}, encrypted (Google-managed key)",
        )
    for vm in run.of_type("azure-native:compute:VirtualMachine"):
        ref = vm.inputs["storageProfile"]["imageReference"]
        plan = vm.inputs.get("plan") or {}
        os_disk = vm.inputs["storageProfile"]["osDisk"]
        return _machine(
            "azure", vm.inputs["hardwareProfile"]["vmSize"], None,
            f"{ref['publisher']}:{ref['offer']}:{ref['sku']}:{ref['version']} "
            f"(Marketplace plan {plan.get('publisher')}/{plan.get('product')}/{plan.get('name')})",
            f"{os_disk['diskSizeGB']:.0f} GB {os_disk['managedDisk']['storageAccountType']}, "
            "encrypted at rest (platform-managed key)",
        )
    raise OfflineError("the program declared no instance")


def _machine(
    cloud: catalog.Cloud, machine_type: str, gpu_count: int | None, image: str, disk: str
) -> Machine:
    profile = next((p for p in catalog.profiles_for(cloud) if p.machine_type == machine_type
                    and (gpu_count is None or gpu_count in p.gpu_counts)), None)
    count = gpu_count if gpu_count is not None else (profile.default_gpu_count if profile else 0)
    return Machine(cloud, machine_type, count, profile, image, disk)


@dataclass(frozen=True)
class Kept:
    """What outlives `pulumi destroy`, and what it costs per month."""

    lines: tuple[str, ...]
    monthly_usd: float


def kept_after_destroy(run: ProgramRun, cloud: catalog.Cloud) -> Kept:
    lines: list[str] = []
    monthly = 0.0
    disks = [r for r in run.resources if r.type in catalog.DATA_DISK_TYPES]
    for disk in disks:
        size = float(disk.inputs[catalog.DATA_DISK_TYPES[disk.type][1]])
        # AWS and GCP name the disk kind in "type"; Azure in its SKU.
        kind = disk.inputs.get("type") or disk.inputs["sku"]["name"]
        cost = catalog.disk_monthly_usd(cloud, size)
        if disk.retain_on_delete:
            monthly += cost
            lines.append(f"data volume {size:.0f} GB {kind}, mounted at /data: KEPT by "
                         f"`pulumi destroy` (${cost:.2f}/month while kept)")
        else:
            lines.append(f"data volume {size:.0f} GB {kind}, mounted at /data: deleted by "
                         "`pulumi destroy` (keepDataVolume: false)")
    reattached = run.outputs.get("data_volume_id")
    if not disks and reattached:
        # Attached by ID (dataVolumeId): the program declared no disk to delete.
        disk_kind, per_gb = catalog.DISK_PRICES[cloud]
        known_size = run.outputs.get("data_volume_gb")
        price = (f"${catalog.disk_monthly_usd(cloud, float(known_size)):.2f}/month while kept"
                 if isinstance(known_size, int | float) else
                 f"${per_gb}/GB-month as {disk_kind}; its size is read at up (data_volume_gb)")
        lines.append(f"data volume {reattached}: re-attached at /data; not this stack's to "
                     f"delete, so `pulumi destroy` leaves it ({price})")
    if not lines:
        lines.append("no data volume (dataVolumeGb: 0): everything on the machine goes "
                     "with `pulumi destroy`")
    for bucket in (r for r in run.resources if r.type in catalog.BUCKET_TYPES):
        rate = catalog.BUCKET_PRICES[cloud]
        fate = ("KEPT by `pulumi destroy`, billed by use" if bucket.retain_on_delete
                else "emptied and deleted by `pulumi destroy`")
        lines.append(f"dataset bucket {bucket.name}: private, encrypted; {fate} "
                     f"(${rate}/GB-month)")
    return Kept(tuple(lines), round(monthly, 2))


def declared_spot(run: ProgramRun, cloud: catalog.Cloud) -> bool:
    """Whether the program asked for Spot capacity, read from what it declared."""
    if cloud == "aws":
        options = run.one("aws:ec2/instance:Instance").inputs.get("instanceMarketOptions") or {}
        return bool(options.get("marketType") == "spot")
    if cloud == "gcp":
        scheduling = run.one("gcp:compute/instance:Instance").inputs.get("scheduling") or {}
        return scheduling.get("provisioningModel") == "SPOT"
    return run.one("azure-native:compute:VirtualMachine").inputs.get("priority") == "Spot"


def quota_lines(profile: catalog.InstanceProfile, gpu_count: int, region: str,
                spot: bool = False) -> list[str]:
    """The quotas a machine draws on, how much, and the command or page to raise them."""
    lines = []
    for quota, need in profile.quota_needs(gpu_count, spot):
        where = region if quota.scope == "per region" else "all regions"
        request = catalog.QUOTA_REQUESTS[profile.cloud].format(
            code=quota.code, need=need, region=region)
        unit = quota.unit if need != 1 else quota.unit[:-1]
        lines.append(f"{quota.code} ({quota.name}): {need} {unit} in {where}; "
                     f"raise it: {request}")
    return lines


def up_needs(run: ProgramRun, cloud: catalog.Cloud) -> list[str]:
    """What the identity running `pulumi up` must have, beyond creating the resources."""
    lines = []
    if cloud == "azure":
        vm = run.one("azure-native:compute:VirtualMachine")
        plan = vm.inputs.get("plan") or {}
        ref = vm.inputs["storageProfile"]["imageReference"]
        lines.append("the Marketplace terms of the image, once per subscription: az vm image "
                     f"terms accept --urn {ref['publisher']}:{ref['offer']}:{ref['sku']}:"
                     f"{ref['version']} (plan {plan.get('name')})")
        if run.of_type("azure-native:authorization:RoleAssignment"):
            lines.append("Microsoft.Authorization/roleDefinitions/write and roleAssignments/"
                         "write (Owner or User Access Administrator): the VM gets a custom role "
                         "that may read and deallocate itself only; a Contributor sets "
                         "azureSelfDeallocate: false")
    if cloud == "gcp":
        account = run.config.get("gpu-workbench:gcpOsLoginAccount", "")
        lines.append(f"to run as {account}: the key goes into the OS Login profile of the "
                     "identity running `pulumi up`, and the OS Login API lets a caller add keys "
                     "to its own profile only (checked at up)")
        user = run.outputs.get("ssh_user")
        rule = ("a service account's login is sa_<its numeric unique id>"
                if account.endswith(".gserviceaccount.com") else
                "the email with every character outside a-z0-9 as _, with ext_ and cut to 32 "
                "characters for an account outside the organisation (gcpOsLoginExternal)")
        lines.append(f"login user {user}: OS Login's name for it ({rule})")
    return lines


def stop_policy(run: ProgramRun, cloud: catalog.Cloud) -> list[str]:
    minutes = run.outputs.get("autostop_minutes")
    if not minutes:
        return ["autostop off (autostopMinutes: 0): the machine bills until you stop it"]
    every = check_interval_ms(float(minutes) * 60) / 1000
    lines = [f"autostop after {minutes} idle minutes (no GPU use or GPU process, no SSH or app "
             "connection, no busy Jupyter kernel), installed by the bootstrap; a check every "
             f"{human_span(every)}: it stops about {human_span(float(minutes) * 60 + every)} "
             "after the last activity at most (docs/autostop.md)"]
    if cloud == "aws":
        behaviour = run.one("aws:ec2/instance:Instance").inputs.get(
            "instanceInitiatedShutdownBehavior")
        lines.append(f"stop = guest poweroff; shutdown behaviour '{behaviour}': the instance "
                     "stops and compute billing ends")
    elif cloud == "gcp":
        lines.append("stop = guest poweroff: the VM goes to TERMINATED and compute billing ends")
    else:
        assignments = run.of_type("azure-native:authorization:RoleAssignment")
        if assignments:
            lines.append("stop = deallocate, by the VM's own managed identity (role "
                         "assignment on this VM only); a guest poweroff alone keeps billing")
        for schedule in run.of_type("azure-native:devtestlab:GlobalSchedule"):
            time = schedule.inputs["dailyRecurrence"]["time"]
            lines.append(f"daily auto-shutdown (deallocate) at {time[:2]}:{time[2:]} "
                         f"{schedule.inputs['timeZoneId']}")
    return lines


# --- rendering ------------------------------------------------------------------------------


def resource_tree(run: ProgramRun) -> list[str]:
    """Declared resources as a tree under their parents, like `pulumi preview`."""
    children: dict[str, list[DeclaredResource]] = defaultdict(list)
    for resource in run.resources:
        children[resource.parent_urn].append(resource)

    def ordered(urn: str) -> list[DeclaredResource]:
        return sorted(children.get(urn, []), key=lambda r: (r.type, r.name))

    lines: list[str] = []

    def walk(urn: str, prefix: str) -> None:
        kids = ordered(urn)
        for index, resource in enumerate(kids):
            last = index == len(kids) - 1
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{resource.type}  {resource.name}")
            walk(resource.urn, prefix + ("   " if last else "│  "))

    for top in ordered(_root_urn(run)):
        lines.append(f"  {top.type}  {top.name}")
        walk(top.urn, "  ")
    return lines


def _root_urn(run: ProgramRun) -> str:
    urns = {r.urn for r in run.resources}
    parents = {r.parent_urn for r in run.resources if r.parent_urn not in urns}
    return next(iter(parents), "")


def render(run: ProgramRun, stack_path: Path) -> str:
    machine = declared_machine(run)
    outputs = run.outputs
    profile = machine.profile
    out: list[str] = []
    add = out.append
    add(f"gpu-workbench plan for stack '{run.stack}' ({_shown_path(stack_path)})")
    add("offline: the real program under Pulumi's mock engine; no cloud calls, no credentials")
    add("")
    add("Workstation")
    region = run.config.get("gpu-workbench:region") or catalog.PRICE_REGIONS[machine.cloud]
    add(f"  cloud       {machine.cloud}, region {region}")
    if profile is not None:
        gpu = profile.gpu
        cc = ".".join(map(str, gpu.compute_capability))
        retired = ("" if profile.retirement is None else
                   f"  [RETIRED {profile.retirement.since}]")
        add(f"  instance    {machine.machine_type}: {machine.gpu_count} x {gpu.model} "
            f"({gpu.architecture}, CUDA compute capability {cc}), {profile.vcpus} vCPU, "
            f"{profile.memory_gib:g} GiB RAM{retired}")
    else:
        add(f"  instance    {machine.machine_type} (not in the catalog)")
    add(f"  os image    {machine.image}")
    os_image = None if run.config.get("gpu-workbench:machineImage") else (
        catalog.os_image(machine.cloud))
    if os_image is not None:
        add(f"  driver      {os_image.driver_text} (expected; {os_image.note})")
    add(f"  root disk   {machine.disk}")
    add(f"  container   {_container_line(str(outputs.get('container_image')))}")
    cost = outputs.get("hourly_cost_usd")
    spot = declared_spot(run, machine.cloud)
    if isinstance(cost, (int, float)) and spot and profile is not None:
        on_demand = profile.hourly_cost(machine.gpu_count)
        saving = ("" if not profile.on_demand else
                  f" vs ${on_demand:.2f}/hour on-demand: {1 - cost / on_demand:.0%} less")
        add(f"  cost        ${cost:.2f}/hour as spot{saving} (about ${cost * 730:,.0f}/month "
            f"running); {catalog.PRICE_REGIONS[machine.cloud]} prices read "
            f"{catalog.PRICES_READ_ON}, spot prices move by the hour; disks and traffic extra")
        add(f"  spot        {catalog.SPOT_INTERRUPTION[machine.cloud][0]}")
    elif isinstance(cost, (int, float)):
        add(f"  cost        ${cost:.2f}/hour on-demand while running (about ${cost * 24:.2f}/day, "
            f"${cost * 730:,.0f}/month); {catalog.PRICE_REGIONS[machine.cloud]} list price "
            f"read {catalog.PRICES_READ_ON}; disks and traffic extra")
        if profile is not None and profile.sold_as_spot:
            spot_cost = profile.spot_cost(machine.gpu_count) or 0.0
            add(f"  spot        ${spot_cost:.2f}/hour with spot: true ({1 - spot_cost / cost:.0%} "
                "less; interrupted when the cloud needs the capacity)")
    if profile is not None:
        add("")
        add("Quota this stack consumes (request it before `pulumi up`; new accounts "
            "usually have 0)")
        out.extend(f"  {line}" for line in quota_lines(profile, machine.gpu_count, region, spot))
    needs = up_needs(run, machine.cloud)
    if needs:
        add("")
        add("What `pulumi up` needs")
        out.extend(f"  {line}" for line in needs)
    add("")
    add("Open ports (inbound TCP, source CIDRs)")
    for port, cidrs in firewall_openings(run).items():
        add(f"  {port:<5} {network.port_purpose(port):<28} {', '.join(cidrs)}")
    add("  everything else inbound is closed")
    add("")
    add("Stop and keep")
    out.extend(f"  {line}" for line in stop_policy(run, machine.cloud))
    kept = kept_after_destroy(run, machine.cloud)
    out.extend(f"  {line}" for line in kept.lines)
    add(f"  after `pulumi destroy`: what is kept costs about ${kept.monthly_usd:.2f}/month")
    add("")
    add(f"Resources ({len(run.resources)})")
    out.extend(resource_tree(run))
    add("")
    add(f"Warnings ({len(run.warnings)})")
    out.extend(f"  ! {w}" for w in run.warnings)
    if not run.warnings:
        add("  none")
    add("")
    add("Outputs")
    width = max(map(len, outputs), default=0)
    for name, value in outputs.items():
        add(f"  {name:<{width}}  {value}")
    return "\n".join(out)


def _container_line(image: str) -> str:
    preset = images.find_preset(image)
    if preset is None:
        return f"{image} (not in the image catalog: CUDA needs unknown)"
    ports = ", ".join(f"{p.purpose} {p.container}->{p.host}" for p in preset.ports)
    return f"{image} (preset {preset.name}: CUDA {preset.cuda_text}; {ports})"


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)


def available_stacks() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")]
                  for p in (PROJECT_DIR / "stacks").glob("Pulumi.*.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/plan",
        description="Print what `pulumi up` would build for a stack, offline.",
    )
    parser.add_argument("stack", help="a stack name in stacks/ (e.g. aws, gcp, azure) "
                        "or a path to a Pulumi.<name>.yaml stack file")
    args = parser.parse_args(argv)

    import pulumi  # after argument parsing: --help should not pay for the import

    name, path = stack_file(args.stack)
    if not path.is_file():
        print(f"error: no stack file {path}; stacks: {', '.join(available_stacks())}",
              file=sys.stderr)
        return 2
    try:
        config = read_stack_config(path)
        run = run_program(config, name)
        print(render(run, path))
    except pulumi.RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (OfflineError, yaml.YAMLError) as error:
        print(f"error: {path}: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: after a failed program, Pulumi's runtime can
    # leave event loops whose __del__ prints a spurious traceback at exit.
    os._exit(code)
