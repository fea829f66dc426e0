"""`scripts/teardown STACK`: destroy a stack, then say what is left and what it costs.

`pulumi destroy` drops a resource with retainOnDelete from the state without
deleting it in the cloud, so the state after a destroy cannot say what was
kept. The report therefore reads the state as exported *before* the destroy
(`pulumi stack export`), and the state after it for anything destroy failed
to remove. Without the Pulumi CLI, the same report comes from a saved export
(`--from-state`) or from saved stack outputs (`--from-outputs`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import catalog

# Billed like the containers it holds: reported as part of the bucket.
BUCKETS: dict[str, catalog.Cloud] = {
    **catalog.BUCKET_TYPES, "azure-native:storage:StorageAccount": "azure",
}
# How to list what still carries the stack's tag, per cloud (run by the user
# where this machine has no cloud CLI or credentials).
TAG_SEARCH = {
    "aws": "aws resourcegroupstaggingapi get-resources --tag-filters Key=stack,Values={stack}",
    "gcp": "gcloud asset search-all-resources --query='labels.stack={stack}'",
    "azure": "az resource list --tag stack={stack} -o table",
}


class TeardownError(RuntimeError):
    pass


@dataclass(frozen=True)
class Leftover:
    type: str
    name: str
    cloud_id: str
    on_purpose: bool  # retained by the stack's own choice (keepDataVolume, ...)
    monthly_usd: float | None  # None: billed by use (buckets) or not priced
    detail: str


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _cloud_of(type_token: str) -> catalog.Cloud | None:
    prefix = type_token.split(":", 1)[0]
    return {"aws": "aws", "gcp": "gcp", "azure-native": "azure"}.get(prefix)  # type: ignore[return-value]


def state_resources(export: dict[str, Any]) -> list[dict[str, Any]]:
    """The custom (cloud) resources of a `pulumi stack export`, providers left out."""
    try:
        resources = export["deployment"].get("resources") or []
    except (KeyError, AttributeError):
        raise TeardownError("not a `pulumi stack export` document (no deployment)") from None
    return [r for r in resources
            if r.get("custom") and not r["type"].startswith("pulumi:providers:")]


def stack_outputs(export: dict[str, Any]) -> dict[str, Any]:
    """The outputs of the stack resource in a `pulumi stack export`."""
    for resource in export.get("deployment", {}).get("resources") or []:
        if resource.get("type") == "pulumi:pulumi:Stack":
            return dict(resource.get("outputs") or {})
    return {}


def leftovers(before: dict[str, Any], after: dict[str, Any] | None) -> list[Leftover]:
    """What exists after the destroy: kept on purpose, or left by a failed destroy."""
    found: list[Leftover] = []
    remaining = {r["urn"] for r in state_resources(after)} if after is not None else set()
    resources = state_resources(before)
    for resource in resources:
        kept = bool(resource.get("retainOnDelete"))
        if not kept and resource["urn"] not in remaining:
            continue
        found.append(_describe(resource, on_purpose=kept))
    reattached = _reattached_volume(stack_outputs(before), resources)
    if reattached is not None:
        found.append(reattached)
    return found


def _reattached_volume(outputs: dict[str, Any], resources: list[dict[str, Any]]
                       ) -> Leftover | None:
    """A kept volume the stack attached by ID (dataVolumeId): never in its state, never
    destroyed, still billed; its size is the data_volume_gb output, read at up."""
    volume_id = outputs.get("data_volume_id")
    cloud = outputs.get("cloud")
    if not volume_id or cloud not in catalog.DISK_PRICES:
        return None
    if any(r["type"] in catalog.DATA_DISK_TYPES for r in resources):
        return None  # a disk this stack created: reported from its own state
    kind, per_gb = catalog.DISK_PRICES[cloud]
    size = outputs.get("data_volume_gb")
    if isinstance(size, int | float) and size > 0:
        return Leftover("data volume (re-attached)", "data", str(volume_id), True,
                        catalog.disk_monthly_usd(cloud, float(size)),
                        f"{size:.0f} GB disk attached by dataVolumeId, "
                        f"${per_gb}/GB-month as {kind}")
    return Leftover("data volume (re-attached)", "data", str(volume_id), True, None,
                    f"attached by dataVolumeId; ${per_gb}/GB-month as {kind}, size unknown")


def _describe(resource: dict[str, Any], on_purpose: bool) -> Leftover:
    type_token = resource["type"]
    inputs = resource.get("inputs") or {}
    monthly: float | None = None
    detail = ""
    if type_token in catalog.DATA_DISK_TYPES:
        cloud, size_key = catalog.DATA_DISK_TYPES[type_token]
        size = float(inputs.get(size_key) or 0)
        kind, per_gb = catalog.DISK_PRICES[cloud]
        monthly = catalog.disk_monthly_usd(cloud, size)
        detail = f"{size:.0f} GB disk (data volume), ${per_gb}/GB-month as {kind}"
    elif type_token in BUCKETS:
        detail = f"bucket, billed by use (${catalog.BUCKET_PRICES[BUCKETS[type_token]]}/GB-month)"
    elif type_token == "azure-native:resources:ResourceGroup":
        monthly, detail = 0.0, "resource group holding the kept data (free)"
    return Leftover(type_token, _name(resource["urn"]), str(resource.get("id", "")),
                    on_purpose, monthly, detail)


def leftovers_from_outputs(outputs: dict[str, Any]) -> list[Leftover]:
    """From `pulumi stack output --json`: only what the outputs name."""
    found = []
    cloud = outputs.get("cloud")
    if outputs.get("data_volume_id") and outputs.get("data_volume_kept"):
        found.append(Leftover("data volume", "data", str(outputs["data_volume_id"]), True, None,
                              "size not in the outputs; see the plan for its monthly cost"))
    if outputs.get("dataset_bucket"):
        found.append(Leftover("dataset bucket", "datasets", str(outputs["dataset_bucket"]),
                              True, None, f"kept unless keepDatasetBucket: false ({cloud})"))
    return found


def report(stack: str, found: list[Leftover], clouds: set[str]) -> str:
    lines = [f"gpu-workbench teardown report for stack '{stack}'"]
    if not found:
        lines.append("  nothing of the stack is left: no resource kept, none left behind")
    for item in found:
        why = "kept on purpose" if item.on_purpose else "STILL EXISTS: destroy did not remove it"
        cost = "" if item.monthly_usd is None else f", ${item.monthly_usd:.2f}/month"
        lines.append(f"  {why}: {item.type} {item.name} {item.cloud_id}".rstrip()
                     + f" ({item.detail}{cost})")
    priced = sum(i.monthly_usd or 0.0 for i in found)
    lines.append(f"  left after destroy: about ${priced:.2f}/month"
                 + (" plus bucket storage by use" if any(i.type in BUCKETS for i in found)
                    else ""))
    for cloud in sorted(clouds):
        lines.append(f"  anything else tagged stack={stack}: "
                     + TAG_SEARCH[cloud].format(stack=stack))
    return "\n".join(lines)


def _pulumi(*args: str) -> str:
    result = subprocess.run(["pulumi", *args], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise TeardownError(f"pulumi {' '.join(args)} failed: "
                            f"{message[-1] if message else 'exit ' + str(result.returncode)}")
    return result.stdout


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TeardownError(f"{path}: {err}") from None
    if not isinstance(document, dict):
        raise TeardownError(f"{path}: not a JSON object")
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/teardown",
        description="Destroy a stack's workstation, then list what is kept and what it costs.",
    )
    parser.add_argument("stack")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-state", type=Path, metavar="EXPORT_JSON",
                        help="report from a saved `pulumi stack export` (no CLI, no destroy)")
    source.add_argument("--from-outputs", type=Path, metavar="OUTPUTS_JSON",
                        help="report from saved `pulumi stack output --json` (no CLI, no destroy)")
    parser.add_argument("--yes", action="store_true", help="pass --yes to pulumi destroy")
    args = parser.parse_args(argv)
    try:
        if args.from_outputs:
            outputs = _load_json(args.from_outputs)
            found = leftovers_from_outputs(outputs)
            clouds = {str(outputs["cloud"])} if outputs.get("cloud") in TAG_SEARCH else set()
        elif args.from_state:
            before = _load_json(args.from_state)
            found = leftovers(before, after=None)
            clouds = _clouds(before)
            print("(from a saved export: what `pulumi destroy` keeps; nothing was destroyed)")
        else:
            if shutil.which("pulumi") is None:
                raise TeardownError("the Pulumi CLI is not installed (see README); without it, "
                                    "use --from-state or --from-outputs")
            found, clouds, destroyed = destroy_and_report(args.stack, args.yes)
            if not destroyed:
                print(f"pulumi destroy -s {args.stack} did not finish: what it left is listed "
                      "below; run scripts/teardown again", file=sys.stderr)
    except TeardownError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(args.stack, found, clouds))
    return 1 if any(not item.on_purpose for item in found) else 0


def destroy_and_report(stack: str, yes: bool) -> tuple[list[Leftover], set[str], bool]:
    """Export, destroy, export again: what is left, even when the destroy failed half-way
    (the state after it still holds what it could not delete)."""
    before = json.loads(_pulumi("stack", "export", "-s", stack))
    destroy = ["destroy", "-s", stack, *(["--yes"] if yes else [])]
    # Interactive: pulumi shows the plan and asks before deleting anything.
    destroyed = subprocess.run(["pulumi", *destroy]).returncode == 0
    after = json.loads(_pulumi("stack", "export", "-s", stack))
    found = leftovers(before, after)
    if not destroyed and not any(not item.on_purpose for item in found):
        # Nothing left in the state, yet the destroy failed: say so rather than claim done.
        found.append(Leftover("destroy", "failed", "", False, None,
                              "pulumi destroy exited non-zero; check the cloud console"))
    return found, _clouds(before), destroyed


def _clouds(export: dict[str, Any]) -> set[str]:
    return {c for r in state_resources(export) if (c := _cloud_of(r["type"]))}


if __name__ == "__main__":
    sys.exit(main())
