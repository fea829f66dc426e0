"""Everything the steps need to know about a host, read in one remote command.

The script first waits (bounded) for cloud-init and the dpkg lock, then prints
every fact in "@@name" sections. Steps decide from these facts alone and pay a
round trip only for what they change.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from bootstrap.remote import parse_sections

TOKEN_DIR = ".config/gpu-workbench"
TOKEN_FILE = f"{TOKEN_DIR}/jupyter_token"

# Files whose permissions `--chmod-home` leaves alone: sshd refuses a
# world-readable key dir setup on some configs, and the token is a secret.
CHMOD_HOME_PRUNE = (".ssh", TOKEN_DIR)


# The MLflow tracking server's container (bootstrap/steps/mlflow.py).
MLFLOW_CONTAINER = "workbench-mlflow"
# Beside the extra packages in the workspace: the sha256 of the requirements installed.
PACKAGES_HASH_FILE = "requirements.sha256"


def facts_script(*, wait_timeout: float, container_name: str, chmod_home: bool,
                 workspace: str = "~/workspace", packages_dir: str = ".gpu-workbench/python"
                 ) -> str:
    prune = " -o ".join(f'-path "$home/{p}"' for p in CHMOD_HOME_PRUNE)
    chmod_probe = (
        f'find "$home" \\( {prune} \\) -prune -o ! -type l \\( '
        r'\( -type d ! -perm -005 \) -o \( ! -type d ! -perm -004 \) '
        r'-o \( ! -type d -perm /111 ! -perm -001 \) \) -print -quit 2>/dev/null'
        if chmod_home else ":"
    )
    name = shlex.quote(container_name)
    # The workspace as the host sees it: ~ is the login user's home.
    ws = ('"$home"' + shlex.quote(workspace[1:]) if workspace.startswith("~")
          else shlex.quote(workspace))
    return rf"""
export LC_ALL=C
user=${{SUDO_USER:-$(id -un)}}
home=$(getent passwd "$user" | cut -d: -f6)
say() {{ printf '\n@@%s\n' "$1"; }}
say user; echo "$user"
say home; echo "$home"
say group; id -gn "$user"
start=$(date +%s); deadline=$(( start + {int(wait_timeout)} ))

say cloud_init
if command -v cloud-init >/dev/null 2>&1; then
  timeout {int(wait_timeout)} cloud-init status --wait >/dev/null 2>&1; rc=$?
  echo "rc=$rc"; cloud-init status 2>/dev/null | head -n 1
else
  echo absent
fi

say dpkg_lock
# apt takes fcntl locks on these files; flock(1) would not see them, fuser does.
lock_holders() {{
  if command -v fuser >/dev/null 2>&1; then
    fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock 2>/dev/null | tr -s ' \n' ' '
  elif command -v lsof >/dev/null 2>&1; then
    lsof -t /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock 2>/dev/null | tr -s ' \n' ' '
  fi
}}
if [ ! -e /var/lib/dpkg/lock-frontend ] && [ ! -e /var/lib/dpkg/lock ]; then
  echo "absent"
elif ! command -v fuser >/dev/null 2>&1 && ! command -v lsof >/dev/null 2>&1; then
  echo "unknown (neither fuser nor lsof)"
