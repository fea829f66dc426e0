"""Container image references on a cluster: registry or path, cache names, registry login."""

from __future__ import annotations

import re
from collections.abc import Mapping

from cluster.job_error import JobError
from components.spec import is_image_reference


def is_registry_reference(image: str) -> bool:
    """True for `nvcr.io/nvidia/pytorch:24.05-py3`, `docker://...`; False for paths."""
    if image.startswith("docker://"):
        return True
    if image.startswith(("/", "./", "../", "~")) or image.endswith((".sif", ".sqfs", ".simg")):
        return False
    return "/" in image or ":" in image


def registry_reference(image: str) -> str:
    return image.removeprefix("docker://")


def check_registry_reference(option: str, image: str) -> str:
    """The reference without docker://; JobError (one line, naming `option`) unless it
    is an image reference by the rule the stack applies to containerImage."""
    ref = registry_reference(image)
    if not is_image_reference(ref):
        raise JobError(
            f"{option}: '{image}' is not an image reference (repo/name:tag, e.g."
            " nvcr.io/nvidia/pytorch:24.05-py3)"
        )
    return ref


def cached_image_name(image: str, runtime: str) -> str:
    """File (SIF) or directory (charliecloud) name of an image in the shared cache."""
    ref = registry_reference(image)
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        ref += ":latest"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ref)
    return safe if runtime == "charliecloud" else f"{safe}.sif"


def registry_credentials(
    runtime: str, image: str, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """Registry login for a pull, from the local environment; None pulls anonymously.

    Explicit APPTAINER_/SINGULARITY_DOCKER_USERNAME+PASSWORD (or CH_IMAGE_ for
    charliecloud) win. NGC_API_KEY is used with the user `$oauthtoken`, and only
    for nvcr.io, so an NGC key is never sent to another registry.
    """
    prefixes = {
        "apptainer": ("APPTAINER_DOCKER_", "SINGULARITY_DOCKER_"),
        "singularity": ("SINGULARITY_DOCKER_", "APPTAINER_DOCKER_"),
        "charliecloud": ("CH_IMAGE_", "APPTAINER_DOCKER_", "SINGULARITY_DOCKER_"),
    }[runtime]
    found: tuple[str, str] | None = None
    for prefix in prefixes:
        user, password = environ.get(prefix + "USERNAME"), environ.get(prefix + "PASSWORD")
        if user and password:
            found = (user, password)
            break
    ngc_key = environ.get("NGC_API_KEY")
    if found is None and ngc_key and registry_reference(image).startswith("nvcr.io/"):
        found = ("$oauthtoken", ngc_key)
    if found and any("\n" in part or "\r" in part for part in found):
        raise JobError("registry credentials contain a newline")
    return found
