"""Step 4 (Azure): Docker's data-root on the resource disk at /mnt/docker.

Azure VMs have a small OS disk and a large local disk on /mnt; NGC images are
tens of GB. data-root is not reloadable, so: stop dockerd, copy what it has
(images, containers, volumes), set data-root with the same safe writer as the
runtime step, start dockerd and confirm its root dir. Note the resource disk is
ephemeral: images are pulled again after the VM is deallocated.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

from bootstrap import daemon_json
from bootstrap.daemon_json import DAEMON_JSON, DaemonJsonError
from bootstrap.facts import CLOUD_HINTS, DOCKER_INFO, Fact
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

HAS_MNT: Fact[bool] = Fact(
    "mnt", lambda _: Sh("if [ -d /mnt ]; then echo yes; else echo no; fi"),
    lambda text: text.strip() == "yes")


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
    if configured == AZURE_DATA_ROOT and running_root == AZURE_DATA_ROOT:
        return ok(f"dockerd root is {AZURE_DATA_ROOT} ({why})")
    if not ctx.fact(HAS_MNT):
        raise StepFailed("/mnt does not exist: no Azure resource disk to move Docker to")

    source = running_root or configured or "/var/lib/docker"
    want = daemon_json.with_data_root(config, AZURE_DATA_ROOT)
    actions = []
    if source != AZURE_DATA_ROOT:
        actions.append(f"copied {source} to {AZURE_DATA_ROOT}")
    if want is not config:
        actions.append(f"set data-root in {DAEMON_JSON}")
    actions.append("restarted dockerd")
    if ctx.options.check:
        return ctx.would("; ".join(actions).replace("copied", "copy").replace(
            "restarted", "restart"))

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


STEP = Step("data-root", run, facts=(CLOUD_HINTS, DAEMON_JSON_FACT, DOCKER_INFO, HAS_MNT))
