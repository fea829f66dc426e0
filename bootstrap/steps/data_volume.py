"""Step: the data volume mounted at /data, formatted only when blank.

The stack attaches a separate disk that outlives `pulumi destroy`; this step
finds it, makes an ext4 filesystem on it only when the disk carries no
filesystem or partition table at all, mounts it by UUID through /etc/fstab
(nofail: a missing disk must not stop the machine from booting; ordered
before docker.service, so a container never starts on the empty mount point)
and gives the login user a workspace on it. A disk that already has a
filesystem is never formatted, whatever its type.

Which disk: the one the stack declared. `--data-volume-id` (scripts/bootstrap
passes the stack's data_volume_id output) names it, and only the guest device
that carries that identity is used (declared_devices): on AWS the EBS NVMe
serial (the volume ID without its dash), on GCP the device name the stack
attaches it under, on Azure the LUN. A declared volume that is not there fails
the step, so nothing later puts the workspace on the root disk. `--data-device`
declares a device by path. A disk found by the clouds' names without a
declaration is mounted only when it carries our filesystem label; it is never
formatted. Never formatted either: a disk when the mount point already holds
another device's mount.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid as uuidlib
from dataclasses import dataclass

from bootstrap.facts import LOGIN, Fact
from bootstrap.options import BootstrapOptions, volume_cloud
from bootstrap.shell import LINES, Sh, atomic_write, sh, words
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok, skipped

FS_LABEL = "workbench-data"
# Where the guest's udev puts the stable names of disks (a test points these elsewhere:
# the test hosts have no udev).
DISK_BY_ID = "/dev/disk/by-id"
AZURE_SCSI1 = "/dev/disk/azure/scsi1"
# The names the stack attaches the data disk under (components/gcp.py DATA_DEVICE_NAME,
# components/azure.py DATA_LUN, components/aws.py DATA_DEVICE).
GCP_DEVICE_NAME = "workbench-data"
AZURE_LUN = 0
AWS_XEN_DEVICE = "/dev/xvdf"  # /dev/sdf on Xen instance types, which show no volume ID


def declared_devices(volume_id: str) -> tuple[str, ...]:
    """The guest device paths that are the volume `volume_id`, most specific first.

    AWS Nitro shows EBS as NVMe with the volume ID, without its dash, as the serial:
    vol-0123... -> nvme-Amazon_Elastic_Block_Store_vol0123... On Xen instance types
    (p3) there is no serial to match; there the attachment's own name counts, and the
    facts use it only when the host is a Xen guest. GCP: google-<device name>. Azure:
    the LUN the stack attaches it at.
    """
    cloud = volume_cloud(volume_id)
    if cloud == "aws":
        return (f"{DISK_BY_ID}/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}",)
    if cloud == "gcp":
        return (f"{DISK_BY_ID}/google-{GCP_DEVICE_NAME}",)
    if cloud == "azure":
        return (f"{AZURE_SCSI1}/lun{AZURE_LUN}",)
    raise ValueError(f"not a disk ID of a known cloud: {volume_id!r}")


def discovery_devices() -> tuple[str, ...]:
    """The clouds' data-disk names, tried when nothing is declared (mounted only when
    the disk carries our label)."""
    return (f"{AZURE_SCSI1}/lun{AZURE_LUN}", f"{DISK_BY_ID}/google-{GCP_DEVICE_NAME}")


def facts_snippet(device: str | None, mount: str, wait_seconds: int,
                  volume_id: str | None = None) -> Sh:
    """Shell that prints what the step needs to know about the disk and the mount point."""
    if volume_id:
        candidates = declared_devices(volume_id)
    elif device:
        candidates = (device,)
    else:
        candidates = discovery_devices()
    xen = Sh("")
    if volume_id and volume_cloud(volume_id) == "aws":
        xen = sh('[ "$(cat /sys/hypervisor/type 2>/dev/null)" = xen ] && '
                 '[ -e {xen} ] && echo {xen}; ', xen=AWS_XEN_DEVICE)
    aws_nvme = Sh("") if (device or volume_id) else sh(
        # EBS data volumes on Nitro: by-id names with the volume ID, not the root disk.
        'for d in {by_id}/nvme-Amazon_Elastic_Block_Store_vol*; do '
        '[ -e "$d" ] || continue; case "$d" in *-part*) continue;; esac; '
        'r=$(readlink -f "$d"); [ "$r" = "$root_disk" ] && continue; echo "$d"; done; ',
        by_id=DISK_BY_ID)
    declared = "yes" if (device or volume_id) else ""
    return sh(r"""
