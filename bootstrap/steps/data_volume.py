"""Step: the data volume mounted at /data, formatted only when blank.

The stack attaches a separate disk that outlives `pulumi destroy`; this step
finds it (the cloud's stable device name, or --data-device), makes an ext4
filesystem on it only when the disk carries no filesystem or partition table
at all, mounts it by UUID through /etc/fstab (nofail: a missing disk must not
stop the machine from booting) and gives the login user a workspace on it.
A disk that already has a filesystem is never formatted, whatever its type.
"""

from __future__ import annotations

import base64
import hashlib
import uuid as uuidlib
from dataclasses import dataclass

from bootstrap.facts import LOGIN, Fact
from bootstrap.options import BootstrapOptions
from bootstrap.shell import LINES, Sh, atomic_write, sh, words
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok, skipped

FS_LABEL = "workbench-data"
# Where each cloud's attached data disk appears, most specific first. AWS Nitro
# shows EBS as NVMe with the volume ID in the serial; Xen types keep /dev/xvdf.
CLOUD_DEVICES = (
    "/dev/disk/azure/scsi1/lun0",
    "/dev/disk/by-id/google-workbench-data",
    "/dev/xvdf",
    "/dev/sdf",
)


def facts_snippet(device: str | None, mount: str, wait_seconds: int) -> Sh:
    """Shell that prints what the step needs to know about the disk and the mount point."""
    candidates = words([device] if device else CLOUD_DEVICES)
    aws_nvme = Sh("") if device else Sh(
        # EBS data volumes on Nitro: by-id names with the volume ID, not the root disk.
        'for d in /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol*; do '
        '[ -e "$d" ] || continue; case "$d" in *-part*) continue;; esac; '
        'r=$(readlink -f "$d"); [ "$r" = "$root_disk" ] && continue; echo "$d"; done; ')
    return sh(r"""
root_src=$(findmnt -n -o SOURCE / 2>/dev/null)
root_disk=/dev/$(lsblk -n -o PKNAME "$root_src" 2>/dev/null | head -n 1)
wb_find() {{ for d in {candidates}; do [ -e "$d" ] && echo "$d"; done; {aws_nvme}}}
wb_n={polls}
dev=$(wb_find | head -n 1)
# An attachment can land a little after boot: wait (bounded) when one is expected.
while [ -z "$dev" ] && [ "$wb_n" -gt 0 ] && [ -n {device} ]; do
  sleep 0.2; wb_n=$((wb_n - 1)); dev=$(wb_find | head -n 1)
done
echo "device=$dev"
if [ -n "$dev" ]; then
  real=$(readlink -f "$dev"); echo "real=$real"
  echo "root_disk=$root_disk"
  echo "children=$(lsblk -n -o NAME "$real" 2>/dev/null | tail -n +2 | wc -l)"
  # -p probes the device itself (no cache); any signature counts, not only filesystems.
  blkid -p -o export "$real" 2>/dev/null | sed 's/^/probe_/'
  echo "signatures=$(wipefs -n "$real" 2>/dev/null | tail -n +2 | wc -l)"
fi
echo "mounted=$(findmnt -n -o SOURCE --mountpoint {mount} 2>/dev/null)"
echo "workspace_owner=$(stat -c %U {workspace} 2>/dev/null)"
echo "fstab_b64=$(base64 -w0 /etc/fstab 2>/dev/null)"
""", candidates=candidates, aws_nvme=aws_nvme, polls=int(wait_seconds) * 5, device=device or "",
              mount=mount, workspace=mount + "/workspace")


@dataclass(frozen=True)
class VolumeFacts:
    device: str | None
    real: str | None
    root_disk: str | None
    children: int
    fs_type: str | None  # a filesystem (or other signature) the probe found
    fs_uuid: str | None
    signatures: int
    mounted_from: str | None
    workspace_owner: str | None
    fstab: bytes | None

    @property
    def blank(self) -> bool:
        return self.fs_type is None and self.signatures == 0 and self.children == 0


def parse(section: str) -> VolumeFacts:
    values: dict[str, str] = {}
    for line in section.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    fstab_b64 = values.get("fstab_b64", "")
    fs_type = values.get("probe_TYPE") or values.get("probe_PTTYPE") or None
    return VolumeFacts(
        device=values.get("device") or None,
        real=values.get("real") or None,
        root_disk=values.get("root_disk") or None,
        children=int(values.get("children") or 0),
        fs_type=fs_type,
        fs_uuid=values.get("probe_UUID") or None,
        signatures=int(values.get("signatures") or 0),
        mounted_from=values.get("mounted") or None,
        workspace_owner=values.get("workspace_owner") or None,
        fstab=base64.b64decode(fstab_b64) if fstab_b64 else None,
    )


