"""What a bootstrap run was asked to do: one frozen value per run, no globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from bootstrap.container_spec import DEFAULT_IMAGE, DEFAULT_NAME, DEFAULT_WORKSPACE
from components.images import ImagePreset, find_preset

CLOUDS = ("aws", "gcp", "azure")
# The environment variable that carries a Jupyter token to `fab` (scripts/bootstrap
# sets it from the stack's jupyter_token secret): never on a command line.
JUPYTER_TOKEN_ENV = "WORKBENCH_JUPYTER_TOKEN"


@dataclass(frozen=True)
class BootstrapOptions:
    cloud: str | None = None  # None: detect (only Azure changes anything)
    image: str = DEFAULT_IMAGE  # a preset name (components/images.py) or an image reference
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
    autostop_minutes: int = 60  # stop the machine after this many idle minutes; 0: off
    # Where the idle check reaches Azure (written into its config): the real
    # endpoints; a test points them at a local server that answers as Azure documents.
    azure_imds_url: str = "http://169.254.169.254"
    azure_arm_url: str = "https://management.azure.com"

    def __post_init__(self) -> None:
        if self.cloud is not None and self.cloud not in CLOUDS:
            raise ValueError(f"--cloud must be one of {', '.join(CLOUDS)}, not {self.cloud!r}")
        if self.wait_timeout <= 0:
            raise ValueError("--wait-timeout must be positive")
        if not self.workspace.startswith(("/", "~/")) and self.workspace != "~":
            raise ValueError(
                f"--workspace must be absolute or start with ~/, not {self.workspace!r}")
        if self.jupyter_token is not None and (
                len(self.jupyter_token) < 16 or not self.jupyter_token.isalnum()):
            raise ValueError(f"the Jupyter token ({JUPYTER_TOKEN_ENV}) must be at least 16 "
                             "letters and digits")
        if not self.image.strip():
            raise ValueError("--image must name a preset or an image")
        if not 0 <= self.autostop_minutes <= 7 * 24 * 60:
            raise ValueError(f"--autostop-minutes must be 0 (off) to 10080, not "
                             f"{self.autostop_minutes}")
        if not self.data_mount.startswith("/") or self.data_mount == "/":
            raise ValueError(f"--data-mount must be an absolute directory, not "
                             f"{self.data_mount!r}")
        if self.data_device not in (None, "none") and not self.data_device.startswith("/dev/"):
            raise ValueError(f"--data-device must be a /dev path or 'none', not "
                             f"{self.data_device!r}")

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
