"""Step: an MLflow tracking server, as its own container beside the workbench.

`fab -H ... mlflow` (or `bootstrap --mlflow`) runs MLflow's official image
with its backend store (SQLite) and its artifacts in <workspace>/mlflow on the
host, so runs survive a new container and sit on the data volume with the
rest of the work. It listens on 5001 (5000 is AIAA's), published on the
host's loopback only: MLflow has no login, so it is reached through the SSH
tunnel (`-L 5001:localhost:5001`), never the open network. Restart policy
unless-stopped, as the workbench. Like the container step: left alone when it
runs as wanted, started when stopped, replaced when image or settings differ
(pulled first), and it counts as started once it answers /health.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from bootstrap.container_spec import LABEL_CONFIG, inspect_port_bindings, workspace_path
from bootstrap.facts import DOCKER_INFO, LOGIN, Fact, json_object_or_none
from bootstrap.image_pull import PULL_COMMAND_TIMEOUT_S, pull_for
from bootstrap.shell import LINES, SPACE, Sh, replace_container, sh, words
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

MLFLOW_VERSION = "3.17.2"
MLFLOW_IMAGE = f"ghcr.io/mlflow/mlflow:v{MLFLOW_VERSION}"
MLFLOW_PORT = 5001  # never 5000: AIAA's
MLFLOW_CONTAINER = "workbench-mlflow"
HEALTH_TIMEOUT_S = 180  # a first start creates the SQLite schema (about 15 s on 2 cores)


@dataclass(frozen=True)
class MlflowSpec:
    store: str  # host directory: mlflow.db and artifacts/
    image: str = MLFLOW_IMAGE
    name: str = MLFLOW_CONTAINER
    port: int = MLFLOW_PORT
    bind: str = "127.0.0.1"  # loopback: reached through the SSH tunnel only
    restart: str = "unless-stopped"
    workers: int = 1  # one user; each worker is a Python process of its own

    @property
    def command(self) -> tuple[str, ...]:
        return ("mlflow", "server", "--host", "0.0.0.0", "--port", str(self.port),
                "--workers", str(self.workers),
                "--backend-store-uri", "sqlite:////mlflow/mlflow.db",
                "--artifacts-destination", "/mlflow/artifacts")

    @property
    def port_bindings(self) -> set[tuple[str, str, str]]:
        return {(f"{self.port}/tcp", self.bind, str(self.port))}

    def config_hash(self) -> str:
        data = {**asdict(self), "command": self.command}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def run_command(self) -> Sh:
        return SPACE.join([
            Sh("docker run -d"), sh("--name {name}", name=self.name),
            sh("--restart {restart}", restart=self.restart),
            sh("-p {bind}:{port}:{port}", bind=self.bind, port=self.port),
            sh("-v {store}:/mlflow", store=self.store),
            sh("--label {label}={value}", label=LABEL_CONFIG, value=self.config_hash()),
            sh("{image}", image=self.image), words(self.command),
        ])


MLFLOW: Fact[dict[str, Any] | None] = Fact(
    "mlflow",
    lambda _: sh("docker inspect --type container {name} --format '{{{{json .}}}}' "
                 "2>/dev/null || echo absent", name=MLFLOW_CONTAINER),
    json_object_or_none)


def differences(spec: MlflowSpec, inspect: dict[str, Any] | None) -> list[str]:
    if inspect is None:
        return ["absent"]
    config = inspect.get("Config") or {}
    reasons = []
    if config.get("Image") != spec.image:
        reasons.append(f"image {config.get('Image')} -> {spec.image}")
    bindings = (inspect.get("HostConfig") or {}).get("PortBindings") or {}
    have = {(p, b.get("HostIp", ""), str(b.get("HostPort", "")))
            for p, lst in bindings.items() for b in (lst or [])}
    if have != spec.port_bindings:
        reasons.append(f"ports {sorted(inspect_port_bindings(inspect))} -> {spec.port}")
    if not reasons and (config.get("Labels") or {}).get(LABEL_CONFIG) != spec.config_hash():
        reasons.append("settings changed (config hash differs)")
    if not (inspect.get("State") or {}).get("Running"):
        reasons.append("not running")
    return reasons


# After the line that sets $wb_name, $wb_health and $wb_timeout (seconds).
WAIT_FOR_HEALTH = Sh(r"""
wb_get() {
  if command -v curl >/dev/null 2>&1; then curl -fsS -m 2 "$wb_health"
  elif command -v wget >/dev/null 2>&1; then wget -q -T 2 -O - "$wb_health"
  else python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$wb_health"; fi
}
n=0
restarts() { docker inspect -f '{{.RestartCount}}' "$wb_name" 2>/dev/null; }
before=$(restarts)
until [ "$(wb_get 2>/dev/null)" = OK ]; do
  # The restart policy brings a crashing server back: a new restart means it died.
  if [ "$(restarts)" != "$before" ] || { [ "$(docker inspect -f '{{.State.Running}}' "$wb_name" 2>/dev/null)" != true ] && [ $n -gt 10 ]; }; then
    echo "ERROR: $wb_name exited: $(docker logs --tail 3 "$wb_name" 2>&1 | tr '\n' ' ')"; exit 1
  fi
  n=$((n + 1))
  if [ $n -ge $((wb_timeout * 2)) ]; then
    echo "ERROR: $wb_name did not answer $wb_health within ${wb_timeout}s: $(docker logs --tail 2 "$wb_name" 2>&1 | tr '\n' ' ')"; exit 1
  fi
  sleep 0.5
