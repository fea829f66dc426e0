"""The image a host remembers (bootstrap/remembered_image.py) and the record of the
extra packages (bootstrap/user_site.py): what is read back, and what is refused.
The whole behaviour over real SSH: tests/bootstrap/test_presets_packages_mlflow.py."""

from __future__ import annotations

import subprocess
import types

import pytest

from bootstrap.container_spec import DEFAULT_IMAGE
from bootstrap.facts import LOGIN, Login
from bootstrap.options import BootstrapOptions
from bootstrap.remembered_image import RememberedImage, parse_remembered, resolve
from bootstrap.steps import packages
from bootstrap.steps.base import HostContext
from bootstrap.user_site import INSTALLED_PACKAGES, InstalledPackages, parse_record, record_line


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


class RecordingRemote:
    """Takes the scripts a step sends; answers as a command that succeeded."""

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, script: object, **_: object) -> object:
        self.scripts.append(str(script))
        return types.SimpleNamespace(ok=True, stdout="", error_line=lambda: "")


def packages_run(options: BootstrapOptions, installed: InstalledPackages | None
                 ) -> tuple[str, str, list[str]]:
    remote = RecordingRemote()
    ctx = HostContext(remote=remote, options=options, emit=print)  # type: ignore[arg-type]
    ctx.gathered = {LOGIN.name: Login("wb", "/home/wb", "wb"),
                    INSTALLED_PACKAGES.name: installed}
    ctx.step = packages.STEP
    outcome = packages.run(ctx)
    return outcome.status.value, outcome.message, remote.scripts


def test_packages_installed_again_for_another_image_from_the_kept_file() -> None:
    options = BootstrapOptions(image="pytorch")
    earlier = InstalledPackages("ab" * 32, "nvcr.io/nvidia/pytorch:25.01-py3")
    status, message, scripts = packages_run(options, earlier)
    assert status == "changed"
    assert message == ("pip installed ~/workspace/.gpu-workbench/python/requirements.txt again "
                       f"for {options.image_ref} (installed for {earlier.image})")
    [script] = scripts
    assert "base64 -d" not in script  # the kept requirements.txt, not a new one
    assert f"{'ab' * 32}  {options.image_ref}" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)  # sh reads it


def test_packages_kept_when_neither_list_nor_image_changed() -> None:
    options = BootstrapOptions(image="pytorch")
    same = InstalledPackages("ab" * 32, options.image_ref)
    assert packages_run(options, same)[:2] == (
        "ok", f"installed earlier for {options.image_ref}: "
              "~/workspace/.gpu-workbench/python/requirements.txt")
    assert packages_run(options, None)[0] == "skipped"
    wanted = BootstrapOptions(image="pytorch", requirements=("numpy==2.1.0",))
    status, _, [script] = packages_run(wanted, same)
    assert status == "changed" and "base64 -d" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)
