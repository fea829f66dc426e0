"""Why the GPU is not visible: turn `nvidia-smi` and `docker run --gpus` output into advice.

Pure logic, fed by the check step's one remote command.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuProbe:
    host_smi_present: bool
    host_smi_rc: int | None  # None: not run
    host_smi_output: str
    container_rc: int | None
    container_output: str
    runtimes: list[str]
    toolkit_bins: list[str]  # nvidia-ctk, nvidia-container-runtime-hook, ... found on the host
    driver_loaded: bool  # /proc/driver/nvidia/version exists


def diagnose(p: GpuProbe) -> list[str]:
    """Problems found, most fundamental first; [] when host and container both see a GPU."""
    problems: list[str] = []
    if not p.host_smi_present:
        if p.driver_loaded:
            problems.append("host: NVIDIA kernel driver is loaded but nvidia-smi is missing "
                            "(install the matching nvidia-utils package)")
        else:
            problems.append("host: no NVIDIA driver (nvidia-smi not found, no "
                            "/proc/driver/nvidia): install the driver, or use a GPU image "
                            "that ships it")
    elif p.host_smi_rc != 0:
        first = _first_line(p.host_smi_output)
        problems.append(f"host: nvidia-smi failed: {first} (driver installed but not "
                        "talking to the GPU: reboot after a driver install, or check that "
                        "the instance type has a GPU)")
    if "nvidia" not in p.runtimes:
        problems.append("docker: nvidia runtime not registered with dockerd (run the "
                        "nvidia-runtime step)")
    if p.container_rc not in (None, 0):
        out = p.container_output
        if 'could not select device driver' in out:
            problems.append("container: dockerd cannot give GPUs to containers (--gpus): "
                            "NVIDIA Container Toolkit missing (install nvidia-container-toolkit,"
                            " then restart docker)")
        elif "unknown or invalid runtime name" in out or "Unknown runtime" in out:
            problems.append("container: the nvidia runtime is not known to dockerd")
        elif "nvidia-container-cli" in out:
            problems.append(f"container: NVIDIA Container Toolkit could not set up the GPU: "
                            f"{_first_line(out, 'nvidia-container-cli')}")
        elif "executable file not found" in out or "not found" in out:
            problems.append("container: nvidia-smi not found inside the container (the "
                            "toolkit mounts it from the host driver: driver or toolkit missing)")
        elif "Unable to find image" in out or "pull access denied" in out:
            problems.append(f"container: image not available: {_first_line(out)}")
        else:
            problems.append(f"container: docker run --gpus all failed: {_first_line(out)}")
    return problems


def _first_line(text: str, containing: str = "") -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and containing in line:
            return line[:200]
    return "(no output)"
