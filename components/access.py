"""How the user reaches the workstation: ssh and tunnel commands, local URLs.

Computed from the spec and the public IP alone, so every cloud exports the
same strings. App ports are reached through an SSH tunnel (`ssh -L`), so the
URLs point at localhost on the user's machine.
"""

from __future__ import annotations

from components.spec import WorkstationSpec

JUPYTER_PORT = 8890  # Clara container's JupyterLab (container 8888, published on 8890)
AIAA_PORT = 5000
MLFLOW_PORT = 5001  # its own port: 5000 is AIAA's
TUNNEL_PORTS = (8888, 8890, 5000)


def tunnel_ports(spec: WorkstationSpec) -> tuple[int, ...]:
    """The defaults, every open app port, and every port the image preset serves."""
    preset_ports = {p.host for p in spec.image_preset.ports} if spec.image_preset else set()
    mlflow = {MLFLOW_PORT} if spec.mlflow else set()
    return tuple(sorted(set(TUNNEL_PORTS) | set(spec.app_ports) | preset_ports | mlflow))


def ssh_command(user: str, host: str) -> str:
    return f"ssh {user}@{host}"


def tunnel_command(spec: WorkstationSpec, host: str, user: str | None = None) -> str:
    forwards = " ".join(f"-L {p}:localhost:{p}" for p in tunnel_ports(spec))
    return f"ssh -N {forwards} {user or spec.ssh_user}@{host}"


def jupyter_url() -> str:
    # The token is added by the bootstrap, which prints the full URL once.
    return f"http://localhost:{JUPYTER_PORT}/lab"


def aiaa_url() -> str:
    return f"http://localhost:{AIAA_PORT}"


def mlflow_url(spec: WorkstationSpec) -> str:
    return f"http://localhost:{MLFLOW_PORT}" if spec.mlflow else ""
