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

from components import catalog, network
from components.mock_engine import (
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
        ami_lookup = run.invokes_of("aws:ec2/getAmi:getAmi")[0].args
        name = next(f["values"][0] for f in ami_lookup["filters"] if f["name"] == "name")
        disk = vm.inputs["rootBlockDevice"]
        return _machine(
            "aws", vm.inputs["instanceType"], None,
            f"newest AMI named '{name}' owned by {', '.join(ami_lookup['owners'])} "
            f"(AMI ID {KNOWN_AFTER_UP})",
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
        add(f"  instance    {machine.machine_type}: {machine.gpu_count} x {gpu.model} "
            f"({gpu.architecture}, CUDA compute capability {cc}), {profile.vcpus} vCPU, "
            f"{profile.memory_gib:g} GiB RAM{'' if profile.sold else '  [RETIRED]'}")
    else:
        add(f"  instance    {machine.machine_type} (not in the catalog)")
    add(f"  os image    {machine.image}")
    add(f"  root disk   {machine.disk}")
    add(f"  container   {outputs.get('container_image')}")
    cost = outputs.get("hourly_cost_usd")
    if isinstance(cost, (int, float)):
        add(f"  cost        ${cost:.2f}/hour on-demand while running (about ${cost * 24:.2f}/day, "
            f"${cost * 730:,.0f}/month); {catalog.PRICE_REGIONS[machine.cloud]} list price "
            f"read {catalog.PRICES_READ_ON}; disks and traffic extra")
    add("")
    add("Open ports (inbound TCP, source CIDRs)")
    for port, cidrs in firewall_openings(run).items():
        add(f"  {port:<5} {network.port_purpose(port):<28} {', '.join(cidrs)}")
    add("  everything else inbound is closed")
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
