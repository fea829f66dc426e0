"""The image this host was last bootstrapped with, remembered on the host, so that a
rerun without --image keeps it instead of replacing a PyTorch container (and its
running kernels) with the default Clara image.

The container step writes what --image said (a preset name or an image reference) to
~/.config/gpu-workbench/image whenever --image was given (scripts/bootstrap always
gives the stack's). A run without --image reads it in the one facts command, and the
runner uses it before any step runs, so compat, container, packages and check all see
the same image. The file is checked as --image is: anything else (an edited file, a
hostile string) is ignored, said so, and the default is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bootstrap.container_spec import TOKEN_DIR
from bootstrap.facts import LOGIN, Fact
from bootstrap.options import BootstrapOptions
from bootstrap.shell import Sh, sh
from components.images import find_preset
from components.spec import is_image_reference

IMAGE_FILE = f"{TOKEN_DIR}/image"  # under the login user's home, beside jupyter_token
MAX_LENGTH = 512


@dataclass(frozen=True)
class RememberedImage:
    image: str | None  # a valid --image value, or None
    problem: str | None = None  # why the file's content was ignored


def parse_remembered(text: str) -> RememberedImage:
    value = text.strip()
    if not value:
        return RememberedImage(None)
    if len(value) > MAX_LENGTH or "\n" in value or not (
            find_preset(value) is not None or is_image_reference(value)):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return RememberedImage(None, f"ignored ~/{IMAGE_FILE}: {shown!r} is neither a preset "
                                     "nor an image reference")
    return RememberedImage(value)


REMEMBERED_IMAGE: Fact[RememberedImage] = Fact(
    "remembered_image",
    lambda _: sh('head -c {limit} "$home"/{path} 2>/dev/null', limit=str(MAX_LENGTH + 1),
                 path=IMAGE_FILE),
    parse_remembered, needs=(LOGIN,))


def remember_command(home: str, owner: Sh, image: str) -> Sh:
    """Write --image's value for the next run without it (the login user's file, 600;
    its directory exists: the container step makes it for the token)."""
    return sh("printf '%s\\n' {image} > {path}.new && chown {owner} {path}.new && "
              "chmod 600 {path}.new && mv -f {path}.new {path} || "
              "echo 'WARNING: could not remember the image in' {path} >&2",
              image=image, owner=owner, path=f"{home}/{IMAGE_FILE}")


def resolve(options: BootstrapOptions, remembered: RememberedImage | None) -> BootstrapOptions:
    """The options with the remembered image when --image was not given."""
    if options.image_source != "default" or remembered is None or remembered.image is None:
        return options
    return dataclasses.replace(options, image=remembered.image, image_source="host")
