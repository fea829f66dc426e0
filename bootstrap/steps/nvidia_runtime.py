"""Step 3: dockerd knows the nvidia runtime.

Merge runtimes.nvidia into /etc/docker/daemon.json keeping every other key,
write it atomically with a backup after validating it, reload dockerd and
confirm `docker info` lists the runtime. A daemon.json we cannot parse is
never touched.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

from bootstrap import daemon_json
from bootstrap.daemon_json import DAEMON_JSON, NVIDIA_RUNTIME_NAME, DaemonJsonError
from bootstrap.facts import DAEMON_JSON as DAEMON_JSON_FACT
from bootstrap.facts import DOCKER_INFO, Fact, path_or_none
from bootstrap.remote import parse_sections
from bootstrap.shell import (
    DOCKERD_FUNCTIONS,
    LINES,
    VALIDATE_DAEMON_JSON,
    Sh,
    atomic_write,
    sha256_hex,
)
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

NVIDIA_RUNTIME_BIN: Fact[str | None] = Fact(
    "nvidia_runtime_bin", lambda _: Sh("command -v nvidia-container-runtime || echo absent"),
    path_or_none)
DOCKERD_BIN: Fact[str | None] = Fact(
    "dockerd", lambda _: Sh("command -v dockerd || echo absent"), path_or_none)

WAIT_FOR_RUNTIME = Sh("""
if ! wb_wait_for 30 sh -c 'docker info --format "{{json .Runtimes}}" 2>/dev/null | grep -q "\\"nvidia\\""'
then echo "ERROR: dockerd does not list the nvidia runtime after the change"; exit 1; fi
echo "@@runtimes"; docker info --format '{{json .Runtimes}}'
""")


def run(ctx: HostContext) -> StepOutcome:
    if ctx.fact(DOCKERD_BIN) is None:
        raise StepFailed("dockerd is not installed (install docker.io or docker-ce first)")
    try:
        config = daemon_json.parse(ctx.daemon_json)
    except DaemonJsonError as exc:
        raise StepFailed(str(exc)) from exc
    host_path = ctx.fact(NVIDIA_RUNTIME_BIN)
    if host_path is None:
        raise StepFailed(
            f"{NVIDIA_RUNTIME_NAME} not found on the host's PATH: install the NVIDIA Container "
            f"Toolkit (apt package nvidia-container-toolkit) first; {DAEMON_JSON} not changed")
    # The path the host has, not a fixed /usr/bin: dockerd execs exactly this.
    want = daemon_json.with_nvidia_runtime(config, host_path)
    need_write = want is not config
    info = ctx.fact(DOCKER_INFO)
    listed = ctx.docker_running and info is not None and "nvidia" in info.runtimes
    if not need_write and listed:
        path = config["runtimes"]["nvidia"].get("path")
        form = ("ours" if path == host_path else "nvidia-ctk form" if path == NVIDIA_RUNTIME_NAME
                else f"path {path}; the host's {NVIDIA_RUNTIME_NAME} is {host_path}")
        return ok(f"runtimes.nvidia in {DAEMON_JSON} ({form}); dockerd lists it")

    actions = []
    script: list[Sh] = [DOCKERD_FUNCTIONS]
    new_bytes = daemon_json.render(want) if need_write else None
    if new_bytes is not None:
        actions.append(f"added runtimes.nvidia to {DAEMON_JSON}"
                       + ("" if ctx.daemon_json is not None else " (new file)"))
        script.append(atomic_write(
            DAEMON_JSON, new_bytes, expected_sha256=sha256_hex(ctx.daemon_json),
            validate=VALIDATE_DAEMON_JSON) + Sh(" || exit $?"))
    if not ctx.docker_running:
        actions.append("started dockerd")
        script.append(Sh('wb_docker_start || { echo "ERROR: dockerd did not start"; exit 1; }'))
    else:
        actions.append("reloaded dockerd")
        script.append(Sh('echo "@@reload"; wb_docker_reload || exit 1'))
    script.append(WAIT_FOR_RUNTIME)
    if ctx.options.check:
        return ctx.would("; ".join(a.replace("added", "add").replace("started", "start")
                                   .replace("reloaded", "reload") for a in actions))
    result = ctx.remote.run(LINES.join(script))
    if not result.ok:
        raise StepFailed(result.error_line())
    sections = parse_sections(result.stdout)
    if new_bytes is not None:
        ctx.daemon_json = new_bytes
    ctx.docker_running = True
    how = sections.get("reload", "").strip()
    if how:
        actions[-1] = f"reloaded dockerd ({how})"
    if "backup" in sections:
        actions.append(f"backup {sections['backup'].strip()}")
    return changed("; ".join(actions))


STEP = Step("nvidia-runtime", run,
            facts=(DOCKERD_BIN, NVIDIA_RUNTIME_BIN, DAEMON_JSON_FACT, DOCKER_INFO))
