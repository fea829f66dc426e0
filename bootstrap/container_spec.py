"""The workbench container: what we want running, and how it differs from what runs.

Pure logic; the container step turns it into one `docker run`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from bootstrap.shell import SPACE, Sh, sh, words
from components.images import ImagePreset

DEFAULT_IMAGE = "nvcr.io/nvidia/clara-train-sdk:v4.1"
DEFAULT_NAME = "workbench"
DEFAULT_WORKSPACE = "~/workspace"
JUPYTER_HOST_PORT = 8890
JUPYTER_CONTAINER_PORT = 8888
AIAA_PORT = 5000
LABEL_CONFIG = "org.gpu-workbench.config-sha256"
LABEL_TOKEN = "org.gpu-workbench.token-sha256"
# Extra Python packages (--pip/--requirements) live in a user site on the
# workspace volume: kept across restarts and new containers, and pip --user
# still sees what the image has (no second torch or numpy).
PACKAGES_DIR = ".gpu-workbench/python"  # under the workspace
PYTHONUSERBASE = f"/workspace/{PACKAGES_DIR}"
# The host's own Jupyter token (mode 600), under the login user's home; the
# idle check reads it too.
TOKEN_DIR = ".config/gpu-workbench"
TOKEN_FILE = f"{TOKEN_DIR}/jupyter_token"

# JupyterLab reads its token from JUPYTER_TOKEN (passed with --env-file, so it
# is never on a command line). Clara Train images also carry start_aiaa.sh;
# other NGC images (PyTorch, MONAI) have no AIAA, so it starts only if present.
START_AIAA_IF_PRESENT = (
    "if command -v start_aiaa.sh >/dev/null 2>&1; then "
    "start_aiaa.sh --workspace /workspace/aiaa >/workspace/.aiaa.log 2>&1 & fi; "
)
DEFAULT_COMMAND = (
    "sh", "-c",
    START_AIAA_IF_PRESENT
    + "exec jupyter lab --ip=0.0.0.0 --port=8888 --allow-root --no-browser "
    "--ServerApp.root_dir=/workspace",
)
# (container port, host port, what serves there) for an image outside the catalog.
DEFAULT_PORTS: tuple[tuple[int, int, str], ...] = (
    (JUPYTER_CONTAINER_PORT, JUPYTER_HOST_PORT, "JupyterLab"),
    (AIAA_PORT, AIAA_PORT, "AIAA"),
)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    workspace: str  # absolute path on the host
    ports: tuple[tuple[int, int, str], ...] = DEFAULT_PORTS  # (container, host, purpose)
    runtime: str = "nvidia"
    restart: str = "unless-stopped"
    shm_size: str = "1g"  # PyTorch data loaders need more than Docker's 64 MB
    command: tuple[str, ...] = DEFAULT_COMMAND
    env: tuple[tuple[str, str], ...] = ()  # non-secret settings, e.g. PYTHONUSERBASE

    @property
    def port_bindings(self) -> set[tuple[str, str]]:
        """{(container port/proto, host port)} as docker inspect shows them."""
        return {(f"{c}/tcp", str(h)) for c, h, _ in self.ports}

    @property
    def jupyter_host_port(self) -> int | None:
        return next((h for _, h, purpose in self.ports if purpose == "JupyterLab"), None)

    def config_hash(self) -> str:
        fields = asdict(self)
        if self.ports == DEFAULT_PORTS and not self.env:
            # Hashed as before presets existed, so an upgrade does not replace
            # (and restart) a container that is already what we want.
            del fields["ports"], fields["env"]
            fields.update(jupyter_host_port=JUPYTER_HOST_PORT, aiaa_host_port=AIAA_PORT)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def run_command(self, env_file: str | Sh, token_sha: str | Sh) -> Sh:
        """`docker run` as shell text; env_file and token_sha are paths and values, or
        shell expressions (an Sh such as Sh('"$token_sha"'))."""
        return SPACE.join([
            Sh("docker run -d"), sh("--name {name}", name=self.name),
            sh("--runtime {runtime}", runtime=self.runtime),
            sh("--restart {restart}", restart=self.restart),
            sh("--shm-size {shm_size}", shm_size=self.shm_size),
            *(sh("-p {h}:{c}", h=h, c=c) for c, h, _ in self.ports),
            sh("-v {workspace}:/workspace", workspace=self.workspace),
            sh("--env-file {env_file}", env_file=env_file),
            *(sh("-e {setting}", setting=f"{k}={v}") for k, v in self.env),
            # The nvidia runtime hands over the GPUs this names; NGC images set
            # it, other images may not.
            Sh("-e NVIDIA_VISIBLE_DEVICES=all"),
            sh("--label {label}={value}", label=LABEL_CONFIG, value=self.config_hash()),
            sh("--label {label}={value}", label=LABEL_TOKEN, value=token_sha),
            sh("{image}", image=self.image), words(self.command),
        ])


def spec_for_image(name: str, image: str, preset: ImagePreset | None, workspace: str,
                   *, packages: bool = False) -> ContainerSpec:
    """The container for an image: a preset's ports and Jupyter start, else the defaults.

    packages: extra Python packages were asked for, so the container gets the
    user site on the workspace (PYTHONUSERBASE).
    """
    env = (("PYTHONUSERBASE", PYTHONUSERBASE),) if packages else ()
    if preset is None:
        return ContainerSpec(name=name, image=image, workspace=workspace, env=env)
    ports = tuple((p.container, p.host, p.purpose) for p in preset.ports)
    jupyter = next((p.container for p in preset.ports if p.purpose == "JupyterLab"), None)
    # Only what the image contains: its background servers, then JupyterLab, or its
    # own server as the container's process (MONAI Label has no JupyterLab).
    background = preset.background + "; " if preset.background else ""
    if preset.jupyter_command is not None and jupyter is not None:
        start = "exec " + preset.jupyter_command.format(port=jupyter)
    elif preset.server_command is not None:
        start = preset.server_command
    else:  # nothing to serve: keep the container up for `docker exec`
        start = "exec sleep infinity"
    return ContainerSpec(name=name, image=image, workspace=workspace, ports=ports,
                         command=("sh", "-c", background + start), env=env)


def workspace_path(workspace: str, home: str) -> str:
    """--workspace on the host: ~ is the login user's home."""
    if workspace == "~":
        return home
    if workspace.startswith("~/"):
        return f"{home}/{workspace[2:]}"
    return workspace


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def inspect_port_bindings(inspect: dict[str, Any]) -> set[tuple[str, str]]:
    bindings = (inspect.get("HostConfig") or {}).get("PortBindings") or {}
    found = set()
    for container_port, host_list in bindings.items():
        for binding in host_list or []:
            found.add((container_port, str(binding.get("HostPort", ""))))
    return found


def differences(spec: ContainerSpec, inspect: dict[str, Any] | None,
                token: str | None) -> list[str]:
    """Why the running container is not the one we want; [] when it is.

    "not running" alone means start it; anything else means replace it.
    """
    if inspect is None:
        return ["absent"]
    config = inspect.get("Config") or {}
    labels = config.get("Labels") or {}
    reasons = []
    if config.get("Image") != spec.image:
        reasons.append(f"image {config.get('Image')} -> {spec.image}")
    have_ports = inspect_port_bindings(inspect)
    if have_ports != spec.port_bindings:
        reasons.append(f"ports {sorted(have_ports)} -> {sorted(spec.port_bindings)}")
    if not reasons and labels.get(LABEL_CONFIG) != spec.config_hash():
        reasons.append("settings changed (config hash differs)")
    if token is None or labels.get(LABEL_TOKEN) != token_fingerprint(token):
        reasons.append("Jupyter token changed")
    if not (inspect.get("State") or {}).get("Running"):
        reasons.append("not running")
    return reasons


def needs_replace(reasons: list[str]) -> bool:
    return any(r != "not running" for r in reasons)