def fstab_with_mount(fstab: bytes | None, uuid: str, mount: str) -> bytes:
    """/etc/fstab with exactly one line for `mount`, by UUID; other lines kept as they are."""
    line = f"UUID={uuid} {mount} ext4 defaults,nofail,x-systemd.device-timeout=10s 0 2"
    kept = []
    for existing in (fstab or b"").decode().splitlines():
        fields = existing.split()
        if len(fields) >= 2 and not existing.lstrip().startswith("#") and fields[1] == mount:
            continue  # ours, perhaps with an old UUID: replaced below
        kept.append(existing)
    return ("\n".join([*kept, line]) + "\n").encode()


def _facts_command(o: BootstrapOptions) -> Sh:
    device = o.data_device if o.data_device != "none" else None
    return facts_snippet(device, o.data_mount, int(o.wait_timeout))


VOLUME: Fact[VolumeFacts] = Fact("data_volume", _facts_command, parse)


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    device = o.data_device
    mount = o.data_mount
    if device == "none":
        return skipped("no data volume (--data-device none)")
    f = ctx.fact(VOLUME)
    if f.device is None:
        if device:
            raise StepFailed(f"data device {device} not found after {o.wait_timeout:g}s")
        return skipped("no data volume attached (none of the cloud's data disk names)")
    if f.real is not None and f.real == f.root_disk:
        raise StepFailed(f"{f.device} is the root disk; refusing to use it as the data volume")
    if f.children and f.fs_type is None:
        raise StepFailed(f"{f.device} has partitions; refusing to format it (mount one of them "
                         "with --data-device)")

    login = ctx.fact(LOGIN)
    user, group = login.user, login.group
    workspace = f"{mount}/workspace"
    actions: list[tuple[str, str]] = []  # (done, to do): for the report and --check
    script: list[Sh] = []
    uuid = f.fs_uuid
    if f.blank:
        actions.append((f"formatted blank {f.device} as ext4",
                        f"format blank {f.device} as ext4"))
        # The UUID is chosen here so the fstab line can be written in the same trip.
        uuid = str(uuidlib.uuid4())
        script.append(sh(
            # Probe again right before mkfs: never format what gained a filesystem.
            "if blkid -p {real} >/dev/null 2>&1; then "
            "echo 'ERROR: the disk is no longer blank; not formatted'; exit 5; fi; "
            "mkfs.ext4 -q -F -m 0 -L {label} -U {uuid} {real} "
            "|| {{ echo 'ERROR: mkfs.ext4 failed'; exit 1; }}",
            real=f.real or "", label=FS_LABEL, uuid=uuid))
    elif f.fs_type != "ext4" and not f.mounted_from:
        raise StepFailed(f"{f.device} holds {f.fs_type}, not ext4; not formatting a disk that "
                         "has data (format it yourself, or mount it and rerun)")
    assert uuid is not None or f.mounted_from
    want_fstab = fstab_with_mount(f.fstab, uuid or "", mount) if uuid else f.fstab
    if want_fstab != f.fstab and want_fstab is not None:
        actions.append((f"set /etc/fstab: {mount} by UUID, nofail",
                        f"set /etc/fstab: {mount} by UUID, nofail"))
        expected = None if f.fstab is None else hashlib.sha256(f.fstab).hexdigest()
        script.append(atomic_write("/etc/fstab", want_fstab, expected_sha256=expected)
                      + Sh(" || exit $?"))
    if not f.mounted_from:
        actions.append((f"mounted at {mount}", f"mount at {mount}"))
        script.append(sh("mkdir -p {mount} && mount {mount} "
                         "|| {{ echo 'ERROR: mount failed'; exit 1; }}", mount=mount))
    if f.blank or f.workspace_owner != user:
        # The Clara workspace lives on the volume and belongs to the login user.
        actions.append((f"made workspace {workspace} for {user}",
                        f"make workspace {workspace} for {user}"))
        script.append(sh("mkdir -p {ws} && chown {user}:{group} {ws}",
                         ws=workspace, user=user, group=group))
    if not actions:
        return ok(f"{f.device} ({f.fs_type}) mounted at {mount}; nothing formatted")
    if ctx.options.check:
        return ctx.would("; ".join(todo for _, todo in actions))
    result = ctx.remote.run(LINES.join([Sh("set -e"), *script]))
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed("; ".join(done for done, _ in actions))


STEP = Step("data-volume", run, facts=(LOGIN, VOLUME))
