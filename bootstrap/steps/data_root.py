"""Step 4 (Azure): Docker's data-root on the resource disk at /mnt/docker, when needed.

Azure VMs have an OS disk and a local "resource" disk on /mnt; NGC images are
tens of GB. The resource disk is wiped at every deallocate (and the idle
autostop deallocates), so Docker moves there only when the disk it is on now
has less free space than --docker-min-free-gib (default 50) and /mnt is a
separate, larger disk: the guide's 30 GB OS disk needs the move, this
project's stacks (100 GB OS disk; a 64 GiB resource disk on NC24ads A100 v4)
do not, and their images then survive a stop.

The move: stop dockerd, copy what it has (images, containers, volumes), set
data-root with the same safe writer as the runtime step, start dockerd and
confirm its root dir. A systemd drop-in makes docker.service wait for the
/mnt mount (cloud-init mounts it during boot) and recreate /mnt/docker, which
a deallocate leaves blank: dockerd then starts empty rather than on the OS
disk's /mnt, and the next bootstrap pulls the image again.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

from dataclasses import dataclass

from bootstrap import daemon_json
from bootstrap.daemon_json import DAEMON_JSON, DaemonJsonError
from bootstrap.facts import CLOUD_HINTS, DOCKER_INFO, Fact, b64_or_none
from bootstrap.facts import DAEMON_JSON as DAEMON_JSON_FACT
from bootstrap.shell import (
    DOCKERD_FUNCTIONS,
    LINES,
    VALIDATE_DAEMON_JSON,
    Sh,
    atomic_write,
    sh,
    sha256_hex,
)
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok, skipped

AZURE_DATA_ROOT = "/mnt/docker"
RESOURCE_DISK = "/mnt"
DROP_IN = "/etc/systemd/system/docker.service.d/gpu-workbench-data-root.conf"
DROP_IN_TEXT = (
    "# Written by gpu-workbench (fab ... data-root): Docker's data-root is on the\n"
    "# resource disk, which cloud-init mounts during boot and a deallocate wipes.\n"
    "[Unit]\n"
    f"RequiresMountsFor={AZURE_DATA_ROOT}\n"
    "[Service]\n"
    f"ExecStartPre=/bin/mkdir -p -m 710 {AZURE_DATA_ROOT}\n").encode()
GIB_KIB = 1024 * 1024

HAS_MNT: Fact[bool] = Fact(
    "mnt", lambda _: Sh("if [ -d /mnt ]; then echo yes; else echo no; fi"),
    lambda text: text.strip() == "yes")


@dataclass(frozen=True)
class Space:
    """Free space where Docker's root is now, and on /mnt (df -Pk: KiB, mount point)."""

    docker_free_kib: int | None
    docker_mount: str | None
    mnt_free_kib: int | None
    mnt_mount: str | None


def _parse_space(text: str) -> Space:
    rows: list[tuple[int | None, str | None]] = []
    for line in [*text.splitlines(), "", ""][:2]:
        parts = line.split(maxsplit=1)
        try:
            rows.append((int(parts[0]), parts[1].strip()))
        except (IndexError, ValueError):
            rows.append((None, None))
    return Space(rows[0][0], rows[0][1], rows[1][0], rows[1][1])


SPACE: Fact[Space] = Fact(
    "docker_space",
    lambda _: Sh("wb_dr=$(timeout 30 docker info --format '{{.DockerRootDir}}' 2>/dev/null)\n"
                 '[ -n "$wb_dr" ] && [ -d "$wb_dr" ] || wb_dr=/var/lib/docker\n'
                 'for wb_d in "$wb_dr" /mnt; do\n'
                 "  df -Pk \"$wb_d\" 2>/dev/null | awk 'NR == 2 {print $4, $6}' | grep . "
                 "|| echo absent\n"
                 "done"),
    _parse_space)
DOCKER_DROP_IN: Fact[bytes | None] = Fact(
    "docker_drop_in",
    lambda _: sh("if [ -f {path} ]; then base64 -w0 {path}; echo; else echo absent; fi",
                 path=DROP_IN),
    b64_or_none)
HAS_SYSTEMD: Fact[bool] = Fact(
    "systemd", lambda _: Sh("if [ -d /run/systemd/system ]; then echo yes; else echo no; fi"),
    lambda text: text.strip() == "yes")


def gib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / GIB_KIB:.0f} GiB"


def write_drop_in(ctx: HostContext) -> Sh:
    """The drop-in, written safely (its directory made); systemd told to read it."""
    write = atomic_write(DROP_IN, DROP_IN_TEXT,
                         expected_sha256=sha256_hex(ctx.fact(DOCKER_DROP_IN)),
                         new_mode="644", new_owner="root:root")
    reload = Sh(" && systemctl daemon-reload") if ctx.fact(HAS_SYSTEMD) else Sh("")
    return write + reload


def is_azure(ctx: HostContext) -> tuple[bool, str]:
    cloud = ctx.options.cloud
    if cloud is not None:
        return cloud == "azure", f"--cloud {cloud}"
    hints = ctx.fact(CLOUD_HINTS)
    if hints.waagent:
        return True, "detected: /var/lib/waagent"
    if hints.sys_vendor == "Microsoft Corporation":
        return True, "detected: sys_vendor Microsoft Corporation"
    return False, "no Azure agent found"


