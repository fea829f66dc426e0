#!/usr/bin/env python3
"""Stop this GPU workstation after N idle minutes, so a forgotten machine stops billing.

Installed by the bootstrap as /usr/local/lib/gpu-workbench/workbench_idle_check.py
and run every few minutes by workbench-idle-check.timer. Python 3 standard
library only: it runs on the host, outside any virtual environment.

Idle means, at every check across the window: GPU utilisation below the
threshold on every GPU, no SSH connection (a login or an `ssh -L` tunnel), and
no JupyterLab activity (no busy kernel, last activity older than the window).
The first idle check records the time in a state file; any busy check removes
it; once the recorded time is N minutes old, the machine stops:
  aws, gcp  `systemctl poweroff`: the instance stops (AWS: its shutdown
            behaviour is "stop"; GCP: TERMINATED) and compute billing ends.
  azure     a powered-off Azure VM is still billed: the VM deallocates itself
            through the Azure REST API with its managed identity (the stack
            grants it Virtual Machine Contributor on itself).
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_PATH = Path("/etc/gpu-workbench/autostop.conf")
STATE_PATH = Path("/var/lib/gpu-workbench/idle-since")
IMDS = "http://169.254.169.254/metadata"
AZURE_API = "2024-07-01"


@dataclass(frozen=True)
class Settings:
    cloud: str
    minutes: int
    gpu_threshold: int = 10  # percent
    ssh_port: int = 22
    jupyter_url: str = "http://127.0.0.1:8890"
    jupyter_token_file: str = ""


@dataclass(frozen=True)
class Activity:
    """One look at the machine, from the outputs of real commands."""

    gpu_utilisation: tuple[int, ...]  # percent per GPU; empty when nvidia-smi failed
    ssh_connections: int
    jupyter_last_activity: dt.datetime | None  # None: no Jupyter reachable
    jupyter_busy_kernels: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    idle: bool
    stop: bool
    idle_since: dt.datetime | None  # what the state file should hold next
    reasons: tuple[str, ...] = field(default=())


# --- reading the real commands' outputs ------------------------------------------------------


def parse_gpu_utilisation(text: str) -> tuple[int, ...]:
    """`nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits`."""
    values = []
    for line in text.splitlines():
        line = line.strip().rstrip("%").strip()
        if line:
            values.append(int(line))
    return tuple(values)


def parse_ssh_connections(text: str, port: int = 22) -> int:
    """`ss -Htn state established` lines whose local address ends in :PORT."""
    count = 0
    for line in text.splitlines():
        parts = line.split()
        # Recv-Q Send-Q Local:Port Peer:Port (state filtered: no State column)
        local = next((p for p in parts if ":" in p), "")
        if local.rsplit(":", 1)[-1] == str(port):
            count += 1
    return count


def parse_jupyter(status_json: str, kernels_json: str) -> tuple[dt.datetime | None, int]:
    """Jupyter Server's /api/status and /api/kernels."""
    status = json.loads(status_json)
    last = status.get("last_activity")
    last_activity = _parse_time(last) if last else None
    busy = sum(1 for k in json.loads(kernels_json) if k.get("execution_state") == "busy")
    for kernel in json.loads(kernels_json):
        kernel_last = kernel.get("last_activity")
        if kernel_last and (last_activity is None or _parse_time(kernel_last) > last_activity):
            last_activity = _parse_time(kernel_last)
    return last_activity, busy


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the decision ------------------------------------------------------------------------------


def decide(
    activity: Activity, settings: Settings, now: dt.datetime, idle_since: dt.datetime | None
) -> Decision:
    window = dt.timedelta(minutes=settings.minutes)
    busy: list[str] = []
    if not activity.gpu_utilisation:
        # No reading is not "idle": a broken nvidia-smi must not power off a job.
        busy.append("GPU utilisation unknown (nvidia-smi gave no reading)")
    elif max(activity.gpu_utilisation) >= settings.gpu_threshold:
        busy.append(f"GPU busy ({max(activity.gpu_utilisation)}% >= "
                    f"{settings.gpu_threshold}%)")
    if activity.ssh_connections:
        busy.append(f"{activity.ssh_connections} SSH connection(s)")
    if activity.jupyter_busy_kernels:
        busy.append(f"{activity.jupyter_busy_kernels} Jupyter kernel(s) busy")
    if activity.jupyter_last_activity and now - activity.jupyter_last_activity < window:
        busy.append(f"Jupyter active at {activity.jupyter_last_activity:%H:%M:%S} UTC")
    if busy:
        return Decision(False, False, None, tuple(busy))
    since = idle_since or now
    idle_for = now - since
    stop = settings.minutes > 0 and idle_for >= window
    reason = (f"idle for {int(idle_for.total_seconds() // 60)} of {settings.minutes} minutes"
              + ("" if not activity.problems else "; " + "; ".join(activity.problems)))
    return Decision(True, stop, since, (reason,))


