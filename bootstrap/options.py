"""What a bootstrap run was asked to do: one frozen value per run, no globals."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrap.container import DEFAULT_IMAGE, DEFAULT_NAME, DEFAULT_WORKSPACE

CLOUDS = ("aws", "gcp", "azure")


@dataclass(frozen=True)
class BootstrapOptions:
    cloud: str | None = None  # None: detect (only Azure changes anything)
    image: str = DEFAULT_IMAGE
    container_name: str = DEFAULT_NAME
    workspace: str = DEFAULT_WORKSPACE
    check: bool = False  # read facts, report what would change, change nothing
    skip_check: bool = False  # skip the GPU check (hosts without a GPU)
    chmod_home: bool = False
    wait_timeout: float = 300.0  # SSH retry, cloud-init and dpkg lock, each bounded by this

    def __post_init__(self) -> None:
        if self.cloud is not None and self.cloud not in CLOUDS:
            raise ValueError(f"--cloud must be one of {', '.join(CLOUDS)}, not {self.cloud!r}")
        if self.wait_timeout <= 0:
            raise ValueError("--wait-timeout must be positive")
        if not self.workspace.startswith(("/", "~/")) and self.workspace != "~":
            raise ValueError(
                f"--workspace must be absolute or start with ~/, not {self.workspace!r}")
