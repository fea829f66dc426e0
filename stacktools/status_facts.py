"""What scripts/status reads on a workstation: facts, gathered in one command.

The same Fact type as the bootstrap's steps (bootstrap/facts.py), so the whole
reading is one remote sh script and one SSH round trip per host. The
container fact is the container step's own: status and bootstrap read the
container the same way.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import json
from dataclasses import dataclass
from typing import Any

from bootstrap.facts import Fact
from bootstrap.shell import Sh, sh
from bootstrap.steps import autostop as autostop_step
from bootstrap.steps.container import CONTAINER

# Where the idle check keeps its state (bootstrap/onhost/workbench_idle_check.py); it
# lives under /run, so it starts afresh at each boot, as "this boot" does here.
AUTOSTOP_STATE = "/run/gpu-workbench/autostop-state.json"
AUTOSTOP_TIMER = "workbench-idle-check.timer"
# Who stopped the machine last (the interruption watcher or the idle check wrote it,
# bootstrap/onhost/workbench_interruption_watch.py); under /var/lib: it outlives a boot.
LAST_STOP_RECORD = "/var/lib/gpu-workbench/last-stop.json"
RECORD_LIMIT = 65536  # the record is a few hundred bytes; never read more


@dataclass(frozen=True)
class HostClock:
    uptime_s: float | None
    now: float | None  # the host's clock (epoch seconds): the idle check's times are its


def _parse_clock(text: str) -> HostClock:
    lines = [*text.splitlines(), "", ""]
    try:
        uptime: float | None = float(lines[0].split()[0])
    except (IndexError, ValueError):
        uptime = None
    try:
        now: float | None = float(lines[1].strip())
    except ValueError:
        now = None
    return HostClock(uptime, now)


CLOCK: Fact[HostClock] = Fact("clock", lambda _: Sh("cat /proc/uptime; date +%s"), _parse_clock)


@dataclass(frozen=True)
class GpuUse:
    name: str
    utilization_pct: int | None
    memory_used_mib: int | None
    memory_total_mib: int | None


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_gpu_use(text: str) -> list[GpuUse] | str:
    """nvidia-smi's CSV, one line per GPU; a string says why there is none."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines == ["absent"]:
        return "no nvidia-smi"
    if not lines or not lines[-1].startswith("rc="):
        return "nvidia-smi printed nothing"
    rc, body = lines[-1][3:], lines[:-1]
    if rc != "0":
        first = body[0].strip() if body else ""
        return f"nvidia-smi failed (exit {rc})" + (f": {first}" if first else "")
    gpus = []
    for line in body:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            return f"nvidia-smi printed {line.strip()!r}"
        gpus.append(GpuUse(fields[0], _int_or_none(fields[1]), _int_or_none(fields[2]),
                           _int_or_none(fields[3])))
    return gpus or "nvidia-smi lists no GPU"


GPU_USE: Fact[list[GpuUse] | str] = Fact(
    "gpu_use",
    # One instant; the idle check samples over its interval, status only glances.
    lambda _: Sh("if command -v nvidia-smi >/dev/null 2>&1; then\n"
                 "  wb_g=$(timeout 20 nvidia-smi --query-gpu=name,utilization.gpu,memory.used,"
                 "memory.total --format=csv,noheader,nounits 2>&1); wb_rc=$?\n"
                 '  echo "$wb_g" | head -n 16; echo "rc=$wb_rc"\n'
                 "else echo absent; fi"),
    parse_gpu_use)


@dataclass(frozen=True)
class AutostopLook:
    installed: bool  # the idle check's config is there
    timer: str  # `systemctl is-active` of the timer, or "no systemd"
    minutes: float | None  # the idle window
    state: dict[str, Any] | None  # the check's state this boot, None before its first check


def _b64_text(value: str) -> str | None:
    value = value.strip()
    if value in ("", "absent"):
        return None
    try:
        return base64.b64decode(value, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        return None


def parse_autostop(text: str) -> AutostopLook:
    lines = [*text.splitlines(), "", "", ""]
    config_text, state_text, timer = _b64_text(lines[0]), _b64_text(lines[1]), lines[2].strip()
    minutes = None
    if config_text is not None:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(config_text)
            minutes = parser.getfloat("autostop", "minutes", fallback=None)
        except (configparser.Error, ValueError):
            minutes = None
    state = None
    if state_text is not None:
        try:
            loaded = json.loads(state_text)
            state = loaded if isinstance(loaded, dict) else None
        except json.JSONDecodeError:
            state = None
    return AutostopLook(config_text is not None, timer or "unknown", minutes, state)


AUTOSTOP: Fact[AutostopLook] = Fact(
    "autostop_look",
    lambda _: sh("for wb_f in {config} {state}; do\n"
                 '  if [ -r "$wb_f" ]; then base64 -w0 < "$wb_f"; echo; else echo absent; fi\n'
                 "done\n"
                 "if command -v systemctl >/dev/null 2>&1; then\n"
                 "  systemctl is-active {timer} 2>/dev/null || true\n"
                 "else echo 'no systemd'; fi",
                 config=autostop_step.CONFIG, state=AUTOSTOP_STATE, timer=AUTOSTOP_TIMER),
    parse_autostop)


@dataclass(frozen=True)
class DataMount:
    source: str
    fstype: str
    size: str
    use_pct: str


def parse_data_mount(text: str) -> DataMount | None:
    """findmnt's JSON for the data mount point; None when nothing is mounted there."""
    text = text.strip()
    if text in ("", "absent"):
        return None
    try:
        found = json.loads(text)["filesystems"][0]
        return DataMount(str(found.get("source")), str(found.get("fstype")),
                         str(found.get("size")), str(found.get("use%")))
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        return None


DATA_MOUNT: Fact[DataMount | None] = Fact(
    "data_mount",
    lambda o: sh("findmnt -J -o SOURCE,FSTYPE,SIZE,USE% --mountpoint {mount} 2>/dev/null "
                 "|| echo absent", mount=o.data_mount),
    parse_data_mount)


@dataclass(frozen=True)
class LastStop:
    record: dict[str, Any] | None  # None: nothing recorded (or not readable: error says)
    boot_id: str  # this boot's: a record with the same was written in this boot
    error: str = ""


def parse_last_stop(text: str) -> LastStop:
    lines = [*text.splitlines(), "", ""]
    first, boot = lines[0].strip(), lines[1].strip()
    if first == "absent":
        return LastStop(None, boot)
    if first == "unreadable":
        return LastStop(None, boot, f"{LAST_STOP_RECORD} is not readable by this user")
    decoded = _b64_text(first)
    try:
        loaded = json.loads(decoded) if decoded is not None else None
    except json.JSONDecodeError:
        loaded = None
    if not isinstance(loaded, dict):
        return LastStop(None, boot, f"{LAST_STOP_RECORD} holds no record (not a JSON object)")
    return LastStop(loaded, boot)


LAST_STOP: Fact[LastStop] = Fact(
    "last_stop",
    lambda _: sh("if [ -r {record} ]; then head -c {limit} {record} | base64 -w0; echo\n"
                 "elif [ -e {record} ]; then echo unreadable; else echo absent; fi\n"
                 "cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo",
                 record=LAST_STOP_RECORD, limit=RECORD_LIMIT),
    parse_last_stop)


STATUS_FACTS: tuple[Fact[Any], ...] = (CLOCK, GPU_USE, CONTAINER, AUTOSTOP, LAST_STOP,
                                       DATA_MOUNT)
