#!/usr/bin/python3
"""Stand-in for `nvidia-smi` on the systemd test hosts (there is no GPU on the test box).

Installed as /usr/bin/nvidia-smi on every host of tests/support/systemd_host.py.
It behaves as NVIDIA's nvidia-smi manual documents the real program ("nvidia-smi -
NVIDIA System Management Interface program", https://docs.nvidia.com/deploy/nvidia-smi/
and `nvidia-smi --help-query-gpu`), for the subset the workbench reads:

- `-L` / `--list-gpus`: one line per GPU, `GPU 0: NAME (UUID: GPU-...)`.
- `--query-gpu=FIELD[,FIELD...] --format=csv[,noheader][,nounits]`: one CSV row per
  GPU, fields joined by ", ". The header names the queried fields with the unit in
  brackets (`utilization.gpu [%]`, `memory.used [MiB]`); `noheader` drops that line,
  `nounits` drops the unit from the values only (the header keeps it, as the real
  program does). A field NVIDIA documents but the readings lack prints `[N/A]`; a
  field NVIDIA does not document is an error (exit 2, "A supplied argument or flag
  is invalid").
- `--query-compute-apps=pid,process_name,used_memory --format=csv...`: one row per
  process; `used_memory` is an alias whose header reads `used_gpu_memory [MiB]`.
  No processes: the header alone (or nothing with `noheader`).
- `-i` / `--id=INDEX[,INDEX]`: only those GPUs (and their processes).
- No arguments: a short summary with the driver version and each GPU (the real
  table is wider; nothing in the workbench parses it, only its exit status).

The readings come from a JSON file the test writes (default
/etc/gpu-workbench-test/gpus.json, or $NVIDIA_SMI_STANDIN_READINGS):

    {"gpus": [{"index": 0, "name": "NVIDIA A10G", "uuid": "GPU-...",
               "driver_version": "535.104.05", "compute_cap": "8.6",
               "utilization.gpu": 0, "memory.used": 0, "memory.total": 23028}],
     "compute_apps": [{"gpu_uuid": "GPU-...", "pid": 1234,
                       "process_name": "python", "used_memory": 512}],
     "broken": false}

`"broken": true` (or no readings file at all, as on a VM whose driver is not
installed) prints NVIDIA's "NVIDIA-SMI has failed because it couldn't communicate
with the NVIDIA driver..." and exits 9: the manual's RETURN VALUE section lists
"Return code 9 - NVIDIA driver is not loaded". (The message and the code are
each documented; that the real binary pairs them was not observed here, no GPU.)

Standard library only: it runs under the host's /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

READINGS_PATH = os.environ.get("NVIDIA_SMI_STANDIN_READINGS",
                               "/etc/gpu-workbench-test/gpus.json")

# Return codes from the manual's RETURN VALUE section.
EXIT_INVALID_ARGUMENT = 2
EXIT_NOT_FOUND = 6
EXIT_DRIVER_NOT_LOADED = 9

DRIVER_FAILURE_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)

# Fields of --help-query-gpu the stand-in knows, with the unit the real program
# prints for them (None: no unit). Others NVIDIA documents print [N/A] if absent.
GPU_FIELD_UNITS: dict[str, str | None] = {
    "index": None,
    "name": None,
    "uuid": None,
    "serial": None,
    "pci.bus_id": None,
    "driver_version": None,
    "vbios_version": None,
    "compute_cap": None,
    "count": None,
    "persistence_mode": None,
    "pstate": None,
    "temperature.gpu": None,
    "fan.speed": "%",
    "utilization.gpu": "%",
    "utilization.memory": "%",
    "memory.total": "MiB",
    "memory.used": "MiB",
    "memory.free": "MiB",
    "memory.reserved": "MiB",
    "power.draw": "W",
    "power.limit": "W",
    "clocks.current.sm": "MHz",
    "clocks.current.memory": "MHz",
    "timestamp": None,
}
# --query-gpu accepts a few documented aliases; the header shows the name as given.
GPU_FIELD_ALIASES = {
    "gpu_name": "name",
    "gpu_uuid": "uuid",
    "gpu_serial": "serial",
    "gpu_bus_id": "pci.bus_id",
}

# --help-query-compute-apps: the header name the real program prints and the unit.
APP_FIELDS: dict[str, tuple[str, str | None]] = {
    "timestamp": ("timestamp", None),
    "gpu_name": ("gpu_name", None),
    "gpu_bus_id": ("gpu_bus_id", None),
    "gpu_serial": ("gpu_serial", None),
    "gpu_uuid": ("gpu_uuid", None),
    "pid": ("pid", None),
    "process_name": ("process_name", None),
    "name": ("process_name", None),
    "used_gpu_memory": ("used_gpu_memory", "MiB"),
    "used_memory": ("used_gpu_memory", "MiB"),
}


class UsageError(Exception):
    """A supplied argument or flag is invalid (exit 2)."""


class NotFound(Exception):
    """A query to find an object was unsuccessful (exit 6): an -i id no GPU has."""


def load_readings(path: str = READINGS_PATH) -> dict[str, Any] | None:
    """The readings the test wrote, or None when the 'driver' is not there."""
    try:
        with open(path) as fh:
            data: dict[str, Any] = json.load(fh)
    except FileNotFoundError:
        return None
    if data.get("broken"):
        return None
    return data


def _format_value(value: Any, unit: str | None, with_units: bool) -> str:
    if value is None:
        return "[N/A]"
    text = str(value)
    return f"{text} {unit}" if unit and with_units else text


def _gpu_value(gpu: dict[str, Any], field: str, gpus: list[dict[str, Any]]) -> Any:
    if field == "count":
        return len(gpus)
    if field == "memory.free" and field not in gpu and "memory.total" in gpu:
        return int(gpu["memory.total"]) - int(gpu.get("memory.used", 0))
    return gpu.get(field)


def _selected(gpus: list[dict[str, Any]], ids: list[str] | None) -> list[dict[str, Any]]:
    if ids is None:
        return gpus
    chosen = []
    for wanted in ids:
        match = [g for g in gpus if str(g.get("index")) == wanted or g.get("uuid") == wanted]
        if not match:
            raise NotFound("No devices were found")
        chosen.extend(match)
    return chosen


def query_gpu(data: dict[str, Any], fields: list[str], fmt: set[str],
              ids: list[str] | None) -> list[str]:
    gpus = _selected(list(data.get("gpus", [])), ids)
    resolved = []
    for field in fields:
        name = GPU_FIELD_ALIASES.get(field, field)
        if name not in GPU_FIELD_UNITS:
            raise UsageError(f'Field "{field}" is not a valid field to query.')
        resolved.append((field, name, GPU_FIELD_UNITS[name]))
    lines = []
    if "noheader" not in fmt:
        lines.append(", ".join(f"{f} [{u}]" if u else f for f, _, u in resolved))
    with_units = "nounits" not in fmt
    for gpu in gpus:
        lines.append(", ".join(_format_value(_gpu_value(gpu, n, gpus), u, with_units)
                               for _, n, u in resolved))
    return lines


def query_compute_apps(data: dict[str, Any], fields: list[str], fmt: set[str],
                       ids: list[str] | None) -> list[str]:
    gpus = _selected(list(data.get("gpus", [])), ids)
    by_uuid = {g.get("uuid"): g for g in gpus}
    resolved = []
    for field in fields:
        if field not in APP_FIELDS:
            raise UsageError(f'Field "{field}" is not a valid field to query.')
        header, unit = APP_FIELDS[field]
        resolved.append((field, header, unit))
    lines = []
    if "noheader" not in fmt:
        lines.append(", ".join(f"{h} [{u}]" if u else h for _, h, u in resolved))
    with_units = "nounits" not in fmt
    for app in data.get("compute_apps", []):
        # A process belongs to a GPU by uuid; one without a uuid runs on the first GPU.
        gpu = by_uuid.get(app.get("gpu_uuid")) if app.get("gpu_uuid") else next(iter(gpus), None)
        if gpu is None:  # its GPU is not among those selected with -i
            continue
        values = []
        for field, header, unit in resolved:
            if header == "used_gpu_memory":
                value = app.get("used_memory", app.get("used_gpu_memory"))
            elif header == "process_name":
                value = app.get("process_name")
            elif field.startswith("gpu_"):
                value = gpu.get({"gpu_name": "name", "gpu_uuid": "uuid",
                                 "gpu_serial": "serial", "gpu_bus_id": "pci.bus_id"}[field])
            else:
                value = app.get(field)
            values.append(_format_value(value, unit, with_units))
        lines.append(", ".join(values))
    return lines


def list_gpus(data: dict[str, Any], ids: list[str] | None) -> list[str]:
    return [f"GPU {g.get('index')}: {g.get('name')} (UUID: {g.get('uuid')})"
            for g in _selected(list(data.get("gpus", [])), ids)]


def summary(data: dict[str, Any]) -> list[str]:
    gpus = data.get("gpus", [])
    driver = gpus[0].get("driver_version", "[N/A]") if gpus else "[N/A]"
    lines = [f"NVIDIA-SMI {driver}    Driver Version: {driver}"]
    for g in gpus:
        lines.append(f"GPU {g.get('index')}  {g.get('name')}  "
                     f"{g.get('memory.used', 0)}MiB / {g.get('memory.total', 0)}MiB  "
                     f"{g.get('utilization.gpu', 0)}%")
    apps = data.get("compute_apps", [])
    lines.append("Processes: " + (", ".join(f"{a.get('pid')} {a.get('process_name')}"
                                             for a in apps) or "No running processes found"))
    return lines


def _option_value(args: list[str], i: int, flag: str) -> tuple[str, int]:
    """The value of `--flag=VALUE` or `--flag VALUE` / `-f VALUE`; returns (value, next i)."""
    arg = args[i]
    if "=" in arg:
        return arg.split("=", 1)[1], i + 1
    if i + 1 >= len(args):
        raise UsageError(f"Option {flag} requires a value.")
    return args[i + 1], i + 2


def main(argv: list[str]) -> int:
    gpu_fields: list[str] | None = None
    app_fields: list[str] | None = None
    fmt: set[str] | None = None
    ids: list[str] | None = None
    want_list = False
    try:
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg in ("-L", "--list-gpus"):
                want_list = True
                i += 1
            elif arg.startswith("--query-gpu"):
                value, i = _option_value(argv, i, "--query-gpu")
                gpu_fields = [f.strip() for f in value.split(",") if f.strip()]
            elif arg.startswith("--query-compute-apps"):
                value, i = _option_value(argv, i, "--query-compute-apps")
                app_fields = [f.strip() for f in value.split(",") if f.strip()]
            elif arg.startswith("--format"):
                value, i = _option_value(argv, i, "--format")
                fmt = {f.strip() for f in value.split(",")}
            elif arg in ("-i", "--id") or arg.startswith("--id="):
                value, i = _option_value(argv, i, "--id")
                ids = [x.strip() for x in value.split(",") if x.strip()]
            else:
                raise UsageError(f"Invalid combination of input arguments: {arg!r}")
        if (gpu_fields is not None or app_fields is not None) and (
                fmt is None or "csv" not in fmt):
            # The manual: csv is MANDATORY in --format for the query options.
            raise UsageError("Format must be specified with --format=csv[,noheader][,nounits]")
        if fmt is not None and not fmt <= {"csv", "noheader", "nounits"}:
            raise UsageError(f"Invalid format: {','.join(sorted(fmt))}")
    except UsageError as exc:
        print(exc)
        print("Please run 'nvidia-smi -h' for help.")
        return EXIT_INVALID_ARGUMENT

    data = load_readings()
    if data is None:
        print(DRIVER_FAILURE_MESSAGE)
        return EXIT_DRIVER_NOT_LOADED
    try:
        if gpu_fields is not None:
            lines = query_gpu(data, gpu_fields, fmt or set(), ids)
        elif app_fields is not None:
            lines = query_compute_apps(data, app_fields, fmt or set(), ids)
        elif want_list:
            lines = list_gpus(data, ids)
        else:
            lines = summary(data)
    except UsageError as exc:
        print(exc)
        return EXIT_INVALID_ARGUMENT
    except NotFound as exc:
        print(exc)
        return EXIT_NOT_FOUND
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
