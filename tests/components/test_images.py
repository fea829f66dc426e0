"""Image presets against every GPU profile and driver: refuse what cannot run, before paying."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from components import catalog, images
from stacktools.mock_engine import PROJECT_DIR


@pytest.mark.parametrize(
    ("preset", "profile"), list(itertools.product(images.PRESETS, catalog.PROFILES)),
    ids=[f"{i.name}-{p.cloud}-{p.name}"
         for i, p in itertools.product(images.PRESETS, catalog.PROFILES)],
)
def test_every_preset_on_every_profile(
    preset: images.ImagePreset, profile: catalog.InstanceProfile
) -> None:
    cc = profile.gpu.compute_capability
    # Written out independently of components/nvidia.py: CUDA 13 needs Turing (7.5)+;
    # CUDA 11.4 (Clara Train 4.1) builds code up to Ampere 8.6, not Ada 8.9 or Hopper 9.0.
    too_old = preset.cuda[0] >= 13 and cc < (7, 5)
    too_new = preset.cuda == (11, 4) and cc > (8, 6)
    if too_old or too_new:
        with pytest.raises(images.Incompatible) as caught:
            images.check_gpu(preset, profile.gpu, gpu_label=profile.name)
        message = str(caught.value)
        assert preset.image in message and profile.gpu.model in message
        if too_old:
            assert "CUDA 13 needs compute capability 7.5" in message
            assert f"a newer GPU than {profile.name}" in message
        else:
            assert "CUDA 11.4 predates" in message and "up to 8.6 only" in message
            assert f"8.6 or older instead of {profile.name}" in message
        assert re.search(r"use \S+ \((nvcr\.io|projectmonai)/\S+\)", message)  # a fix
    else:
        warnings = images.check_gpu(preset, profile.gpu, gpu_label=profile.name)
        unverified = preset.name in ("pytorch-cuda12", "tensorflow2") and cc < (7, 5)
        assert bool(warnings) == unverified


def test_presets_cover_the_frameworks_with_ports_and_jupyter() -> None:
    names = {p.name for p in images.PRESETS}
    assert {"clara-train", "monai-label", "pytorch", "tensorflow2", "tensorflow1"} <= names
    clara = images.find_preset("clara-train")
    assert clara is not None
    assert [(p.container, p.host) for p in clara.ports] == [(8888, 8890), (5000, 5000)]
    assert clara.background is not None and "AIAA start" in clara.background
    # MONAI Label's image has no JupyterLab: its server is the container's process.
    monai = images.find_preset("monai-label")
    assert monai is not None and monai.jupyter_command is None
    assert [(p.container, p.host) for p in monai.ports] == [(8000, 8000)]
    assert monai.server_command is not None
    assert "monailabel start_server" in monai.server_command
    assert "--port 8000" in monai.server_command and "--conf models" in monai.server_command
    for preset in images.PRESETS:
        assert images.find_preset(preset.image) is preset
        assert not any(p.host == 5000 for p in preset.ports if p.purpose != "Clara AIAA server")
        # The token comes from the environment (JUPYTER_TOKEN), never the command line.
        assert images.JUPYTER_TOKEN_ENV == "JUPYTER_TOKEN"
        assert preset.jupyter_command is None or (
            "{port}" in preset.jupyter_command and "token" not in preset.jupyter_command.lower())


@pytest.mark.parametrize(("cuda", "driver", "ok"), [
    ((13, 0), "580.65.06", True), ((13, 0), "570.172.08", False),
    ((12, 8), "525.60.13", True), ((12, 1), "470.256.02", False),
    ((11, 4), "450.80.02", True), ((11, 4), "418.87.01", False),
])
def test_driver_check(cuda: tuple[int, int], driver: str, ok: bool) -> None:
    preset = next(p for p in images.PRESETS if p.cuda[0] == cuda[0])
    if ok:
        images.check_driver(preset, driver + "\n")
    else:
        with pytest.raises(images.Incompatible, match=re.escape(driver)):
            images.check_driver(preset, driver)


def plan_with(tmp_path: Path, stack: str, image: str) -> subprocess.CompletedProcess[str]:
    text = (PROJECT_DIR / "stacks" / f"Pulumi.{stack}.yaml").read_text()
    path = tmp_path / f"Pulumi.{stack}-img.yaml"
    path.write_text(text + f"  gpu-workbench:containerImage: {image}\n")
    return subprocess.run([str(PROJECT_DIR / "scripts" / "plan"), str(path)],
                          capture_output=True, text=True, timeout=120)


def test_plan_refuses_cuda13_on_v100_naming_both_and_a_fix(tmp_path: Path) -> None:
    result = plan_with(tmp_path, "gcp", "pytorch")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith("error: gpu-workbench:containerImage: 'pytorch' cannot run here")
    assert "nvcr.io/nvidia/pytorch:25.10-py3" in line and "NVIDIA V100 16GB" in line
    assert "use pytorch-cuda12 (nvcr.io/nvidia/pytorch:25.01-py3)" in line
    assert "newer GPU than n1-highmem-8-v100" in line


def test_plan_refuses_clara_on_ada_and_names_a_gpu_it_knows(tmp_path: Path) -> None:
    result = plan_with(tmp_path, "aws-l4", "clara-train")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "CUDA 11.4 predates the NVIDIA L4 24GB (Ada Lovelace, 8.9)" in line
    assert "use monai-label (projectmonai/monailabel:0.8.5)" in line


def test_plan_passes_a_compatible_image(tmp_path: Path) -> None:
    v100 = plan_with(tmp_path, "gcp", "pytorch-cuda12")
    assert v100.returncode == 0, v100.stderr
    assert "nvcr.io/nvidia/pytorch:25.01-py3 (preset pytorch-cuda12: CUDA 12.8" in v100.stdout
    assert "is unverified: NGC 25.xx containers have refused pre-Turing GPUs" in v100.stdout
    l4 = plan_with(tmp_path, "aws-l4", "pytorch")
    assert l4.returncode == 0, l4.stderr
    custom = plan_with(tmp_path, "gcp", "ghcr.io/lab/seg:2.1")
    assert custom.returncode == 0, custom.stderr
    assert "not in the image catalog" in custom.stdout


def test_driver_message_writes_versions_as_nvidia_does() -> None:
    pytorch = images.find_preset("pytorch")
    assert pytorch is not None
    with pytest.raises(images.Incompatible, match=r"driver 580\.65\.06 or newer; this host "
                                                  r"has 570\.86\.15"):
        images.check_driver(pytorch, "570.86.15")
