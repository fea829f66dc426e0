"""Container images: presets, and whether an image can run on a GPU and a driver.

One module for the plan, the stacks and the bootstrap. A preset names an NGC
(or Docker Hub) image with the CUDA version it is built on, the ports it
serves, what starts in it (only what the image really contains) and the
sources for all of that. Any other image reference is accepted as it is; its
CUDA needs are then unknown and only the host's driver check applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from components import nvidia
from components.nvidia import Gpu
from components.sources import Source


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
    # which the bootstrap passes through an env file. None: the image has no JupyterLab.
    jupyter_command: str | None
    needs_ngc_credentials: bool
    description: str
    sources: tuple[Source, ...]
    # Started in the background before JupyterLab (Clara's AIAA server), or the
    # container's one foreground process where there is no JupyterLab (MONAI Label).
    background: str | None = None
    server_command: str | None = None
    # GPUs the image's own build or entrypoint may refuse although its CUDA could
    # run there: (oldest compute capability known to work, what the source says).
    unverified_below: tuple[tuple[int, int], str] | None = None

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

CLARA_EXAMPLES = Source(
    "NVIDIA/clara-train-examples PyTorch/NoteBooks/scripts/docker-compose.yml, startDocker.sh "
    "@19795f4e (2022-05-31)",
    "clara-train-sdk:v4.1 runs `jupyter lab --ip 0.0.0.0 --port 8888 --allow-root "
    "--no-browser`; AIAA serves on 5000")
CLARA_CUDA = Source(
    "https://docs.nvidia.com/deeplearning/frameworks/tensorflow-release-notes/rel_21-10.html "
    "(the 21.10 NGC train) and the image's 470.57.02 compat library",
    "Clara Train 4.1 is built on the NGC 21.10 base: CUDA 11.4.2, driver 470+ (or 418.40, "
    "440.33, 450.51, 460.27 on datacenter GPUs); CUDA 11.4 predates Ada (8.9) and Hopper "
    "(9.0)", confidence="medium")
CLARA_ADA_HOPPER = Source(
    "Hadar301/nvidia-clara-train-examples README.md and Containerfile (2026-02-16)",
    "clara-train-sdk:v4.1's NGC entrypoint prints 'ERROR: No supported GPU(s) detected to run "
    "this container' on L40S/L40/H100; its 470 compat libraries broke CUDA under a 580 host "
    "driver in that report", confidence="low")
CLARA_AIAA_START = Source(
    "NeSI clara-train-sdk_v4.0 wrapper (code index id 43540648224)",
    "Clara Train 4.x starts its annotation server with `/opt/nvidia/medical/aiaa/AIAA start "
    "--engine AIAA -w <workspace>`; start_aiaa.sh was the 4.0 early-access name",
    confidence="medium")
MONAI_LABEL = Source(
    "Project-MONAI/MONAILabel tag 0.8.5 @da0247ee (2024-11-22): Dockerfile, monailabel/main.py, "
    "monailabel/config.py, sample-apps/radiology/main.py",
    "projectmonai/monailabel:0.8.5 is ubuntu:22.04 plus pip torch (unpinned; CUDA 12.4 wheels "
    "around the tag date, sm_50..sm_90), no JupyterLab; `monailabel start_server --app DIR "
    "--studies DIR --conf models NAME` listens on 0.0.0.0:8000; `monailabel apps --download "
    "--name radiology --output DIR` copies the bundled app (no network); the radiology app "
    "exits without --conf models")
PYTORCH_2510 = Source(
    "https://docs.nvidia.com/deeplearning/frameworks/pytorch-release-notes/rel-25-12.html; "
    "NGC 25.10 notes quoted in third-party Dockerfiles",
    "nvcr.io/nvidia/pytorch:25.10-py3 is CUDA 13.0 on Ubuntu 24.04, Python 3.12; CUDA 13 "
    "drops Volta", confidence="medium")
PYTORCH_2501 = Source(
    "https://docs.nvidia.com/deeplearning/frameworks/support-matrix/ (25.01: CUDA 12.8)",
    "nvcr.io/nvidia/pytorch:25.01-py3 is CUDA 12.8; NGC 25.xx containers have refused "
    "pre-Turing GPUs in reports (tritonserver 25.04 on V100S, triton-inference-server/"
    "server#8279; pytorch 25.02 on P100, boson-ai/higgs-audio#36)", confidence="low")
TENSORFLOW_2502 = Source(
    "third-party READMEs pinning nvcr.io/nvidia/tensorflow:25.02-tf2-py3",
    "TensorFlow 2.17 on CUDA 12.8; the newest NGC TensorFlow tag seen", confidence="low")
TENSORFLOW1_2303 = Source(
    "https://github.com/NVIDIA/tensorflow/releases (23.03); "
    "https://docs.nvidia.com/clara/monai/1.1/requirements.html (the 23.03 train)",
    "23.03-tf1-py3 is TF 1.15.5 on CUDA 12.1, the last monthly TF1 release; compute "
    "capability 6.0+", confidence="medium")
NGC_JUPYTER = Source(
    "https://docs.nvidia.com/deeplearning/frameworks/tensorflow-release-notes/rel_21-10.html "
    "and pytorch-release-notes rel_19-05",
    "NGC framework containers ship JupyterLab (listed in their contents); for 25.xx tags not "
    "re-verified", confidence="medium")

# Clara Train 4.x's annotation server, started only where the image has it.
CLARA_AIAA = (
    "if [ -x /opt/nvidia/medical/aiaa/AIAA ]; then "
    "/opt/nvidia/medical/aiaa/AIAA start --engine AIAA -w /workspace/aiaa "
    ">/workspace/.aiaa.log 2>&1 & "
    "elif command -v start_aiaa.sh >/dev/null 2>&1; then "
    "start_aiaa.sh --workspace /workspace/aiaa >/workspace/.aiaa.log 2>&1 & fi"
)
# MONAI Label's radiology app, copied from the installed package on first start,
# serving the workspace's studies on 8000.
MONAI_LABEL_SERVER = (
    "[ -d /workspace/apps/radiology ] || monailabel apps --download --name radiology "
    "--output /workspace/apps; mkdir -p /workspace/studies; "
    "exec monailabel start_server --app /workspace/apps/radiology --studies "
    "/workspace/studies --conf models segmentation --host 0.0.0.0 --port 8000"
)

PRESETS: tuple[ImagePreset, ...] = (
    ImagePreset(
        "clara-train", "nvcr.io/nvidia/clara-train-sdk:v4.1", (11, 4),
        (JUPYTER_PORT, Port(5000, 5000, "Clara AIAA server")), JUPYTER, False,
        "Clara Train SDK v4.1 (2021, MONAI-based), as in the NVIDIA Clara guides",
        (CLARA_EXAMPLES, CLARA_CUDA, CLARA_ADA_HOPPER, CLARA_AIAA_START),
        background=CLARA_AIAA,
    ),
    ImagePreset(
        "monai-label", "projectmonai/monailabel:0.8.5", (12, 4),
        (Port(8000, 8000, "MONAI Label server"),), None, False,
        "MONAI Label server (3D Slicer / OHIF clients connect on 8000); no JupyterLab",
        (MONAI_LABEL,), server_command=MONAI_LABEL_SERVER,
    ),
    ImagePreset(
        "pytorch", "nvcr.io/nvidia/pytorch:25.10-py3", (13, 0),
        (JUPYTER_PORT,), JUPYTER, False, "NGC PyTorch, current (CUDA 13: Turing and newer)",
        (PYTORCH_2510, NGC_JUPYTER),
    ),
    ImagePreset(
        "pytorch-cuda12", "nvcr.io/nvidia/pytorch:25.01-py3", (12, 8),
        (JUPYTER_PORT,), JUPYTER, False, "NGC PyTorch on CUDA 12",
        (PYTORCH_2501, NGC_JUPYTER),
        unverified_below=((7, 5), "NGC 25.xx containers have refused pre-Turing GPUs"),
    ),
    ImagePreset(
        "tensorflow2", "nvcr.io/nvidia/tensorflow:25.02-tf2-py3", (12, 8),
        (JUPYTER_PORT,), JUPYTER, False, "NGC TensorFlow 2 (the newest NGC TensorFlow tag seen)",
        (TENSORFLOW_2502, NGC_JUPYTER),
        unverified_below=((7, 5), "NGC 25.xx containers have refused pre-Turing GPUs"),
    ),
    ImagePreset(
        "tensorflow1", "nvcr.io/nvidia/tensorflow:23.03-tf1-py3", (12, 1),
        (JUPYTER_PORT,), JUPYTER, False, "NGC TensorFlow 1.15 (the last TF1 release; V100 ok)",
        (TENSORFLOW1_2303, NGC_JUPYTER),
    ),
)


def find_preset(name_or_image: str) -> ImagePreset | None:
    """A preset by its name, or the preset whose image reference this is."""
    for preset in PRESETS:
        if name_or_image in (preset.name, preset.image):
            return preset
    return None


class Incompatible(ValueError):
    """The image cannot run on this GPU or driver; str() says why and what to do."""


def presets_for(gpu: Gpu) -> list[ImagePreset]:
    """Presets whose CUDA builds code for this GPU."""
    return [p for p in PRESETS if nvidia.cuda_cannot_run_on_gpu(p.cuda, gpu) is None]


def check_gpu(preset: ImagePreset, gpu: Gpu, *, gpu_label: str) -> list[str]:
    """Raise Incompatible when the image cannot run on the GPU; return warnings."""
    why = nvidia.cuda_cannot_run_on_gpu(preset.cuda, gpu)
    if why is not None:
        family = preset.name.split("-")[0]
        same_family = [p for p in presets_for(gpu) if p.name.split("-")[0] == family]
        others = same_family or presets_for(gpu)
        fix = f"use {others[0].name} ({others[0].image})" if others else "use another image"
        if gpu.compute_capability < nvidia.CUDA_MIN_CC[preset.cuda[0]]:
            other_gpu = f"a newer GPU than {gpu_label}"
        else:
            newest = nvidia.cc_text(nvidia.newest_native_cc(preset.cuda))
            other_gpu = f"a GPU of compute capability {newest} or older instead of {gpu_label}"
        raise Incompatible(f"{preset.image} cannot run on the {gpu.model}: {why}; {fix}, or "
                           f"{other_gpu}")
    warnings = []
    if preset.unverified_below and gpu.compute_capability < preset.unverified_below[0]:
        warnings.append(
            f"{preset.image} on the {gpu.model} ({gpu.architecture}) is unverified: "
            f"{preset.unverified_below[1]}")
    return warnings


def check_driver(preset: ImagePreset, driver_version: str) -> None:
    """Raise Incompatible when the host's NVIDIA driver is too old for the image."""
    why = nvidia.driver_too_old(preset.cuda[0], driver_version.strip())
    if why is not None:
        raise Incompatible(
            f"{preset.image} needs CUDA {preset.cuda_text}, i.e. NVIDIA driver "
            f"{nvidia.CUDA_MIN_DRIVER[preset.cuda[0]]} or newer; this host has "
            f"{driver_version.strip()}: update the driver or pick an image on an older CUDA")
