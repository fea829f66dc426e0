"""/etc/docker/daemon.json: parse, merge our keys in, render. Pure, no I/O.

The rule is "keep everything we did not come for": other keys, their order
and their values survive a merge unchanged.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

DAEMON_JSON = "/etc/docker/daemon.json"
# The runtime's name; where it lives is the host's to say (`command -v` on the host:
# /usr/bin from NVIDIA's packages, elsewhere from a tarball or another distribution).
NVIDIA_RUNTIME_NAME = "nvidia-container-runtime"


class DaemonJsonError(ValueError):
    """daemon.json cannot be used as it is; the message names the file and the problem."""


def parse(raw: bytes | None, path: str = DAEMON_JSON) -> dict[str, Any]:
    """A missing or empty (whitespace only) file is {}, as dockerd treats it."""
    if raw is None or not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DaemonJsonError(f"{path}: not UTF-8 text ({exc}); left untouched") from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaemonJsonError(
            f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            "left untouched, fix it and run again"
        ) from exc
    if not isinstance(config, dict):
        raise DaemonJsonError(
            f"{path}: top level is a JSON {type(config).__name__}, dockerd needs an object; "
            "left untouched"
        )
    runtimes = config.get("runtimes")
    if runtimes is not None and not isinstance(runtimes, dict):
        raise DaemonJsonError(f'{path}: "runtimes" is not an object; left untouched')
    return config


def has_nvidia_runtime(config: dict[str, Any]) -> bool:
    """Our entry, or the one `nvidia-ctk runtime configure --runtime=docker` writes: the
    bare name "nvidia-container-runtime" (dockerd looks it up in PATH) with "args": []
    (NVIDIA/nvidia-container-toolkit cmd/nvidia-ctk/runtime/configure/configure.go
    @d34b3046, read 2026-11-23)."""
    entry = (config.get("runtimes") or {}).get("nvidia")
    if not isinstance(entry, dict):
        return False
    path = entry.get("path")
    return isinstance(path, str) and posixpath.basename(path) == NVIDIA_RUNTIME_NAME


def with_nvidia_runtime(config: dict[str, Any], path: str) -> dict[str, Any]:
    """config with runtimes.nvidia set to `path` (where the host has the runtime); the
    same dict if an entry is already there."""
    if has_nvidia_runtime(config):
        return config
    merged = dict(config)
    runtimes = dict(merged.get("runtimes") or {})
    runtimes["nvidia"] = {"path": path, "runtimeArgs": []}
    merged["runtimes"] = runtimes
    return merged


def with_data_root(config: dict[str, Any], data_root: str) -> dict[str, Any]:
    if config.get("data-root") == data_root:
        return config
    merged = dict(config)
    merged["data-root"] = data_root
    # "graph" is the pre-17.05 name of data-root; dockerd refuses both at once.
    merged.pop("graph", None)
    return merged


def render(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2) + "\n").encode()
