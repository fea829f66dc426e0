"""Container images: presets, and whether an image can run on a GPU and a driver.

One module for the plan, the stacks and the bootstrap. A preset names an NGC
(or Docker Hub) image with the CUDA version it is built on, the ports it
serves, how JupyterLab starts in it and whether pulling needs NGC
credentials. Any other image reference is accepted as it is; its CUDA needs
are then unknown and only the host's driver check applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.catalog import Gpu


@dataclass(frozen=True)
class Port:
    container: int
    host: int
    purpose: str


@dataclass(frozen=True)
class ImagePreset:
    name: str
    image: str
    cuda: tuple[int, int]  # CUDA toolkit the image is built on
    ports: tuple[Port, ...]
    # {port} is filled in; the token is never on the command line: JupyterLab
    # reads it from the JUPYTER_TOKEN environment variable (JUPYTER_TOKEN_ENV),
    # which the bootstrap passes through an env file. None: no JupyterLab.
    jupyter_command: str | None
    needs_ngc_credentials: bool
    description: str

    @property
    def cuda_text(self) -> str:
        return f"{self.cuda[0]}.{self.cuda[1]}"


# Where JupyterLab (jupyter_server) takes its token from when no --ServerApp.token
# is given: an environment variable, so the token shows neither in `ps` nor in
# `docker inspect`'s command line.
JUPYTER_TOKEN_ENV = "JUPYTER_TOKEN"
JUPYTER = (
    "jupyter lab --ip=0.0.0.0 --port={port} --no-browser --allow-root "
    "--ServerApp.root_dir=/workspace"
)
JUPYTER_PORT = Port(8888, 8890, "JupyterLab")  # the Clara guides publish it on 8890

PRESETS: tuple[ImagePreset, ...] = (
    ImagePreset(
        "clara-train", "nvcr.io/nvidia/clara-train-sdk:v4.1", (11, 4),
        (JUPYTER_PORT, Port(5000, 5000, "Clara AIAA server")),
        JUPYTER, False, "Clara Train SDK v4.1 (MONAI-based), as in the NVIDIA Clara guides",
    ),
    ImagePreset(
        "monai-label", "projectmonai/monailabel:0.8.5", (12, 1),
        (JUPYTER_PORT, Port(8000, 8000, "MONAI Label server")),
        JUPYTER, False, "MONAI Label server (3D Slicer / OHIF clients connect on 8000)",
    ),
    ImagePreset(
        "pytorch", "nvcr.io/nvidia/pytorch:25.10-py3", (13, 0),
        (JUPYTER_PORT,), JUPYTER, False, "NGC PyTorch, current (CUDA 13: Turing and newer)",
    ),
    ImagePreset(
        "pytorch-cuda12", "nvcr.io/nvidia/pytorch:25.01-py3", (12, 8),
        (JUPYTER_PORT,), JUPYTER, False, "NGC PyTorch on CUDA 12 (runs on V100)",
    ),
    ImagePreset(
        "tensorflow2", "nvcr.io/nvidia/tensorflow:25.02-tf2-py3", (12, 8),
        (JUPYTER_PORT,), JUPYTER, False, "NGC TensorFlow 2 (the last NGC TensorFlow release)",
    ),
    ImagePreset(
        "tensorflow1", "nvcr.io/nvidia/tensorflow:23.03-tf1-py3", (12, 1),
        (JUPYTER_PORT,), JUPYTER, False, "NGC TensorFlow 1.15 (the last TF1 release)",
    ),
)

# The oldest GPU each CUDA major still compiles for (compute capability).
# CUDA 13 dropped Maxwell, Pascal and Volta; CUDA 12 dropped Kepler.
MIN_COMPUTE_CAPABILITY: dict[int, tuple[int, int]] = {11: (3, 5), 12: (5, 0), 13: (7, 5)}
# The newest GPU a CUDA version knows natively; newer ones need PTX JIT.
NATIVE_UP_TO: dict[tuple[int, int], tuple[int, int]] = {(11, 4): (8, 6), (11, 8): (9, 0)}
# The oldest Linux driver each CUDA major needs (release notes, table 3).
# Kept as the release notes write them: "580.65.06", not "580.65.6".
MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def find_preset(name_or_image: str) -> ImagePreset | None:
    """A preset by its name, or the preset whose image reference this is."""
    for preset in PRESETS:
        if name_or_image in (preset.name, preset.image):
            return preset
    return None


class Incompatible(ValueError):
    """The image cannot run on this GPU or driver; str() says why and what to do."""


def check_gpu(preset: ImagePreset, gpu: Gpu, *, gpu_label: str) -> list[str]:
    """Raise Incompatible when the image cannot run on the GPU; return warnings."""
    major = preset.cuda[0]
    needed = MIN_COMPUTE_CAPABILITY.get(major)
    if needed is not None and gpu.compute_capability < needed:
        older = [p for p in PRESETS if p.name.split("-")[0] == preset.name.split("-")[0]
                 and MIN_COMPUTE_CAPABILITY.get(p.cuda[0], (0, 0)) <= gpu.compute_capability]
        fix = f"use {older[0].name} ({older[0].image})" if older else "use an image on CUDA 12"
        raise Incompatible(
            f"{preset.image} needs CUDA {major}, which does not run on the {gpu.model} "
            f"(compute capability {_cc(gpu.compute_capability)}; CUDA {major} needs "
            f"{_cc(needed)} or newer); {fix}, or a newer GPU than {gpu_label}"
        )
    warnings = []
    native = NATIVE_UP_TO.get(preset.cuda)
    if native is not None and gpu.compute_capability > native:
        warnings.append(
            f"{preset.image} (CUDA {preset.cuda_text}) predates the {gpu.model} (compute "
            f"capability {_cc(gpu.compute_capability)}): it runs only through PTX JIT, "
            "with a slow first start, if at all"
        )
    return warnings


def check_driver(preset: ImagePreset, driver_version: str) -> None:
    """Raise Incompatible when the host's NVIDIA driver is too old for the image."""
    need = MIN_DRIVER.get(preset.cuda[0])
    if need is not None and _version(driver_version) < _version(need):
        raise Incompatible(
            f"{preset.image} needs CUDA {preset.cuda_text}, i.e. NVIDIA driver "
            f"{need} or newer; this host has {driver_version.strip()}: "
            "update the driver or pick an image on an older CUDA"
        )


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"
