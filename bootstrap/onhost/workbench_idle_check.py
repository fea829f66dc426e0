#!/usr/bin/env python3
"""Stop this GPU workstation after N idle minutes, so a forgotten machine stops billing.

Installed by the bootstrap as /usr/local/lib/gpu-workbench/workbench_idle_check.py
(with /usr/local/bin/workbench-autostop calling it) and run by
workbench-idle-check.timer every check interval. Python 3.8+ standard library
only: it runs on the host's python3, outside any virtual environment.

    workbench-autostop status            what the last check saw and decided
    workbench-autostop postpone 2h       count the machine as in use for 2 hours
    workbench-autostop resume            drop the postponement
    workbench-autostop check [--dry-run] one check (what the timer runs)
    workbench-autostop probe             Azure: may this VM's identity deallocate it?

What counts as activity (docs/autostop.md has the reasons):
  GPU        any GPU at or above the threshold in any of several samples taken
             over a few seconds; a GPU compute process, unless it is a Jupyter
             kernel that Jupyter reports idle (a kernel holding GPU memory is
             not work). No nvidia-smi at all: the GPU is not watched. A failing
             nvidia-smi counts as busy for one window, then as idle with a
             warning at every check.
  network    an established TCP connection to a listener on the SSH port or an
             app port (AIAA 5000, MLflow 5001, MONAI Label 8000, Jupyter
             8888/8890), in the host's network namespace or any container's.
  Jupyter    read with `no_track_activity`, so the check is never its own
             activity: a busy kernel, a kernel with a connection (a browser),
             and the last activity of a kernel or of the server's API (which
             starts the window later, it is not a reason to stay up forever).
  postpone   `workbench-autostop postpone 2h` (busy until then), or touching the
             postpone file in the workspace (counts as activity at that moment).
The first check that sees no activity records "idle since"; once the machine
has been quiet for the whole window (counted from the later of that and the
last Jupyter or postpone activity), the machine stops: a warning goes out a
few minutes ahead (wall and the journal), then
  aws, gcp  `systemctl poweroff`: the instance stops and compute billing ends.
  azure     a powered-off Azure VM is still billed: the VM deallocates itself
            through Azure Resource Manager with its managed identity.
A stop that fails keeps "idle since", exits 1 (the unit shows failed) and is
tried again at the next check. State lives in /run: a new boot starts afresh.
A stop that was asked for is also written to the last-stop record
(/var/lib/gpu-workbench/last-stop.json, `by: autostop`), which the interruption
watcher writes when the cloud stops the machine: scripts/status tells them apart.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

CONFIG_PATH = Path("/etc/gpu-workbench/autostop.conf")
STATE_PATH = Path("/run/gpu-workbench/autostop-state.json")
# Shared with workbench_interruption_watch.py, whose record format this follows.
LAST_STOP_PATH = Path("/var/lib/gpu-workbench/last-stop.json")

# --- the schedule: how often the timer runs the check, from the window ---------------------

MIN_INTERVAL_S = 30
MAX_INTERVAL_S = 300
CHECKS_PER_WINDOW = 4  # at least this many checks per window, within the bounds above
# The timer fires on time to the millisecond (AccuracySec=1ms), but the check reads
# the clock after python3 started: a check counts as at the window's end within this.
TOLERANCE_S = 2.0
MAX_WARN_LEAD_S = 600


def check_interval_ms(window_s: float) -> int:
    """The timer's period: clamp(window / 4, 30 s, 5 min), adjusted so the window
    is a whole number of intervals (then the stop falls on a check, not one later).

    60 min -> 5 min; 10 min -> 150 s; 2 min -> 30 s; 1 min -> 30 s; 31 min -> 265.714 s.
    """
    target = min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, window_s / CHECKS_PER_WINDOW))
    checks = max(1, math.ceil(window_s / target - 1e-9))
    return max(1000, round(window_s * 1000 / checks))


def warn_lead_s(window_s: float, interval_s: float) -> float:
    """How long before the stop the warnings start: a sixth of the window, at least one
    interval (so at least one check warns before the one that stops), at most 10 min."""
    return min(MAX_WARN_LEAD_S, max(interval_s, window_s / 6))


def systemd_span(ms: int) -> str:
    """A systemd time span: "300s", or "265s 714ms"."""
    seconds, rest = divmod(ms, 1000)
    return f"{seconds}s" if not rest else f"{seconds}s {rest}ms"


def human_span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 120:
        whole = abs(minutes - round(minutes)) < 0.05
        return f"{minutes:.0f} min" if whole else f"{minutes:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- settings ---------------------------------------------------------------------------------

PORT_NAMES = {22: "SSH", 5000: "AIAA", 5001: "MLflow", 8000: "MONAI Label",
              8888: "Jupyter", 8890: "JupyterLab"}
DEFAULT_APP_PORTS = (5000, 5001, 8000, 8888, 8890)
DEFAULT_JUPYTER_URLS = ("http://127.0.0.1:8890", "http://127.0.0.1:8888")
IMDS_URL = "http://169.254.169.254"
ARM_URL = "https://management.azure.com"


@dataclass(frozen=True)
class Settings:
    cloud: str
    minutes: float
    interval_s: float = 0.0  # 0: from check_interval_ms(window)
    gpu_threshold: int = 10  # percent
    gpu_samples: int = 5
    gpu_sample_gap_s: float = 1.0
    nvidia_smi: str = "nvidia-smi"
    ssh_ports: tuple[int, ...] = (22,)
    app_ports: tuple[int, ...] = DEFAULT_APP_PORTS
    jupyter_urls: tuple[str, ...] = DEFAULT_JUPYTER_URLS
    jupyter_token_file: str = ""
    postpone_file: str = ""
    wall: bool = True
    imds_url: str = IMDS_URL
    arm_url: str = ARM_URL
    last_stop_file: str = ""  # where a stop is recorded for scripts/status; "": nowhere

    @property
    def window_s(self) -> float:
        return self.minutes * 60

    @property
    def interval(self) -> float:
        return self.interval_s or check_interval_ms(self.window_s) / 1000

    @property
    def warn_lead(self) -> float:
        return warn_lead_s(self.window_s, self.interval)

    @property
    def stop_how(self) -> str:
        return "deallocate" if self.cloud == "azure" else "poweroff"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.split(r"[\s,]+", text.strip()) if p)


def _words(text: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[\s,]+", text.strip()) if p)


def read_settings(path: Path) -> Settings:
    parser = configparser.ConfigParser()
    try:
        found = parser.read(path)
    except configparser.Error as exc:
        raise SystemExit(f"workbench-idle-check: {path}: {exc}") from exc
    if not found or "autostop" not in parser:
        raise SystemExit(f"workbench-idle-check: no [autostop] config at {path}")
    s = parser["autostop"]
    d = Settings(cloud="aws", minutes=60)
    return Settings(
        cloud=s.get("cloud", d.cloud),
        minutes=s.getfloat("minutes", d.minutes),
        interval_s=s.getfloat("interval_seconds", d.interval_s),
        gpu_threshold=s.getint("gpu_threshold", d.gpu_threshold),
        gpu_samples=max(1, s.getint("gpu_samples", d.gpu_samples)),
        gpu_sample_gap_s=s.getfloat("gpu_sample_gap_seconds", d.gpu_sample_gap_s),
        nvidia_smi=s.get("nvidia_smi", d.nvidia_smi),
        ssh_ports=_ints(s.get("ssh_ports", "22")),
        app_ports=_ints(s.get("app_ports", " ".join(map(str, d.app_ports)))),
        jupyter_urls=_words(s.get("jupyter_urls", " ".join(d.jupyter_urls))),
        jupyter_token_file=s.get("jupyter_token_file", d.jupyter_token_file),
        postpone_file=s.get("postpone_file", d.postpone_file),
        wall=s.getboolean("wall", d.wall),
        imds_url=s.get("imds_url", d.imds_url).rstrip("/"),
        arm_url=s.get("arm_url", d.arm_url).rstrip("/"),
        last_stop_file=s.get("last_stop_file", d.last_stop_file),
    )


# --- time --------------------------------------------------------------------------------------

UTC = dt.timezone.utc


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 as Jupyter and this program write it ("...Z" or "+00:00"), on Python 3.8
    (whose fromisoformat takes neither "Z" nor fractions other than 3 or 6 digits)."""
    text = text.strip().replace("Z", "+00:00")
    match = re.match(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$", text)
    if match:
        fraction = "." + (match.group(2) + "000000")[:6] if match.group(2) else ""
        text = match.group(1) + fraction + match.group(3)
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat()


def hms(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S UTC")


# --- what the machine is doing: the readings ------------------------------------------------------

@dataclass(frozen=True)
class GpuApp:
    gpu: str
    pid: int
    name: str
    used_mib: str


@dataclass
class GpuLook:
    state: str  # "ok", "absent" (no nvidia-smi on this host) or "failed"
    error: str = ""
    samples: dict[str, list[int]] = field(default_factory=dict)  # GPU index -> percent
    span_s: float = 0.0
    apps: list[GpuApp] = field(default_factory=list)


@dataclass(frozen=True)
class Conn:
    port: int
    local: str
    peer: str
    where: str  # "host", or the network namespace of a container


@dataclass(frozen=True)
class Kernel:
    id: str
    name: str
    execution_state: str
    connections: int
    last_activity: dt.datetime | None


@dataclass
class JupyterLook:
    url: str
    state: str  # "ok", "down" (nothing listening), "refused" (401/403) or "failed"
    error: str = ""
    started: dt.datetime | None = None
    last_activity: dt.datetime | None = None
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def api_activity(self) -> dt.datetime | None:
        """The server's last activity, unless it is only its own start (an untouched
        server: jupyter_server counts its start time as activity)."""
        if self.last_activity is None or self.last_activity == self.started:
            return None
        return self.last_activity


@dataclass
class PostponeLook:
    until: dt.datetime | None = None  # `workbench-autostop postpone`: busy until then
    touched: dt.datetime | None = None  # the file's mtime: activity at that moment
    note: str = ""


@dataclass
class Look:
    gpu: GpuLook
    connections: list[Conn]
    jupyter: list[JupyterLook]
    postpone: PostponeLook = field(default_factory=PostponeLook)
    kernel_pids: dict[int, str] = field(default_factory=dict)  # pid -> Jupyter kernel id


# nvidia-smi ------------------------------------------------------------------------------------

GPU_QUERY = ("--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits")
APPS_QUERY = ("--query-compute-apps=gpu_uuid,pid,process_name,used_memory",
              "--format=csv,noheader,nounits")
GPU_INDEX_QUERY = ("--query-gpu=index,uuid", "--format=csv,noheader,nounits")


class CommandFailed(Exception):
    pass


def run_command(argv: list[str], timeout: float = 20) -> str:
    """stdout of argv; CommandFailed with the reason; FileNotFoundError when absent."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{argv[0]} did not answer within {timeout:g} s") from exc
    if proc.returncode != 0:
        first = (proc.stdout.strip().splitlines() or [""])[0][:160]
        raise CommandFailed(f"{argv[0]} exited {proc.returncode}" + (f": {first}" if first else ""))
    return proc.stdout


def parse_gpu_samples(text: str) -> dict[str, int | None]:
    """`nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits`:
    {index: percent}, None where the GPU reports [N/A] (MIG mode)."""
    values: dict[str, int | None] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            continue
        try:
            values[parts[0]] = int(parts[1].rstrip("%").strip())
        except ValueError:
            values[parts[0]] = None
    return values


def parse_compute_apps(text: str, uuid_to_index: dict[str, str]) -> list[GpuApp]:
    """`nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory ...`."""
    apps = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[1].isdigit():
            continue
        gpu = uuid_to_index.get(parts[0], parts[0])
        apps.append(GpuApp(gpu=gpu, pid=int(parts[1]), name=", ".join(parts[2:-1]),
                           used_mib=parts[-1]))
    return apps


def read_gpu(settings: Settings, sleep: Callable[[float], None] = time.sleep) -> GpuLook:
    """Several utilisation samples, a gap apart, then the compute processes."""
    smi = settings.nvidia_smi
    samples: dict[str, list[int]] = {}
    errors: list[str] = []
    started = time.monotonic()
    for n in range(settings.gpu_samples):
        if n:
            sleep(settings.gpu_sample_gap_s)
        try:
            reading = parse_gpu_samples(run_command([smi, *GPU_QUERY]))
        except FileNotFoundError:
            return GpuLook("absent", f"no {smi} on this host")
        except CommandFailed as exc:
            errors.append(str(exc))
            if n == 0:
                break  # a broken driver does not mend in a second: do not wait for it
            continue
        if not reading:
            errors.append(f"{smi} listed no GPU")
            break
        for index, value in reading.items():
            if value is not None:
                samples.setdefault(index, []).append(value)
    span = time.monotonic() - started
    if not samples:
        why = errors[0] if errors else f"{smi} gave no utilisation reading ([N/A])"
        return GpuLook("failed", why, span_s=span)
    apps: list[GpuApp] = []
    try:
        uuids = {}
        for line in run_command([smi, *GPU_INDEX_QUERY]).splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2:
                uuids[parts[1]] = parts[0]
        apps = parse_compute_apps(run_command([smi, *APPS_QUERY]), uuids)
    except (CommandFailed, FileNotFoundError) as exc:
        return GpuLook("failed", f"compute processes: {exc}", samples, span)
    return GpuLook("ok", "", samples, span, apps)


# TCP connections in every network namespace ----------------------------------------------------

TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


def _hex_address(text: str) -> tuple[str, int]:
    """ "0100007F:1F90" -> ("127.0.0.1", 8080); IPv6 too (four little-endian words)."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip: Any = ipaddress.IPv4Address(raw[::-1])
    else:
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def parse_proc_net_tcp(text: str) -> tuple[set[int], list[tuple[str, int, str, int]]]:
    """/proc/<pid>/net/tcp or tcp6: (listening ports, established (local ip, local port,
    peer ip, peer port))."""
    listening: set[int] = set()
    established = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            local_ip, local_port = _hex_address(parts[1])
            peer_ip, peer_port = _hex_address(parts[2])
        except ValueError:
            continue
        if parts[3] == TCP_LISTEN:
            listening.add(local_port)
        elif parts[3] == TCP_ESTABLISHED:
            established.append((local_ip, local_port, peer_ip, peer_port))
    return listening, established


def _fmt(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def read_connections(ports: Iterable[int], proc: str = "/proc",
                     pids: Iterable[int] | None = None) -> list[Conn]:
    """Established connections whose local port is one of `ports`, in every network
    namespace a process of this host is in (a container's published port reaches it
    through NAT and shows only in the container's namespace). The watched ports lie
    below the ephemeral range (32768-60999), so a connection this host opened to
    someone else's port 22 or 5000 is not counted; a server that stopped listening
    after accepting (inetd style) still is."""
    watched = set(ports)
    if not watched:
        return []
    try:
        own = os.stat(f"{proc}/self/ns/net").st_ino
    except OSError:
        own = -1
    if pids is None:
        pids = sorted(int(e.name) for e in os.scandir(proc) if e.name.isdigit())
    seen: set[int] = set()
    found: list[Conn] = []
    for pid in pids:
        try:
            ino = os.stat(f"{proc}/{pid}/ns/net").st_ino
        except OSError:
            continue
        if ino in seen:
            continue
        seen.add(ino)
        established: list[tuple[str, int, str, int]] = []
        for name in ("tcp", "tcp6"):
            try:
                with open(f"{proc}/{pid}/net/{name}") as fh:
                    established += parse_proc_net_tcp(fh.read())[1]
            except OSError:
                continue
        if ino == own:
            where = "host"
        else:
            try:
                with open(f"{proc}/{pid}/comm") as fh:
                    comm = fh.read().strip()
            except OSError:
                comm = "?"
            where = f"netns of pid {pid} ({comm})"
        for local_ip, local_port, peer_ip, peer_port in established:
            if local_port in watched:
                found.append(Conn(local_port, _fmt(local_ip, local_port),
                                  _fmt(peer_ip, peer_port), where))
    return found


# Jupyter -----------------------------------------------------------------------------------------

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str, headers: dict[str, str], timeout: float) -> Any:
    request = urllib.request.Request(url, headers=headers)
    with NO_PROXY.open(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def read_jupyter(url: str, token: str, timeout: float = 5) -> JupyterLook:
    """/api/status and /api/kernels with `no_track_activity`: jupyter_server's
    APIHandler skips recording the request as activity when that argument is
    present (jupyter_server/base/handlers.py, update_api_activity)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    look = JupyterLook(url, "ok")
    try:
        status = _get_json(f"{url}/api/status?no_track_activity=1", headers, timeout)
        kernels = _get_json(f"{url}/api/kernels?no_track_activity=1", headers, timeout)
    except urllib.error.HTTPError as exc:
        look.state = "refused" if exc.code in (401, 403) else "failed"
        look.error = f"HTTP {exc.code} {exc.reason}"
        return look
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            look.state, look.error = "down", "nothing listening"
        else:
            look.state, look.error = "failed", str(exc.reason)
        return look
    except (OSError, ValueError) as exc:
        look.state, look.error = "failed", f"{exc.__class__.__name__}: {exc}"
        return look
    try:
        look.started = parse_time(status["started"]) if status.get("started") else None
        look.last_activity = (parse_time(status["last_activity"])
                              if status.get("last_activity") else None)
        for k in kernels:
            look.kernels.append(Kernel(
                id=str(k.get("id", "")), name=str(k.get("name", "")),
                execution_state=str(k.get("execution_state", "unknown")),
                connections=int(k.get("connections") or 0),
                last_activity=parse_time(k["last_activity"]) if k.get("last_activity") else None))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        look.state, look.error = "failed", f"unexpected answer ({exc.__class__.__name__}: {exc})"
    return look


KERNEL_FILE = re.compile(r"kernel-([0-9a-fA-F-]{8,})\.json")


def kernel_pids(pids: Iterable[int], proc: str = "/proc") -> dict[int, str]:
    """Which of `pids` are Jupyter kernels (`... -f .../kernel-<id>.json`): pid -> id."""
    found = {}
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue
        match = KERNEL_FILE.search(cmdline)
        if match:
            found[pid] = match.group(1)
    return found


# postponing --------------------------------------------------------------------------------------

def read_postpone(path: str) -> PostponeLook:
    if not path:
        return PostponeLook()
    try:
        st = os.lstat(path)
    except OSError:
        return PostponeLook()
    if not stat.S_ISREG(st.st_mode):
        return PostponeLook(note=f"{path} ignored: not a regular file")
    look = PostponeLook(touched=dt.datetime.fromtimestamp(st.st_mtime, UTC))
    try:
        with open(path, "rb") as fh:
            text = fh.read(512).decode(errors="replace")
    except OSError:
        return look
    match = re.search(r"^until\s+(\S+)", text, re.M)
    if match:
        try:
            look.until = parse_time(match.group(1))
        except ValueError:
            look.note = f"{path}: unreadable 'until' line, counted as touched"
    return look


DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
UNIT_S = {"s": 1, "m": 60, "": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """ "2h", "90m", "1h30m", "45" (minutes) -> seconds."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    for match in DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or total <= 0:
        raise ValueError(f"not a duration: {text!r} (examples: 2h, 90m, 1h30m)")
    return total


# --- the decision ---------------------------------------------------------------------------------

@dataclass
class Decision:
    kind: str  # "busy", "idle", "warn" (idle, stop soon) or "stop"
    busy: list[str]  # why not idle, with the numbers
    details: list[str]  # one line per signal, for the journal
    warnings: list[str]
    quiet_since: dt.datetime | None = None
    stop_at: dt.datetime | None = None
    state: dict[str, Any] = field(default_factory=dict)  # what the state file holds next

    @property
    def summary(self) -> str:
        if self.kind == "busy":
            return "busy: " + "; ".join(self.busy)
        assert self.quiet_since is not None and self.stop_at is not None
        head = {"idle": "idle", "warn": "idle, stopping soon", "stop": "stop"}[self.kind]
        return f"{head}: quiet since {hms(self.quiet_since)}; stop at {hms(self.stop_at)}"


def _unknown(name: str, error: str, now: dt.datetime, state: dict[str, Any],
             settings: Settings, unknown: dict[str, str], busy: list[str],
             warnings: list[str]) -> None:
    """A signal that cannot be read counts as busy for one window from its first
    failure, then as idle, with a warning at every check."""
    since = parse_time(state.get("unknown_since", {}).get(name) or iso(now))
    unknown[name] = iso(since)
    until = since + dt.timedelta(seconds=settings.window_s)
    if (until - now).total_seconds() > TOLERANCE_S:
        busy.append(f"{name} unknown since {hms(since)} ({error}); counted as busy "
                    f"until {hms(until)}")
    else:
        warnings.append(f"{name} unreadable since {hms(since)} ({error}); counted as idle "
                        f"after one window")


def decide(look: Look, settings: Settings, now: dt.datetime,
           state: dict[str, Any]) -> Decision:
    window = dt.timedelta(seconds=settings.window_s)
    busy: list[str] = []
    details: list[str] = []
    warnings: list[str] = []
    unknown: dict[str, str] = {}
    activity: list[tuple[dt.datetime, str]] = []  # moments of activity that start the window

    idle_kernels = set()
    for j in look.jupyter:
        for k in j.kernels:
            if k.execution_state == "idle" and k.connections == 0:
                idle_kernels.add(k.id)

    # GPU
    gpu = look.gpu
    if gpu.state == "absent":
        details.append(f"gpu: not watched ({gpu.error})")
    parts = []
    for index, values in sorted(gpu.samples.items()):
        top = max(values)
        parts.append(f"GPU {index} {'/'.join(map(str, values))} % (max {top} %)")
        if top >= settings.gpu_threshold:
            busy.append(f"GPU {index} at {top} % (max of {len(values)} samples over "
                        f"{gpu.span_s:.0f} s; threshold {settings.gpu_threshold} %)")
    if parts:
        details.append(f"gpu: {len(gpu.samples)} GPU(s), samples over {gpu.span_s:.1f} s: "
                       + ", ".join(parts) + f"; threshold {settings.gpu_threshold} %; "
                       f"{len(gpu.apps)} compute process(es)")
    for app in gpu.apps:
        what = f"GPU process {app.name} (pid {app.pid}) holds {app.used_mib} MiB on GPU {app.gpu}"
        kernel = look.kernel_pids.get(app.pid)
        if kernel and kernel in idle_kernels:
            details.append(f"gpu: {what}: Jupyter kernel {kernel[:8]}, idle: not counted "
                           "(the kernel's own activity is)")
        else:
            busy.append(what)
    if gpu.state == "failed":
        details.append(f"gpu: no reading: {gpu.error}")
        _unknown("GPU", gpu.error, now, state, settings, unknown, busy, warnings)

    # Connections
    ports = [*settings.ssh_ports, *settings.app_ports]
    by_port: dict[int, list[Conn]] = {}
    for c in look.connections:
        by_port.setdefault(c.port, []).append(c)
    for port, conns in sorted(by_port.items()):
        name = PORT_NAMES.get(port, "app") if port not in settings.ssh_ports else "SSH"
        peers = ", ".join(sorted({c.peer for c in conns})[:4])
        where = sorted({c.where for c in conns})
        busy.append(f"{len(conns)} connection(s) on port {port} ({name}) from {peers}"
                    + ("" if where == ["host"] else f" [{'; '.join(where)}]"))
    if not ports:
        details.append("connections: not watched (no ports in the config)")
    elif not look.connections:
        details.append("connections: none on ports " + " ".join(map(str, ports)))

    # Jupyter
    for j in look.jupyter:
        if j.state == "down":
            details.append(f"jupyter {j.url}: not running")
            continue
        if j.state == "refused":
            warnings.append(f"jupyter {j.url}: our token was refused ({j.error}); its kernels "
                            "are not watched (connections to its port still are)")
            continue
        if j.state == "failed":
            details.append(f"jupyter {j.url}: {j.error}")
            _unknown(f"Jupyter at {j.url}", j.error, now, state, settings, unknown, busy,
                     warnings)
            continue
        line = [f"jupyter {j.url}: {len(j.kernels)} kernel(s)"]
        for k in j.kernels:
            ago = (f", last activity {hms(k.last_activity)}" if k.last_activity else "")
            line.append(f"{k.name} {k.id[:8]} {k.execution_state}, {k.connections} "
                        f"connection(s){ago}")
            if k.execution_state == "busy":
                busy.append(f"Jupyter kernel {k.name} {k.id[:8]} is {k.execution_state}")
            if k.connections:
                busy.append(f"Jupyter kernel {k.name} {k.id[:8]} has {k.connections} "
                            "connection(s) (a browser or client)")
            if k.last_activity:
                activity.append((k.last_activity, f"Jupyter kernel {k.id[:8]} activity"))
        api = j.api_activity
        line.append(f"server API last used {hms(api)}" if api else "server API untouched")
        if api:
            activity.append((api, f"Jupyter API activity at {j.url}"))
        details.append("; ".join(line))

    # Postponed
    p = look.postpone
    if p.note:
        warnings.append(p.note)
    if p.until and p.until > now:
        busy.append(f"postponed until {hms(p.until)} (workbench-autostop resume to undo)")
    if p.until:
        activity.append((p.until, "postponed until then"))
    if p.touched:
        activity.append((p.touched, f"{settings.postpone_file} touched"))

    new_state: dict[str, Any] = {k: v for k, v in state.items()
                                 if k in ("stop", "warned_for")}
    new_state["unknown_since"] = unknown
    if busy:
        new_state["idle_since"] = None
        return Decision("busy", busy, details, warnings, state=new_state)

    idle_since = parse_time(state["idle_since"]) if state.get("idle_since") else now
    new_state["idle_since"] = iso(idle_since)
    quiet_since, why = idle_since, "first idle check"
    for moment, what in activity:
        if quiet_since < moment <= now:
            quiet_since, why = moment, what
    stop_at = quiet_since + window
    left = (stop_at - now).total_seconds()
    details.append(f"quiet since {hms(quiet_since)} ({why}); window "
                   f"{human_span(settings.window_s)}; stop at {hms(stop_at)}")
    warned = state.get("warned_for") == iso(quiet_since)
    if left <= TOLERANCE_S and warned:
        kind = "stop"
    elif left <= settings.warn_lead + TOLERANCE_S:
        kind = "warn"
    else:
        kind = "idle"
    return Decision(kind, [], details, warnings, quiet_since, stop_at, new_state)


# --- stopping -------------------------------------------------------------------------------

class StopFailed(Exception):
    """The stop did not happen; `kind` says what is missing (for the bootstrap's line)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "no-identity", "role-missing", "transient", "unreachable", "error"


def poweroff() -> str:
    # --no-block: systemd stops this very service on the way down; waiting would only
    # have it killed mid-sentence (run_check exits 0 on that SIGTERM instead).
    try:
        proc = subprocess.run(["systemctl", "poweroff", "--no-block"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StopFailed("error", f"systemctl poweroff: {exc}") from exc
    if proc.returncode != 0:
        raise StopFailed("error", f"systemctl poweroff exited {proc.returncode}: "
                                  f"{proc.stdout.strip()[:200]}")
    return "poweroff requested (systemctl poweroff)"


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode() or "null")
        except ValueError:
            return None


class Azure:
    """The VM's own managed identity against Azure Resource Manager, as Azure documents it:
    - token: GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01
      &resource=https://management.azure.com/ with `Metadata: true` (MicrosoftDocs/
      entra-docs how-to-use-vm-token.md, ms.date 2025-02-27; read 2026-11-23). Retry
      404, 410, 429 and 5xx with backoff; other 4xx are final.
    - which VM: GET {imds}/metadata/instance?api-version=2021-02-01 (compute.subscriptionId,
      resourceGroupName, name; azure-compute-docs instance-metadata-service.md).
    - POST {arm}{vm}/deallocate?api-version=2024-11-01: 200, or 202 with Location
      (azure-rest-api-specs ComputeRP stable/2024-11-01 virtualMachine.json,
      VirtualMachine_Deallocate_MaximumSet_Gen.json).
    - GET {arm}{vm}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01:
      {"value": [{"actions", "notActions", "dataActions", "notDataActions"}], "nextLink"}
      (Permissions_ListForResource, authorization-RoleDefinitionsCalls.json 2022-04-01).
    The token is sent only in the Authorization header and never printed.
    """

    RESOURCE = "https://management.azure.com/"
    TOKEN_API = "2018-02-01"
    INSTANCE_API = "2021-02-01"
    COMPUTE_API = "2024-11-01"
    AUTHZ_API = "2022-04-01"
    DEALLOCATE = "Microsoft.Compute/virtualMachines/deallocate/action"
    # IMDS: tries at 0, ~2 and ~6 s (the documented backoff, cut short: a check is short).
    RETRY_DELAYS = (2.0, 6.0)

    def __init__(self, imds_url: str = IMDS_URL, arm_url: str = ARM_URL,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = 15) -> None:
        self.imds_url = imds_url.rstrip("/")
        self.arm_url = arm_url.rstrip("/")
        self.sleep = sleep
        self.timeout = timeout
        self._token: str | None = None

    def _send(self, method: str, url: str, headers: dict[str, str], *, proxy: bool,
              what: str) -> HttpAnswer:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        opener = urllib.request.build_opener() if proxy else NO_PROXY
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return HttpAnswer(response.status, dict(response.headers.items()),
                                  response.read())
        except urllib.error.HTTPError as exc:
            return HttpAnswer(exc.code, dict(exc.headers.items()) if exc.headers else {},
                              exc.read() or b"")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StopFailed("unreachable", f"{what}: cannot reach {url.split('?')[0]} "
                                            f"({reason})") from exc

    def _imds(self, path: str, query: dict[str, str], what: str) -> Any:
        url = f"{self.imds_url}{path}?{urllib.parse.urlencode(query)}"
        answer = None
        for delay in (0.0, *self.RETRY_DELAYS):
            if delay:
                self.sleep(delay)
            answer = self._send("GET", url, {"Metadata": "true"}, proxy=False, what=what)
            if answer.status == 200:
                return answer.json()
            if answer.status not in (404, 410, 429) and answer.status < 500:
                break
        assert answer is not None
        body = answer.json() if isinstance(answer.json(), dict) else {}
        error = str(body.get("error", ""))
        description = str(body.get("error_description", "")).strip()
        said = f"{answer.status} {error}: {description}".rstrip(": ")
        if answer.status == 400 and error == "invalid_request" and "identity not found" \
                in description.lower():
            raise StopFailed("no-identity", f"this VM has no managed identity (IMDS {said}); "
                                            "give it a system-assigned identity with Virtual "
                                            "Machine Contributor on itself")
        if answer.status in (404, 410, 429) or answer.status >= 500:
            raise StopFailed("transient", f"{what}: IMDS {said} after "
                                          f"{1 + len(self.RETRY_DELAYS)} tries")
        raise StopFailed("error", f"{what}: IMDS {said}")

    def token(self) -> str:
        if self._token is None:
            body = self._imds("/metadata/identity/oauth2/token",
                              {"api-version": self.TOKEN_API, "resource": self.RESOURCE},
                              "managed identity token")
            token = body.get("access_token") if isinstance(body, dict) else None
            if not token:
                raise StopFailed("error", "managed identity token: IMDS answered without "
                                          "an access_token")
            self._token = str(token)
        return self._token

    def vm_id(self) -> str:
        body = self._imds("/metadata/instance", {"api-version": self.INSTANCE_API},
                          "instance metadata")
        compute = body.get("compute", {}) if isinstance(body, dict) else {}
        try:
            parts = [compute["subscriptionId"], compute["resourceGroupName"], compute["name"]]
        except KeyError as exc:
            raise StopFailed("error", f"instance metadata lacks compute.{exc.args[0]}") from exc
        sub, group, name = (urllib.parse.quote(str(p), safe="") for p in parts)
        return (f"/subscriptions/{sub}/resourceGroups/{group}/providers/"
                f"Microsoft.Compute/virtualMachines/{name}")

    def _arm(self, method: str, path: str, api: str, what: str) -> HttpAnswer:
        url = f"{self.arm_url}{path}?api-version={api}"
        return self._send(method, url, {"Authorization": f"Bearer {self.token()}"},
                          proxy=True, what=what)

    @staticmethod
    def _arm_error(answer: HttpAnswer) -> tuple[str, str]:
        body = answer.json()
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if not isinstance(error, dict):
            error = {}
        return str(error.get("code", "")), str(error.get("message", "")).strip()

    def deallocate(self) -> str:
        self.token()  # first: a VM without identity needs no other call
        vm = self.vm_id()
        answer = self._arm("POST", f"{vm}/deallocate", self.COMPUTE_API, "deallocate")
        if answer.status in (200, 202):
            return (f"deallocate accepted ({answer.status}) for {vm.rsplit('/', 1)[-1]}"
                    + (": Azure stops the VM and releases it" if answer.status == 202 else ""))
        code, message = self._arm_error(answer)
        said = f"ARM {answer.status} {code}: {message}".rstrip(": ")
        if answer.status == 403:
            raise StopFailed("role-missing", f"the VM's identity may not deallocate it ({said}); "
                                             "grant it Virtual Machine Contributor on the VM")
        if answer.status in (408, 409, 429) or answer.status >= 500:
            raise StopFailed("transient", f"deallocate: {said}")
        raise StopFailed("error", f"deallocate: {said}")

    def can_deallocate(self) -> str:
        """What the identity may do on its VM (Permissions - List For Resource)."""
        self.token()
        vm = self.vm_id()
        path = f"{vm}/providers/Microsoft.Authorization/permissions"
        permissions: list[Any] = []
        answer = self._arm("GET", path, self.AUTHZ_API, "permissions")
        pages = 0
        while True:
            if answer.status != 200:
                code, message = self._arm_error(answer)
                said = f"ARM {answer.status} {code}: {message}".rstrip(": ")
                kind = "role-missing" if answer.status == 403 else (
                    "transient" if answer.status >= 500 or answer.status == 429 else "error")
                raise StopFailed(kind, f"cannot list the identity's permissions on the VM "
                                       f"({said})")
            body = answer.json()
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise StopFailed("error", "permissions: unexpected answer (no 'value' list)")
            permissions += body["value"]
            next_link = body.get("nextLink")
            pages += 1
            if not next_link or pages >= 10:
                break
            answer = self._send("GET", str(next_link),
                                {"Authorization": f"Bearer {self.token()}"}, proxy=True,
                                what="permissions")
        if permits(permissions, self.DEALLOCATE):
            return f"the VM's identity may {self.DEALLOCATE} on {vm}"
        raise StopFailed("role-missing", f"the VM's identity lacks {self.DEALLOCATE} on {vm} "
                                         "(grant it Virtual Machine Contributor on the VM)")


def _action_matches(pattern: str, action: str) -> bool:
    regex = "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"
    return re.match(regex, action, re.I) is not None


def permits(permissions: Iterable[Any], action: str) -> bool:
    """Whether any permission allows `action`: an `actions` pattern matches ("*"
    wildcards, case-insensitive) and no `notActions` pattern of the same entry does."""
    for p in permissions:
        if not isinstance(p, dict):
            continue
        allowed = any(_action_matches(str(a), action) for a in p.get("actions") or [])
        denied = any(_action_matches(str(a), action) for a in p.get("notActions") or [])
        if allowed and not denied:
            return True
    return False


def stop_machine(settings: Settings) -> str:
    if settings.cloud == "azure":
        return Azure(settings.imds_url, settings.arm_url).deallocate()
    return poweroff()


# --- the state file and the log ------------------------------------------------------------------

def load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_stop(settings: Settings, at: dt.datetime, quiet_since: dt.datetime,
                result: str, log: Log) -> None:
    """The last-stop record (workbench_interruption_watch.py's format): this machine
    stopped itself. Written atomically; a record that cannot be written is a warning,
    never a reason to keep the machine up."""
    if not settings.last_stop_file:
        return
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = ""
    record = {"version": 1, "by": "autostop", "kind": "autostop", "at": iso(at),
              "stop_at": None, "reason": f"idle {human_span(settings.window_s)}",
              "key": f"autostop:{iso(at)}", "boot_id": boot,
              "detail": {"quiet_since": iso(quiet_since), "how": settings.stop_how,
                         "result": result}}
    path = Path(settings.last_stop_file)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.warning(f"could not record the stop in {path}: {exc}")


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n")
    os.chmod(tmp, 0o644)  # `workbench-autostop status` reads it as any user
    os.replace(tmp, path)


class Log:
    """Lines for the journal: with the syslog priority prefix systemd reads when stdout
    is the journal ("<4>" warning, "<3>" error), plain on a terminal."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def _emit(self, priority: int, text: str) -> None:
        prefix = f"<{priority}>" if self.journal else ""
        for line in text.splitlines() or [""]:
            self.out.write(prefix + line + "\n")
        self.out.flush()

    def info(self, text: str) -> None:
        self._emit(6, text)

    def warning(self, text: str) -> None:
        self._emit(4, "WARNING: " + text)

    def error(self, text: str) -> None:
        self._emit(3, "ERROR: " + text)


def send_wall(message: str, log: Log) -> None:
    try:
        proc = subprocess.run(["wall", "-n", message], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning(f"wall: {exc}")
        return
    if proc.returncode != 0:
        log.warning(f"wall exited {proc.returncode}: {proc.stdout.strip()[:200]}")


# --- one check ------------------------------------------------------------------------------

def look_now(settings: Settings) -> Look:
    # Connections first: reading Jupyter makes a short connection of our own.
    conns = read_connections([*settings.ssh_ports, *settings.app_ports])
    token = ""
    if settings.jupyter_token_file:
        with contextlib.suppress(OSError):
            token = Path(settings.jupyter_token_file).read_text().strip()
    jupyter = [read_jupyter(url, token) for url in settings.jupyter_urls]
    gpu = read_gpu(settings)
    pids = kernel_pids(a.pid for a in gpu.apps)
    return Look(gpu, conns, jupyter, read_postpone(settings.postpone_file), pids)


def run_check(settings: Settings, state_path: Path, *, dry_run: bool = False,
              look: Callable[[Settings], Look] = look_now,
              stop: Callable[[Settings], str] = stop_machine,
              now: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
              log: Log | None = None, own_process: bool = False) -> int:
    """One check: look, decide, record, warn or stop. 0, or 1 when a stop failed.
    own_process: this process is the check (main), so it may ignore SIGTERM once it
    asked for the stop."""
    log = log or Log()
    started = now()
    state = load_state(state_path)
    decision = decide(look(settings), settings, started, state)
    for line in decision.details:
        log.info(line)
    for line in decision.warnings:
        log.warning(line)
    new = decision.state
    new["last"] = {"at": iso(started), "decision": decision.kind, "summary": decision.summary}
    code = 0
    if decision.kind != "stop":
        log.info("decision: " + decision.summary)
    if decision.kind == "warn":
        assert decision.stop_at is not None and decision.quiet_since is not None
        left = max(0.0, (decision.stop_at - started).total_seconds())
        message = (f"gpu-workbench autostop: this machine has been idle since "
                   f"{hms(decision.quiet_since)} and will {settings.stop_how} at about "
                   f"{hms(decision.stop_at)} (in {human_span(left)}). To keep it running: "
                   f"workbench-autostop postpone 2h"
                   + (f" (or touch {settings.postpone_file})" if settings.postpone_file else ""))
        log.warning(message)
        if settings.wall and not dry_run:
            send_wall(message, log)
        new["warned_for"] = iso(decision.quiet_since)
    if decision.kind == "stop":
        assert decision.quiet_since is not None
        log.info(f"decision: stop: quiet since {hms(decision.quiet_since)}, "
                 f"{human_span((started - decision.quiet_since).total_seconds())} "
                 f"(window {human_span(settings.window_s)}): {settings.stop_how}")
        previous = state.get("stop") or {}
        grace = max(600.0, 2 * settings.interval)
        if (previous.get("ok") and previous.get("at")
                and (started - parse_time(previous["at"])).total_seconds() < grace):
            log.info(f"{settings.stop_how} already requested at "
                     f"{hms(parse_time(previous['at']))} ({previous.get('result', '')}); waiting")
        elif dry_run:
            log.info(f"dry run: would {settings.stop_how} now")
        else:
            # Recorded first: the poweroff stops this process, and a crash must not look
            # like success (ok None is retried).
            new["stop"] = {"at": iso(started), "ok": None, "result": "requested"}
            save_state(state_path, new)
            log.info(f"stopping now: {settings.stop_how}")
            # systemd stops this service on the way down: ignore its SIGTERM, finish the
            # bookkeeping and exit 0, rather than "killed by SIGTERM" (a failed unit) in
            # the journal. Restored if the stop fails.
            before = signal.signal(signal.SIGTERM, signal.SIG_IGN) if own_process else None
            try:
                result = stop(settings)
            except StopFailed as exc:
                if before is not None:
                    signal.signal(signal.SIGTERM, before)
                new["stop"] = {"at": iso(started), "ok": False, "kind": exc.kind,
                               "error": str(exc)}
                new["last"]["decision"] = "stop-failed"
                new["last"]["summary"] = f"could not {settings.stop_how}: {exc}"
                log.error(f"could not {settings.stop_how}: {exc}; idle since kept, "
                          "trying again at the next check")
                code = 1
            else:
                new["stop"] = {"at": iso(started), "ok": True, "result": result}
                new["last"]["summary"] = f"stopped: {result}"
                log.info(result)
                record_stop(settings, started, decision.quiet_since, result, log)
    if dry_run:
        log.info("dry run: state not written")
    else:
        save_state(state_path, new)
    return code


# --- the commands --------------------------------------------------------------------------------

def cmd_status(settings: Settings, state_path: Path) -> int:
    state = load_state(state_path)
    print(f"autostop: {settings.stop_how} after {human_span(settings.window_s)} idle "
          f"({settings.cloud}); a check every {human_span(settings.interval)}, "
          f"warnings {human_span(settings.warn_lead)} ahead")
    last = state.get("last")
    if last:
        print(f"last check {hms(parse_time(last['at']))}: {last.get('summary', '')}")
    else:
        print("no check yet since boot")
    stop = state.get("stop")
    if stop:
        print(f"last stop attempt {hms(parse_time(stop['at']))}: "
              + ("ok: " + stop.get("result", "") if stop.get("ok")
                 else "FAILED: " + stop.get("error", "")))
    p = read_postpone(settings.postpone_file)
    if p.until and p.until > dt.datetime.now(UTC):
        print(f"postponed until {hms(p.until)} (workbench-autostop resume to undo)")
    return 0


def cmd_postpone(settings: Settings, duration: str) -> int:
    if not settings.postpone_file:
        print("workbench-autostop: no postpone_file in the config", file=sys.stderr)
        return 2
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        print(f"workbench-autostop: {exc}", file=sys.stderr)
        return 2
    if seconds > 7 * 86400:
        print("workbench-autostop: at most 7 days", file=sys.stderr)
        return 2
    now = dt.datetime.now(UTC)
    until = now + dt.timedelta(seconds=seconds)
    path = Path(settings.postpone_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"until {iso(until)}\n# workbench-autostop postpone {duration} at {iso(now)}\n")
    os.replace(tmp, path)
    print(f"autostop postponed until {hms(until)} ({human_span(seconds)}); the machine stops "
          f"{human_span(settings.window_s)} of idleness after that at the earliest. "
          "Undo: workbench-autostop resume")
    return 0


def cmd_resume(settings: Settings) -> int:
    if settings.postpone_file:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.postpone_file)
    print("autostop: not postponed")
    return 0


def cmd_probe(settings: Settings, as_json: bool) -> int:
    """Azure: may this VM's identity deallocate the VM? One line (or JSON); 0 yes, 1 no."""
    if settings.cloud != "azure":
        result = {"ok": True, "kind": "", "message": f"{settings.cloud}: stop is a poweroff"}
    else:
        try:
            # A short timeout: the bootstrap waits for this (not an Azure VM: no answer).
            message = Azure(settings.imds_url, settings.arm_url, timeout=5).can_deallocate()
            result = {"ok": True, "kind": "", "message": message}
        except StopFailed as exc:
            result = {"ok": False, "kind": exc.kind, "message": str(exc)}
    print(json.dumps(result) if as_json else
          ("ok: " if result["ok"] else f"cannot deallocate ({result['kind']}): ")
          + str(result["message"]))
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench-autostop",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_PATH)
    parser.add_argument("--state", type=Path, default=STATE_PATH)
    parser.add_argument("--dry-run", action="store_true",
                        help="check: decide and print, change nothing, stop nothing")
    parser.add_argument("--json", action="store_true", help="probe: one JSON line")
    parser.add_argument("command", nargs="?", default="check",
                        choices=("check", "status", "postpone", "resume", "probe"))
    parser.add_argument("duration", nargs="?", help="postpone: 2h, 90m, 1h30m")
    args = parser.parse_args(argv)
    settings = read_settings(args.config)
    if args.command == "status":
        return cmd_status(settings, args.state)
    if args.command == "postpone":
        if not args.duration:
            parser.error("postpone needs a duration (2h, 90m, 1h30m)")
        return cmd_postpone(settings, args.duration)
    if args.command == "resume":
        return cmd_resume(settings)
    if args.command == "probe":
        return cmd_probe(settings, args.json)
    if settings.minutes <= 0:
        print("autostop is off (minutes = 0)")
        return 0
    args.state.parent.mkdir(parents=True, exist_ok=True)
    with open(args.state.with_name(args.state.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one check at a time (the timer, or a user's)
        try:
            return run_check(settings, args.state, dry_run=args.dry_run, own_process=True)
        except Exception as exc:  # recorded, so the bootstrap can say why the unit failed
            state = load_state(args.state)
            state["last"] = {"at": iso(dt.datetime.now(UTC)), "decision": "error",
                             "summary": f"the check crashed: {exc.__class__.__name__}: {exc}"}
            if not args.dry_run:
                save_state(args.state, state)
            raise


if __name__ == "__main__":
    sys.exit(main())