# --- the host ------------------------------------------------------------------------------------


def _run(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _http(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {}, data=data,
                                     method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def look(settings: Settings) -> Activity:
    gpus = parse_gpu_utilisation(_run(
        "nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"))
    ssh = parse_ssh_connections(_run("ss", "-Htn", "state", "established"), settings.ssh_port)
    problems: list[str] = []
    last, busy = None, 0
    token = ""
    if settings.jupyter_token_file and os.path.exists(settings.jupyter_token_file):
        token = Path(settings.jupyter_token_file).read_text().strip()
    try:
        auth = {"Authorization": f"token {token}"} if token else {}
        last, busy = parse_jupyter(_http(f"{settings.jupyter_url}/api/status", auth),
                                   _http(f"{settings.jupyter_url}/api/kernels", auth))
    except (OSError, ValueError) as err:
        problems.append(f"Jupyter not reachable ({err.__class__.__name__})")
    return Activity(gpus, ssh, last, busy, tuple(problems))


def stop_machine(cloud: str) -> None:
    if cloud != "azure":
        subprocess.run(["systemctl", "poweroff"], check=True)
        return
    meta = json.loads(_http(f"{IMDS}/instance/compute?api-version=2021-02-01",
                            {"Metadata": "true"}))
    token = json.loads(_http(
        f"{IMDS}/identity/oauth2/token?api-version=2018-02-01"
        "&resource=https://management.azure.com/", {"Metadata": "true"}))["access_token"]
    vm = (f"https://management.azure.com/subscriptions/{meta['subscriptionId']}"
          f"/resourceGroups/{meta['resourceGroupName']}/providers/Microsoft.Compute"
          f"/virtualMachines/{meta['name']}")
    _http(f"{vm}/deallocate?api-version={AZURE_API}",
          {"Authorization": f"Bearer {token}"}, data=b"")


def read_settings(path: Path) -> Settings:
    parser = configparser.ConfigParser()
    if not parser.read(path):
        raise SystemExit(f"workbench-idle-check: no config at {path}")
    section = parser["autostop"]
    return Settings(
        cloud=section.get("cloud", "aws"),
        minutes=section.getint("minutes", 60),
        gpu_threshold=section.getint("gpu_threshold", 10),
        ssh_port=section.getint("ssh_port", 22),
        jupyter_url=section.get("jupyter_url", "http://127.0.0.1:8890"),
        jupyter_token_file=section.get("jupyter_token_file", ""),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_PATH)
    parser.add_argument("--state", type=Path, default=STATE_PATH)
    parser.add_argument("--dry-run", action="store_true", help="decide, print, do nothing")
    args = parser.parse_args(argv)
    settings = read_settings(args.config)
    if settings.minutes <= 0:
        print("autostop is off (minutes = 0)")
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    idle_since = None
    if args.state.exists():
        idle_since = _parse_time(args.state.read_text().strip())
    decision = decide(look(settings), settings, now, idle_since)
    print(("IDLE: " if decision.idle else "busy: ") + "; ".join(decision.reasons))
    if args.dry_run:
        print("would stop now" if decision.stop else "would not stop")
        return 0
    if decision.idle_since is None:
        args.state.unlink(missing_ok=True)
    else:
        args.state.parent.mkdir(parents=True, exist_ok=True)
        args.state.write_text(decision.idle_since.isoformat())
    if decision.stop:
        print(f"stopping the machine ({settings.cloud})")
        args.state.unlink(missing_ok=True)  # a restarted machine starts a fresh window
        stop_machine(settings.cloud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