root_src=$(findmnt -n -o SOURCE / 2>/dev/null)
root_disk=/dev/$(lsblk -n -o PKNAME "$root_src" 2>/dev/null | head -n 1)
wb_find() {{ for d in {candidates}; do [ -e "$d" ] && echo "$d"; done; {xen}{aws_nvme}}}
wb_n={polls}
dev=$(wb_find | head -n 1)
# An attachment can land a little after boot: wait (bounded) when one is declared.
while [ -z "$dev" ] && [ "$wb_n" -gt 0 ] && [ -n {declared} ]; do
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
# What the mount point holds now (the top mount where mounts are stacked).
wb_m=$(findmnt -n -o SOURCE,FSTYPE --mountpoint {mount} 2>/dev/null | tail -n 1)
echo "mounted=${{wb_m%% *}}"
echo "mounted_fstype=$(echo "${{wb_m#* }}" | tr -d ' ')"
case "$wb_m" in /dev/*) echo "mounted_real=$(readlink -f "${{wb_m%% *}}")" ;; esac
echo "workspace_owner=$(stat -c %U {workspace} 2>/dev/null)"
echo "fstab_b64=$(base64 -w0 /etc/fstab 2>/dev/null)"
""", candidates=words(candidates), xen=xen, aws_nvme=aws_nvme, polls=int(wait_seconds) * 5,
              declared=declared, mount=mount, workspace=mount + "/workspace")


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
    fs_label: str | None = None
    mounted_real: str | None = None  # the device behind mounted_from, links resolved
    mounted_fstype: str | None = None

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
        fs_label=values.get("probe_LABEL") or None,
        mounted_real=values.get("mounted_real") or None,
        mounted_fstype=values.get("mounted_fstype") or None,
    )


# fstab(5): "If the name of the mount point contains spaces or tabs these can be
# escaped as `\040' and '\011' respectively"; getmntent(3) also decodes \012 (newline)
# and \134 (backslash). The backslash goes first, or its own escapes get escaped.
_FSTAB_ESCAPES = (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012"))
# The ordering: x-systemd.before= (systemd.mount(5)) puts Before=docker.service into
# the mount unit systemd-fstab-generator makes, so with nofail (mounted
# asynchronously) dockerd still waits for /data before it restarts the container.
MOUNT_OPTIONS = "defaults,nofail,x-systemd.before=docker.service,x-systemd.device-timeout=10s"


def fstab_escape(path: str) -> str:
    for raw, escaped in _FSTAB_ESCAPES:
        path = path.replace(raw, escaped)
    return path


def fstab_unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fstab_with_mount(fstab: bytes | None, uuid: str, mount: str, fs_type: str = "ext4"
                     ) -> bytes:
    """/etc/fstab with exactly one line for `mount`, by UUID, with the filesystem's real
    type and the path escaped as fstab(5) wants; other lines kept as they are."""
    passno = 2 if fs_type.startswith("ext") else 0  # fsck at boot only where it checks
    line = f"UUID={uuid} {fstab_escape(mount)} {fs_type} {MOUNT_OPTIONS} 0 {passno}"
    kept = []
    for existing in (fstab or b"").decode().splitlines():
        fields = existing.split()
        if (len(fields) >= 2 and not existing.lstrip().startswith("#")
                and fstab_unescape(fields[1]) == mount):
            continue  # ours, perhaps with an old UUID or type: replaced below
        kept.append(existing)
    return ("\n".join([*kept, line]) + "\n").encode()


def _facts_command(o: BootstrapOptions) -> Sh:
    device = o.data_device if o.data_device != "none" else None
    return facts_snippet(device, o.data_mount, int(o.wait_timeout), o.data_volume_id)


VOLUME: Fact[VolumeFacts] = Fact("data_volume", _facts_command, parse)


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    device = o.data_device
    mount = o.data_mount
    volume_id = o.data_volume_id
    if device == "none":
        return skipped("no data volume (--data-device none)")
    f = ctx.fact(VOLUME)
    declared = bool(volume_id or device)
    if f.device is None:
        if volume_id:
            raise StepFailed(
                f"data volume {volume_id} not found at {' or '.join(declared_devices(volume_id))}"
                f" after {o.wait_timeout:g}s; not putting the workspace on the root disk "
                "(is it attached? `pulumi up` attaches it)")
        if device:
            raise StepFailed(f"data device {device} not found after {o.wait_timeout:g}s; not "
                             "putting the workspace on the root disk")
        return skipped("no data volume attached (none of the cloud's data disk names)")
    if f.real is not None and f.real == f.root_disk:
        raise StepFailed(f"{f.device} is the root disk; refusing to use it as the data volume")
    if not declared and f.fs_label != FS_LABEL:
        what = "a blank disk" if f.blank else f"{f.fs_type or 'data'}"
        return skipped(f"{f.device} ({what}) is not declared as the data volume (pass "
                       "--data-volume-id, as scripts/bootstrap does, or --data-device); "
                       "not formatting or mounting it")
    if f.mounted_from and f.mounted_real != f.real:
        # Formatting ours and swapping the fstab line would leave that mount in place
        # over the new one, and the user's data behind whichever wins at boot.
        raise StepFailed(
            f"{mount} already holds {f.mounted_from} ({f.mounted_fstype or 'a mount'}), not "
            f"{f.device}; nothing formatted, /etc/fstab unchanged (unmount it, or choose "
            "another --data-mount)")
    if f.children and f.fs_type is None:
        raise StepFailed(f"{f.device} has partitions; refusing to format it (mount one of them "
                         "with --data-device)")

    login = ctx.fact(LOGIN)
    user, group = login.user, login.group
    workspace = f"{mount}/workspace"
    actions: list[tuple[str, str]] = []  # (done, to do): for the report and --check
    script: list[Sh] = []
    uuid = f.fs_uuid
    fs_type = f.mounted_fstype if f.mounted_from else f.fs_type
    if f.blank:
        actions.append((f"formatted blank {f.device} as ext4",
                        f"format blank {f.device} as ext4"))
        # The UUID is chosen here so the fstab line can be written in the same trip.
        uuid = str(uuidlib.uuid4())
        fs_type = "ext4"
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
    want_fstab = (fstab_with_mount(f.fstab, uuid, mount, fs_type or "ext4") if uuid
                  else f.fstab)
    if want_fstab != f.fstab and want_fstab is not None:
        actions.append((f"set /etc/fstab: {mount} by UUID ({fs_type}), nofail, before docker",
                        f"set /etc/fstab: {mount} by UUID ({fs_type}), nofail, before docker"))
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
        script.append(sh("mkdir -p {ws} && chown {owner} {ws}", ws=workspace,
                         owner=f"{user}:{group}"))
    if not actions:
        return ok(f"{f.device} ({fs_type}) mounted at {mount}; nothing formatted")
    if ctx.options.check:
        return ctx.would("; ".join(todo for _, todo in actions))
    result = ctx.remote.run(LINES.join([Sh("set -e"), *script]))
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed("; ".join(done for done, _ in actions))


STEP = Step("data-volume", run, facts=(LOGIN, VOLUME))
