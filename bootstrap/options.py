"""What a bootstrap run was asked to do: one frozen value per run, no globals."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bootstrap.container_spec import DEFAULT_IMAGE, DEFAULT_NAME, DEFAULT_WORKSPACE
from bootstrap.image_pull import PULL_STALL_S
from bootstrap.pull_progress import PROGRESS_INTERVAL_S
from components.images import PRESETS, ImagePreset, find_preset
from components.spec import VOLUME_ID_EXAMPLES, VOLUME_ID_PATTERNS, is_image_reference

CLOUDS = ("aws", "gcp", "azure")
# The environment variable that carries a Jupyter token to `fab` (scripts/bootstrap
# sets it from the stack's jupyter_token secret): never on a command line.
JUPYTER_TOKEN_ENV = "WORKBENCH_JUPYTER_TOKEN"
# A host key fingerprint as `ssh-keygen -lf` prints it: SHA256, base64 without padding.
FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


def normalize_fingerprint(value: str) -> str:
    """'SHA256:abc...' from what a user or a stack output gives (padding '=' dropped);
    ValueError when it is not a SHA256 fingerprint."""
    text = value.strip().rstrip("=")
    if not FINGERPRINT.match(text):
        raise ValueError(f"{value!r} is not a SHA256 host key fingerprint "
                         "(SHA256:<43 base64 characters>, as ssh-keygen -lf prints it)")
    return text


def volume_cloud(volume_id: str) -> str | None:
    """The cloud whose disk ID format `volume_id` has (components/spec.py), or None."""
    return next((cloud for cloud, pattern in VOLUME_ID_PATTERNS.items()
                 if re.match(pattern, volume_id)), None)


# Docker's own rule for a container name (what `docker run --name` accepts).
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
METADATA_URL = re.compile(r"https?://[^\s/]+(/[^\s]*)?")
# Never part of a path a user means; they would split lines of what reads it back.
CONTROL = ("\n", "\r", "\0")


@dataclass(frozen=True)
class BootstrapOptions:
    cloud: str | None = None  # None: detect (only Azure changes anything)
    image: str = DEFAULT_IMAGE  # a preset name (components/images.py) or an image reference
    # Where image came from: "given" (--image), "default" (no --image: the runner uses
    # the image remembered on the host, if any: bootstrap/remembered_image.py), "host".
    image_source: str = "given"
    container_name: str = DEFAULT_NAME
    workspace: str = DEFAULT_WORKSPACE
    check: bool = False  # read facts, report what would change, change nothing
    skip_check: bool = False  # skip the GPU check (hosts without a GPU)
    chmod_home: bool = False
    wait_timeout: float = 300.0  # SSH retry, cloud-init and dpkg lock, each bounded by this
    # Extra Python packages for the container: pip requirement lines (--pip and
    # the lines of --requirements), installed into a user site on the workspace.
    requirements: tuple[str, ...] = ()
    mlflow: bool = False  # also start the MLflow tracking server (the mlflow step)
    # A Jupyter token to use instead of the host's own (the stack's secret).
    jupyter_token: str | None = field(default=None, repr=False)
    # The kept data disk: None finds it by the cloud's device names, "none" skips it.
    data_device: str | None = None
    data_mount: str = "/data"
    # The stack's data volume (its data_volume_id output): only that disk is used.
    data_volume_id: str | None = None
    autostop_minutes: int = 60  # stop the machine after this many idle minutes; 0: off
    # Azure: Docker moves to the resource disk (wiped at deallocate) only when the disk it
    # is on has less than this free.
    docker_min_free_gib: int = 50
    # Host keys: refuse hosts not yet in known_hosts; accept a new host only with this key.
    strict_host_keys: bool = False
    host_key_fingerprint: str | None = None
    # An image pull: a progress line at most this often; stopped after this long
    # with nothing new (Fabric config workbench.pull_progress_seconds and
    # workbench.pull_stall_seconds; no flags).
    pull_progress_seconds: float = PROGRESS_INTERVAL_S
    pull_stall_seconds: int = PULL_STALL_S
    # Where the idle check reaches Azure (written into its config): the real
    # endpoints; a test points them at a local server that answers as Azure documents.
    azure_imds_url: str = "http://169.254.169.254"
    azure_arm_url: str = "https://management.azure.com"
    # Where the interruption watcher reads the other clouds' notices (written into its
    # config the same way): the documented addresses, or a test's stand-in.
    aws_imds_url: str = "http://169.254.169.254"
    gcp_metadata_url: str = "http://metadata.google.internal"

    def __post_init__(self) -> None:
        if self.cloud is not None and self.cloud not in CLOUDS:
            raise ValueError(f"--cloud must be one of {', '.join(CLOUDS)}, not {self.cloud!r}")
        for name in ("azure_imds_url", "azure_arm_url", "aws_imds_url", "gcp_metadata_url"):
            # Each becomes one line of an on-host config file.
            if not METADATA_URL.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be an http:// or https:// URL without spaces, "
                                 f"not {getattr(self, name)!r}")
        if self.wait_timeout <= 0:
            raise ValueError("--wait-timeout must be positive")
        if not self.workspace.startswith(("/", "~/")) and self.workspace != "~":
            raise ValueError(
                f"--workspace must be absolute or start with ~/, not {self.workspace!r}")
        if ":" in self.workspace or any(c in self.workspace for c in CONTROL):
            raise ValueError("--workspace is mounted with `docker run -v HOST:/workspace`, which "
                             "reads ':' as a separator; it may not hold ':', a newline or NUL, "
                             f"not {self.workspace!r}")
        if self.jupyter_token is not None and (
                len(self.jupyter_token) < 16 or not self.jupyter_token.isascii()
                or not self.jupyter_token.isalnum()):
            raise ValueError(f"--jupyter-token (or {JUPYTER_TOKEN_ENV}) must be at least 16 "
                             "letters and digits")
        if self.image_source not in ("given", "default", "host"):
            raise ValueError("image_source must be given, default or host, "
                             f"not {self.image_source!r}")
        if not self.image.strip():
            raise ValueError("--image must name a preset or an image")
        if find_preset(self.image) is None and not is_image_reference(self.image):
            # The rule the stack applies to containerImage (components/spec.py).
            raise ValueError(
                "--image must be a preset (" + ", ".join(p.name for p in PRESETS) + ") or an "
                f"image reference (e.g. nvcr.io/nvidia/pytorch:25.01-py3), not {self.image!r}")
        if not CONTAINER_NAME.fullmatch(self.container_name):
            raise ValueError("--name must be a Docker container name (a letter or digit, then "
                             f"letters, digits, _ . or -), not {self.container_name!r}")
        if not 0 <= self.autostop_minutes <= 7 * 24 * 60:
            raise ValueError(f"--autostop-minutes must be 0 (off) to 10080, not "
                             f"{self.autostop_minutes}")
        if not 0 <= self.docker_min_free_gib <= 1_000_000:
            raise ValueError(f"--docker-min-free-gib must be 0 to 1000000, not "
                             f"{self.docker_min_free_gib}")
        if not self.data_mount.startswith("/") or self.data_mount == "/":
            raise ValueError(f"--data-mount must be an absolute directory, not "
                             f"{self.data_mount!r}")
        if self.data_device not in (None, "none") and (
                not self.data_device.startswith("/dev/")
                or any(c in self.data_device for c in CONTROL)):
            raise ValueError(f"--data-device must be a /dev path or 'none', not "
                             f"{self.data_device!r}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in self.data_mount):
            raise ValueError(f"--data-mount must not hold control characters, not "
                             f"{self.data_mount!r}")
        if self.data_volume_id is not None:
            cloud = volume_cloud(self.data_volume_id)
            if cloud is None:
                examples = ", ".join(VOLUME_ID_EXAMPLES.values())
                raise ValueError(f"--data-volume-id {self.data_volume_id!r} is not an AWS, GCP "
                                 f"or Azure disk ID (e.g. {examples})")
            if self.cloud is not None and cloud != self.cloud:
                raise ValueError(f"--data-volume-id {self.data_volume_id!r} is a disk on "
                                 f"{cloud}, but --cloud is {self.cloud}")
            if self.data_device is not None:
                raise ValueError("--data-device and --data-volume-id both name the data disk; "
                                 "give one")
        if not self.pull_progress_seconds > 0:
            raise ValueError("workbench.pull_progress_seconds must be positive, not "
                             f"{self.pull_progress_seconds!r}")
        if not self.pull_stall_seconds >= 1:
            raise ValueError("workbench.pull_stall_seconds must be at least 1, not "
                             f"{self.pull_stall_seconds!r}")
        if self.host_key_fingerprint is not None:
            try:
                fingerprint = normalize_fingerprint(self.host_key_fingerprint)
            except ValueError as exc:
                raise ValueError(f"--host-key-fingerprint: {exc}") from None
            object.__setattr__(self, "host_key_fingerprint", fingerprint)

    @property
    def preset(self) -> ImagePreset | None:
        """The catalog preset --image names (by name or image reference), if any."""
        return find_preset(self.image)

    @property
    def image_ref(self) -> str:
        """The image to pull and run: a preset's image, else --image as given."""
        preset = self.preset
        return preset.image if preset else self.image


def requirement_lines(pip: list[str] | tuple[str, ...], requirements_file: str | None
                      ) -> tuple[str, ...]:
    """--pip specs and the requirement lines of a local file (comments, blanks dropped).

    Lines that point at other files (-r, -c) are refused: only this file is uploaded.
    """
    lines = [p.strip() for p in pip if p.strip()]
    for spec in lines:
        if any(c in spec for c in CONTROL):
            # One --pip is one requirement line: a newline would smuggle in a second
            # line (a pip option such as --index-url) that nobody typed as such.
            raise ValueError(f"--pip {spec!r}: one requirement per --pip, without a newline "
                             "or NUL")
    if requirements_file:
        try:
            text = open(requirements_file, encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise ValueError(f"--requirements {requirements_file}: {exc.strerror}") from exc
        for raw in text.splitlines():
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("-r", "-c", "--requirement", "--constraint")):
                raise ValueError(f"--requirements {requirements_file}: {line!r} points at "
                                 "another file; list its requirements here instead")
            lines.append(line)
    return tuple(lines)
