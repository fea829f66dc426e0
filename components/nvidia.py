"""NVIDIA's facts: the GPUs, which driver branch drives which GPU, and which CUDA
runs on which driver and GPU. Each rule names its source.

Used by the catalog (does this OS image's driver drive this GPU?), the image
presets (can this container's CUDA run here?) and the bootstrap's compat step
(the same rules against what nvidia-smi reports on the host).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.sources import Source

CUDA_GPUS = Source(
    "https://developer.nvidia.com/cuda-gpus and https://developer.nvidia.com/cuda-legacy-gpus",
    "compute capability: H100 9.0; L4, L40S 8.9; A10 8.6; A100 8.0 (NVIDIA forum answer); "
    "T4 7.5; V100 7.0 (legacy page)")
A10G_CC = Source(
    "huggingface.co/RajBhope/gpu-runtime-predictor gpu_catalog.json",
    "A10G (AWS G5's GA102 variant of the A10) has compute capability 8.6; NVIDIA does not "
    "list the A10G", confidence="medium")
DRIVER_MATRIX = Source(
    "https://docs.nvidia.com/datacenter/tesla/drivers/cuda-toolkit-driver-and-architecture-matrix.html",
    "Maxwell, Pascal and Volta: last driver branch R580, last toolkit CUDA 12.x; Turing and "
    "newer ongoing (v580 doc set, last updated 2025-08-04)")
DRIVER_595_IGNORES_VOLTA = Source(
    "https://github.com/NixOS/nixos-hardware/issues/1880",
    "595.71.05: 'GPU ... is supported through the NVIDIA 580.xx Legacy drivers ... will "
    "ignore this GPU' (2026-05-17)")
OPEN_MODULES = Source(
    "NVIDIA/open-gpu-kernel-modules README.md @015742d3",
    "'The NVIDIA open kernel modules can be used on any Turing or later GPU' (they need "
    "the GSP, which older GPUs lack; issue #76, 2022-05-12)")
CUDA_DRIVER_TABLE = Source(
    "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html (Table 3) and "
    "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html",
    "minimum Linux driver: CUDA 11.x 450.80.02, 12.x 525.60.13, 13.x 580.65.06")
CUDA13_DROPS_VOLTA = Source(
    "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html (2.6.2 Deprecated "
    "Architectures)",
    "offline compilation and library support for Maxwell, Pascal and Volta removed in CUDA "
    "13.0: it needs compute capability 7.5; CUDA 12 needs 5.0 (cuFFT deprecated-functionality)")
FIRST_TOOLKIT = Source(
    "https://forums.developer.nvidia.com/t/minimum-required-cuda-version-by-gpu/276955/2",
    "first CUDA toolkit per compute capability: 8.0 -> 11.0, 8.6 -> 11.1, 8.9 and 9.0 -> 11.8")


@dataclass(frozen=True)
class Gpu:
    model: str  # marketing name, e.g. "NVIDIA V100 16GB"
    architecture: str  # Volta, Turing, Ampere, Ada Lovelace, Hopper
    compute_capability: tuple[int, int]
    memory_gib: int
    source: Source = CUDA_GPUS


V100 = Gpu("NVIDIA V100 16GB", "Volta", (7, 0), 16)
T4 = Gpu("NVIDIA T4 16GB", "Turing", (7, 5), 16)
A10G = Gpu("NVIDIA A10G 24GB", "Ampere", (8, 6), 24, A10G_CC)
A10 = Gpu("NVIDIA A10 24GB", "Ampere", (8, 6), 24)
L4 = Gpu("NVIDIA L4 24GB", "Ada Lovelace", (8, 9), 24)
L40S = Gpu("NVIDIA L40S 48GB", "Ada Lovelace", (8, 9), 48)
A100_40 = Gpu("NVIDIA A100 40GB", "Ampere", (8, 0), 40)
A100_80 = Gpu("NVIDIA A100 80GB", "Ampere", (8, 0), 80)
H100_80 = Gpu("NVIDIA H100 80GB", "Hopper", (9, 0), 80)
H100_NVL = Gpu("NVIDIA H100 NVL 94GB", "Hopper", (9, 0), 94)

# The last driver branch that drives GPUs below Turing (7.5): Maxwell, Pascal, Volta.
LEGACY_LAST_BRANCH = 580
TURING = (7, 5)
# Oldest Linux driver per CUDA major (CUDA_DRIVER_TABLE), as NVIDIA writes them.
CUDA_MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# Oldest GPU each CUDA major compiles for (CUDA13_DROPS_VOLTA; CUDA 11 kept Kepler 3.5).
CUDA_MIN_CC: dict[int, tuple[int, int]] = {11: (3, 5), 12: (5, 0), 13: (7, 5)}


def architecture_of(capability: tuple[int, int]) -> str:
    """The architecture name of a compute capability (CUDA_GPUS), for messages."""
    names = [((9, 0), "Hopper"), ((8, 9), "Ada Lovelace"), ((8, 0), "Ampere"),
             ((7, 5), "Turing"), ((7, 0), "Volta"), ((6, 0), "Pascal"), ((5, 0), "Maxwell")]
    if capability >= (10, 0):
        return "Blackwell"
    return next((name for floor, name in names if capability >= floor), "Kepler or older")


def cc_text(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def newest_native_cc(cuda: tuple[int, int]) -> tuple[int, int]:
    """The newest GPU a CUDA toolkit compiles code for (FIRST_TOOLKIT); newer ones need
    PTX the image may not carry, and NGC entrypoints refuse them."""
    if cuda < (11, 1):
        return (8, 0)
    if cuda < (11, 8):
        return (8, 6)
    if cuda < (12, 8):
        return (9, 0)
    return (12, 0)  # CUDA 12.8 added Blackwell


def driver_cannot_drive(branch: int | None, kernel_modules: str, gpu: Gpu) -> str | None:
    """Why a driver of this branch and kernel-module flavour cannot drive the GPU, or None.

    kernel_modules is "open", "proprietary" or "unknown"; branch None is unknown.
    """
    if gpu.compute_capability >= TURING:
        return None
    if branch is not None and branch > LEGACY_LAST_BRANCH:
        return (f"driver branch R{branch} does not drive the {gpu.model} ({gpu.architecture}): "
                f"R{LEGACY_LAST_BRANCH} is the last branch for {gpu.architecture}")
    if kernel_modules == "open":
        return (f"NVIDIA's open kernel modules drive Turing (7.5) and newer only; the "
                f"{gpu.model} is {gpu.architecture} ({cc_text(gpu.compute_capability)})")
    return None


def cuda_cannot_run_on_gpu(cuda: tuple[int, int], gpu: Gpu) -> str | None:
    """Why code built with this CUDA cannot run on the GPU, or None."""
    needed = CUDA_MIN_CC.get(cuda[0])
    if needed is not None and gpu.compute_capability < needed:
        return (f"CUDA {cuda[0]} needs compute capability {cc_text(needed)} or newer; the "
                f"{gpu.model} is {cc_text(gpu.compute_capability)}")
    newest = newest_native_cc(cuda)
    if gpu.compute_capability > newest:
        return (f"CUDA {cuda[0]}.{cuda[1]} predates the {gpu.model} "
                f"({gpu.architecture}, {cc_text(gpu.compute_capability)}): it builds code for "
                f"GPUs up to {cc_text(newest)} only")
    return None


def driver_too_old(cuda_major: int, driver_version: str) -> str | None:
    """Why a driver is too old for containers of this CUDA major, or None."""
    need = CUDA_MIN_DRIVER.get(cuda_major)
    if need is not None and version_tuple(driver_version) < version_tuple(need):
        return f"CUDA {cuda_major} needs NVIDIA driver {need} or newer, not {driver_version}"
    return None
