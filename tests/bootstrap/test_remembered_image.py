"""The image a host remembers (bootstrap/remembered_image.py) and the record of the
extra packages (bootstrap/user_site.py): what is read back, and what is refused.
The whole behaviour over real SSH: tests/bootstrap/test_presets_packages_mlflow.py."""

from __future__ import annotations

import pytest

from bootstrap.container_spec import DEFAULT_IMAGE
from bootstrap.options import BootstrapOptions
from bootstrap.remembered_image import RememberedImage, parse_remembered, resolve
from bootstrap.user_site import InstalledPackages, parse_record, record_line


@pytest.mark.parametrize("text, image", [
    ("pytorch-cuda12\n", "pytorch-cuda12"),
    ("nvcr.io/nvidia/pytorch:25.01-py3\n", "nvcr.io/nvidia/pytorch:25.01-py3"),
    ("", None),
    ("\n", None),
])
def test_a_remembered_image_is_read_back(text: str, image: str | None) -> None:
    assert parse_remembered(text) == RememberedImage(image)


@pytest.mark.parametrize("text", [
    "x$(touch /tmp/p)",
    "`id`",
    "pytorch\nrm -rf /",
    "-v/:/host busybox",
    "nvcr.io/nvidia/pytorch:25.01-py3 --privileged",
    "a" * 600,
])
def test_anything_else_in_the_file_is_ignored_and_said_so(text: str) -> None:
    found = parse_remembered(text)
    assert found.image is None
    assert found.problem is not None
    assert found.problem.startswith("ignored ~/.config/gpu-workbench/image: ")
    assert found.problem.endswith(" is neither a preset nor an image reference")


def test_the_remembered_image_is_used_only_without_image() -> None:
    remembered = RememberedImage("pytorch-cuda12")
    default = BootstrapOptions(image=DEFAULT_IMAGE, image_source="default")
    used = resolve(default, remembered)
    assert (used.image, used.image_source) == ("pytorch-cuda12", "host")
    assert used.image_ref == "nvcr.io/nvidia/pytorch:25.01-py3"
    given = BootstrapOptions(image="monai")
    assert resolve(given, remembered) is given
    assert resolve(default, RememberedImage(None, "ignored")) is default
    assert resolve(default, None) is default


def test_image_source_is_one_of_three() -> None:
    with pytest.raises(ValueError, match="image_source must be given, default or host"):
        BootstrapOptions(image_source="file")


def test_the_packages_record_names_the_image() -> None:
    line = record_line("ab" * 32, "nvcr.io/nvidia/pytorch:25.01-py3")
    assert parse_record(line) == InstalledPackages("ab" * 32,
                                                   "nvcr.io/nvidia/pytorch:25.01-py3")
    # Written by an older gpu-workbench: the sha alone, installed for no known image.
    assert parse_record("ab" * 32 + "\n") == InstalledPackages("ab" * 32, None)
    assert parse_record("") is None