else
  waited=0
  while holders=$(lock_holders); [ -n "$(echo $holders)" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 1; waited=$((waited + 1))
  done
  if [ -n "$(echo $holders)" ]; then
    first=$(echo $holders | cut -d' ' -f1)
    echo "held by pid $(echo $holders) ($(cat /proc/$first/comm 2>/dev/null)) after ${{waited}}s"
  else
    echo "free waited=$waited"
  fi
fi

say bashrc
if [ -f "$home/.bashrc" ]; then base64 -w0 "$home/.bashrc"; echo; else echo absent; fi
say chmod_home
{chmod_probe}

say daemon_json
if [ -e /etc/docker/daemon.json ]; then base64 -w0 /etc/docker/daemon.json; echo; else echo absent; fi
say nvidia_runtime_bin
command -v nvidia-container-runtime || echo absent
say dockerd
command -v dockerd || echo absent
say docker_info
if wb_info=$(timeout 30 docker info --format '{{{{json .}}}}' 2>/dev/null); then echo "$wb_info"; else echo down; fi
say sys_vendor
cat /sys/class/dmi/id/sys_vendor 2>/dev/null
say waagent
if [ -d /var/lib/waagent ]; then echo yes; else echo no; fi
say mnt
if [ -d /mnt ]; then echo yes; else echo no; fi
say compose
if wb_c=$(docker compose version 2>&1); then echo "$wb_c" | head -n 1; echo rc=0; else echo rc=1; fi
say container
docker inspect --type container {name} --format '{{{{json .}}}}' 2>/dev/null || echo absent
say token
cat "$home/{TOKEN_FILE}" 2>/dev/null
say apt
command -v apt-get || echo absent
say gpu
# Driver, compute capability and model, for the image compatibility check (one line per GPU).
if command -v nvidia-smi >/dev/null 2>&1; then
  wb_g=$(timeout 30 nvidia-smi --query-gpu=driver_version,compute_cap,name --format=csv,noheader 2>&1); wb_rc=$?
  echo "$wb_g" | head -n 16; echo "rc=$wb_rc"
else echo absent; fi
say packages_sha
cat {ws}/{shlex.quote(packages_dir)}/{PACKAGES_HASH_FILE} 2>/dev/null
say mlflow
docker inspect --type container {MLFLOW_CONTAINER} --format '{{{{json .}}}}' 2>/dev/null || echo absent
"""


@dataclass
class Facts:
    user: str
    home: str
    group: str
    cloud_init: str
    dpkg_lock: str
    bashrc: bytes | None
    chmod_home_offender: str
    daemon_json: bytes | None
    nvidia_runtime_bin: str | None
    dockerd_bin: str | None
    docker_info: dict[str, Any] | None  # None: dockerd not answering
    sys_vendor: str
    waagent: bool
    has_mnt: bool
    compose_version: str | None
    container: dict[str, Any] | None
    token: str | None
    has_apt: bool
    gpu: str = "absent"  # nvidia-smi's csv lines then rc=N, or "absent"
    packages_sha: str | None = None  # of the extra packages last installed
    mlflow: dict[str, Any] | None = None  # docker inspect of the MLflow container
    raw: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def docker_running(self) -> bool:
        return self.docker_info is not None

    @property
    def docker_runtimes(self) -> list[str]:
        return sorted((self.docker_info or {}).get("Runtimes") or {})

    @property
    def docker_root_dir(self) -> str | None:
        return (self.docker_info or {}).get("DockerRootDir")

    @property
    def daemon_json_sha256(self) -> str | None:
        return None if self.daemon_json is None else hashlib.sha256(self.daemon_json).hexdigest()

    @property
    def bashrc_sha256(self) -> str | None:
        return None if self.bashrc is None else hashlib.sha256(self.bashrc).hexdigest()


def _b64_or_none(value: str) -> bytes | None:
    value = value.strip()
    return None if value == "absent" else base64.b64decode(value)


def _path_or_none(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "absent") else value


def _json_or_none(value: str) -> dict[str, Any] | None:
    value = value.strip()
    if value in ("", "absent", "down"):
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    # The Docker CLI still prints client info when the daemon is down; treat
    # "no server" as down.
    if data.get("ServerErrors") and not data.get("ServerVersion"):
        return None
    return data


def parse_facts(output: str) -> Facts:
    s = parse_sections(output)
    compose = s.get("compose", "")
    compose_lines = compose.splitlines()
    compose_ok = bool(compose_lines) and compose_lines[-1] == "rc=0"
    return Facts(
        user=s.get("user", ""),
        home=s.get("home", ""),
        group=s.get("group", ""),
        cloud_init=s.get("cloud_init", ""),
        dpkg_lock=s.get("dpkg_lock", ""),
        bashrc=_b64_or_none(s.get("bashrc", "absent")),
        chmod_home_offender=s.get("chmod_home", "").strip(),
        daemon_json=_b64_or_none(s.get("daemon_json", "absent")),
        nvidia_runtime_bin=_path_or_none(s.get("nvidia_runtime_bin", "")),
        dockerd_bin=_path_or_none(s.get("dockerd", "")),
        docker_info=_json_or_none(s.get("docker_info", "")),
        sys_vendor=s.get("sys_vendor", "").strip(),
        waagent=s.get("waagent", "").strip() == "yes",
        has_mnt=s.get("mnt", "").strip() == "yes",
        compose_version=compose_lines[0] if compose_ok else None,
        container=_json_or_none(s.get("container", "")),
        token=s.get("token", "").strip() or None,
        has_apt=_path_or_none(s.get("apt", "")) is not None,
        gpu=s.get("gpu", "absent").strip() or "absent",
        packages_sha=s.get("packages_sha", "").strip() or None,
        mlflow=_json_or_none(s.get("mlflow", "")),
        raw=s,
    )
