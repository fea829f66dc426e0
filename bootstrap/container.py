"""The workbench container: what we want running, and how it differs from what runs.

Pure logic; the container step turns it into one `docker run`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_IMAGE = "nvcr.io/nvidia/clara-train-sdk:v4.1"
DEFAULT_NAME = "workbench"
DEFAULT_WORKSPACE = "~/workspace"
JUPYTER_HOST_PORT = 8890
JUPYTER_CONTAINER_PORT = 8888
AIAA_PORT = 5000
LABEL_CONFIG = "org.gpu-workbench.config-sha256"
LABEL_TOKEN = "org.gpu-workbench.token-sha256"

# JupyterLab reads its token from JUPYTER_TOKEN (passed with --env-file, so it
# is never on a command line). Clara Train images also carry start_aiaa.sh;
# other NGC images (PyTorch, MONAI) have no AIAA, so it starts only if present.
DEFAULT_COMMAND = (
    "sh", "-c",
    "if command -v start_aiaa.sh >/dev/null 2>&1; then "
    "start_aiaa.sh --workspace /workspace/aiaa >/workspace/.aiaa.log 2>&1 & fi; "
    "exec jupyter lab --ip=0.0.0.0 --port=8888 --allow-root --no-browser "
    "--ServerApp.root_dir=/workspace",
)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    workspace: str  # absolute path on the host
    jupyter_host_port: int = JUPYTER_HOST_PORT
    aiaa_host_port: int = AIAA_PORT
    runtime: str = "nvidia"
    restart: str = "unless-stopped"
    shm_size: str = "1g"  # PyTorch data loaders need more than Docker's 64 MB
    command: tuple[str, ...] = DEFAULT_COMMAND

    @property
    def port_bindings(self) -> set[tuple[str, str]]:
        """{(container port/proto, host port)} as docker inspect shows them."""
        return {
            (f"{JUPYTER_CONTAINER_PORT}/tcp", str(self.jupyter_host_port)),
            (f"{AIAA_PORT}/tcp", str(self.aiaa_host_port)),
        }

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def run_command(self, env_file: str, token_sha: str) -> str:
        """`docker run` as a shell string; env_file and token_sha may be shell expressions."""
        q = shlex.quote
        parts = [
            "docker run -d", f"--name {q(self.name)}", f"--runtime {q(self.runtime)}",
            f"--restart {q(self.restart)}", f"--shm-size {q(self.shm_size)}",
            f"-p {self.jupyter_host_port}:{JUPYTER_CONTAINER_PORT}",
            f"-p {self.aiaa_host_port}:{AIAA_PORT}",
            f"-v {q(self.workspace)}:/workspace",
            f'--env-file "{env_file}"',
            # The nvidia runtime hands over the GPUs this names; NGC images set
            # it, other images may not.
            "-e NVIDIA_VISIBLE_DEVICES=all",
            f"--label {LABEL_CONFIG}={self.config_hash()}",
            f'--label {LABEL_TOKEN}="{token_sha}"',
            q(self.image), " ".join(q(c) for c in self.command),
        ]
        return " ".join(parts)


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