done
""")


def run(ctx: HostContext) -> StepOutcome:
    login = ctx.fact(LOGIN)
    running = ctx.fact(MLFLOW)
    spec = MlflowSpec(store=f"{workspace_path(ctx.options.workspace, login.home)}/mlflow")
    url = f"http://localhost:{spec.port}/"
    reasons = differences(spec, running)
    if not reasons:
        ctx.add_service("MLflow", url, spec.port)
        return ok(f"{spec.name} running {spec.image}, store {spec.store}")
    replace = any(r != "not running" for r in reasons)
    verb = ("replace" if running else "create") if replace else "start"
    why = f"from {spec.image}" if verb == "create" else f"({', '.join(reasons)})"
    if ctx.options.check:
        return ctx.would(f"{verb} {spec.name} {why}")
    script = [sh("""
set -u
store={store}
if [ ! -d "$store/artifacts" ]; then
  mkdir -p "$store/artifacts" && chown {user}:{group} "$store" "$store/artifacts" || {{ echo "ERROR: cannot create $store"; exit 1; }}
fi
""", store=spec.store, user=login.user, group=login.group)]
    pull_output = None
    if replace:
        info = ctx.fact(DOCKER_INFO)
        pull, pull_output = pull_for(ctx, spec.image, "mlflow",
                                     info.raw if info is not None else None)
        script.extend(replace_container(pull, spec.name, spec.run_command()))
    else:
        script.append(sh("if ! out=$(docker start {name} 2>&1); then "
                         'echo "ERROR: docker start failed: $(echo "$out" | tail -n 1)"; exit 1; fi',
                         name=spec.name))
    script.append(sh("wb_name={name}; wb_health={health}; wb_timeout={timeout}",
                     name=spec.name, health=f"http://127.0.0.1:{spec.port}/health",
                     timeout=HEALTH_TIMEOUT_S) + WAIT_FOR_HEALTH)
    result = ctx.remote.run(LINES.join(script), timeout=PULL_COMMAND_TIMEOUT_S,
                            on_stdout=pull_output.feed if pull_output else None)
    if not result.ok:
        raise StepFailed(result.error_line())
    ctx.add_service("MLflow", url, spec.port)
    done = {"create": "created", "replace": "replaced", "start": "started"}[verb]
    pulled = f"; pulled {pull_output.summary}" if pull_output and pull_output.summary else ""
    return changed(f"{done} {spec.name} {why}; store {spec.store}{pulled}")


STEP = Step("mlflow", run, facts=(LOGIN, MLFLOW, DOCKER_INFO))
