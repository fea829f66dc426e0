"""The compat step's reading of nvidia-smi, requirement files and option checks, without a host."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.options import BootstrapOptions, requirement_lines
from bootstrap.steps.compat import HostGpus, parse_gpu_section


def test_gpu_section() -> None:
    assert parse_gpu_section("absent") == "no nvidia-smi on the host"
    two = parse_gpu_section("580.95.05, 8.0, NVIDIA A100-SXM4-40GB\n"
                            "580.95.05, 7.0, Tesla V100-SXM2-16GB\nrc=0")
    assert two == HostGpus("580.95.05", ((8, 0), (7, 0)),
                           ("NVIDIA A100-SXM4-40GB", "Tesla V100-SXM2-16GB"))
    failed = parse_gpu_section("NVIDIA-SMI has failed because it couldn't communicate with "
                               "the NVIDIA driver.\nrc=9")
    assert isinstance(failed, str) and failed.startswith("nvidia-smi failed (NVIDIA-SMI has")
    assert parse_gpu_section("rc=0") == "nvidia-smi lists no GPU"
    assert "cannot read" in str(parse_gpu_section("580.95.05, [N/A]\nrc=0"))


def test_requirement_lines(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# tools\nrich==13.7.1  # pretty\n\nscikit-image>=0.22\n")
    assert requirement_lines(["monai[all]"], str(req)) == (
        "monai[all]", "rich==13.7.1", "scikit-image>=0.22")
    req.write_text("-r other.txt\n")
    with pytest.raises(ValueError, match="points at another file"):
        requirement_lines([], str(req))
    with pytest.raises(ValueError, match="No such file"):
        requirement_lines([], str(tmp_path / "missing.txt"))


def test_options_resolve_presets_and_check_the_token() -> None:
    assert BootstrapOptions(image="pytorch-cuda12").image_ref == "nvcr.io/nvidia/pytorch:25.01-py3"
    assert BootstrapOptions(image="ghcr.io/lab/seg:2.1").preset is None
    with pytest.raises(ValueError, match="at least 16 letters and digits"):
        BootstrapOptions(jupyter_token="short")
    assert "abc" not in repr(BootstrapOptions(jupyter_token="abc" * 8))
