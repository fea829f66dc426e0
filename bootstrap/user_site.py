"""The extra packages' user site on the workspace (--pip, --requirements): where it
is, and the record of what was installed there for which image.

The record (`requirements.sha256` beside the packages) holds the sha256 of the
requirements pip installed and the image it installed them under:

    3f0c...e1  nvcr.io/nvidia/pytorch:25.01-py3

Its presence is what tells the container step to keep PYTHONUSERBASE on a rerun
that gives no --pip (else the container would be replaced and its kernels die);
the image in it tells the packages step to install again when the image changed,
since a new image may bring another Python, whose user site (lib/pythonX.Y) would
not see the packages installed for the old one. A record without an image (from an
older gpu-workbench) counts as installed for no image: installed again once.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootstrap.container_spec import PACKAGES_DIR
from bootstrap.facts import LOGIN, Fact
from bootstrap.options import BootstrapOptions
from bootstrap.shell import Sh, sh

RECORD_FILE = "requirements.sha256"
REQUIREMENTS_FILE = "requirements.txt"  # the last requirements installed, kept beside them


@dataclass(frozen=True)
class InstalledPackages:
    sha256: str
    image: str | None  # the image ref they were installed under; None: not recorded


def record_line(sha256: str, image: str) -> str:
    return f"{sha256}  {image}\n"


def parse_record(text: str) -> InstalledPackages | None:
    parts = text.split()
    if not parts:
        return None
    return InstalledPackages(parts[0], parts[1] if len(parts) > 1 else None)


def _record_command(o: BootstrapOptions) -> Sh:
    # The workspace as the host sees it: ~ is the login user's home.
    ws = (sh('"$home"{rest}', rest=o.workspace[1:]) if o.workspace.startswith("~")
          else sh("{ws}", ws=o.workspace))
    return sh("cat {ws}/{packages_dir}/{record} 2>/dev/null",
              ws=ws, packages_dir=PACKAGES_DIR, record=RECORD_FILE)


INSTALLED_PACKAGES: Fact[InstalledPackages | None] = Fact(
    "installed_packages", _record_command, parse_record, needs=(LOGIN,))