def stays_because(ctx: HostContext, space: Space) -> str | None:
    """Why Docker stays where it is (None: move it to the resource disk)."""
    need_gib = ctx.options.docker_min_free_gib
    where = f"{space.docker_mount or '?'} has {gib(space.docker_free_kib)} free"
    if space.docker_free_kib is not None and space.docker_free_kib >= need_gib * GIB_KIB:
        return (f"Docker stays on the OS disk: {where} (at least {need_gib} GiB); the "
                f"resource disk {RESOURCE_DISK} is wiped at every deallocate, images kept "
                "there would be pulled again after each stop")
    if space.mnt_mount != RESOURCE_DISK:
        return (f"WARNING: {where}, under {need_gib} GiB, but {RESOURCE_DISK} is not a "
                "separate disk here: Docker stays; large images may not fit")
    if (space.mnt_free_kib or 0) <= (space.docker_free_kib or 0):
        return (f"WARNING: {where}, under {need_gib} GiB, and the resource disk has less "
                f"({gib(space.mnt_free_kib)}): Docker stays; large images may not fit")
    return None


def run(ctx: HostContext) -> StepOutcome:
    azure, why = is_azure(ctx)
    if not azure:
        return skipped(f"not Azure ({why})")
    try:
        config = daemon_json.parse(ctx.daemon_json)
    except DaemonJsonError as exc:
        raise StepFailed(str(exc)) from exc
    # After the runtime step restarted/reloaded dockerd, the root dir read at
    # fact time is still right: a reload does not move data-root.
    info = ctx.fact(DOCKER_INFO)
    running_root = info.root_dir if ctx.docker_running and info is not None else None
    configured = config.get("data-root")
    drop_in_ok = ctx.fact(DOCKER_DROP_IN) == DROP_IN_TEXT
    if configured == AZURE_DATA_ROOT and running_root == AZURE_DATA_ROOT:
        if drop_in_ok:
            return ok(f"dockerd root is {AZURE_DATA_ROOT}, docker.service waits for its mount "
                      f"({why})")
        # Moved by an earlier bootstrap that wrote no drop-in: only that is missing.
        if ctx.options.check:
            return ctx.would(f"write {DROP_IN}")
        result = ctx.remote.run(write_drop_in(ctx))
        if not result.ok:
            raise StepFailed(result.error_line())
        return changed(f"dockerd root is {AZURE_DATA_ROOT}; wrote {DROP_IN}: docker.service "
                       f"waits for the {RESOURCE_DISK} mount and recreates {AZURE_DATA_ROOT}")
    if configured != AZURE_DATA_ROOT:
        reason = stays_because(ctx, ctx.fact(SPACE))
        if reason is not None:
            return ok(f"{reason} ({why}; --docker-min-free-gib to change)")
    if not ctx.fact(HAS_MNT):
        raise StepFailed("/mnt does not exist: no Azure resource disk to move Docker to")

    source = running_root or configured or "/var/lib/docker"
    want = daemon_json.with_data_root(config, AZURE_DATA_ROOT)
    actions = []
    if source != AZURE_DATA_ROOT:
        actions.append(f"copied {source} to {AZURE_DATA_ROOT}")
    if want is not config:
        actions.append(f"set data-root in {DAEMON_JSON}")
    if not drop_in_ok:
        actions.append(f"wrote {DROP_IN} (docker.service waits for {RESOURCE_DISK})")
    actions.append("restarted dockerd")
    if ctx.options.check:
        return ctx.would("; ".join(actions).replace("copied", "copy").replace(
            "restarted", "restart").replace("wrote", "write"))

    script = [DOCKERD_FUNCTIONS, sh("src={src}; dst={dst}", src=source, dst=AZURE_DATA_ROOT),
              Sh("""
if wb_docker_up; then wb_docker_stop || { echo "ERROR: could not stop dockerd"; exit 1; }; fi
mkdir -p "$dst" && chmod 710 "$dst"
if [ "$src" != "$dst" ] && [ -d "$src" ]; then
  # -aHAX keeps hard links, ACLs and xattrs (overlay2 layers rely on them);
  # rerun after an interruption it copies only what is missing.
  if command -v rsync >/dev/null 2>&1; then wb_copy() { rsync -aHAX --numeric-ids "$src/" "$dst/"; }
  else wb_copy() { cp -a "$src/." "$dst/"; }; fi
  if ! wb_out=$(wb_copy 2>&1); then
    wb_docker_start
    echo "ERROR: copying $src to $dst failed, dockerd restarted on $src: $(echo "$wb_out" | tail -n 1)"
    exit 1
  fi
fi
""")]
    if want is not config:
        script.append(atomic_write(
            DAEMON_JSON, daemon_json.render(want), expected_sha256=sha256_hex(ctx.daemon_json),
            validate=VALIDATE_DAEMON_JSON,
        ) + Sh(' || { wb_rc=$?; wb_docker_start; exit $wb_rc; }'))
    if not drop_in_ok:
        script.append(write_drop_in(ctx) + Sh(' || { wb_rc=$?; wb_docker_start; exit $wb_rc; }'))
    script.append(Sh("""
wb_docker_start || { echo "ERROR: dockerd did not start with data-root $dst"; exit 1; }
if ! wb_wait_for 60 sh -c '[ "$(docker info --format "{{.DockerRootDir}}" 2>/dev/null)" = "$1" ]' wb_root "$dst"
then echo "ERROR: dockerd root dir is $(docker info --format '{{.DockerRootDir}}' 2>&1), not $dst"; exit 1; fi
"""))
    result = ctx.remote.run(LINES.join(script))
    if not result.ok:
        raise StepFailed(result.error_line())
    if want is not config:
        ctx.daemon_json = daemon_json.render(want)
    ctx.docker_running = True
    if source != AZURE_DATA_ROOT:
        # Not deleted: it is the only copy until the user has seen the new root work.
        actions.append(f"{source} left in place, delete it to free the OS disk")
    return changed("; ".join(actions))


STEP = Step("data-root", run, facts=(CLOUD_HINTS, DAEMON_JSON_FACT, DOCKER_INFO, HAS_MNT, SPACE,
                                    DOCKER_DROP_IN, HAS_SYSTEMD))
