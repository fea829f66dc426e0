"""Step: the image can run on this host's GPU and driver, checked before anything is pulled.

The facts command already ran `nvidia-smi --query-gpu=driver_version,compute_cap`
(no extra round trip). For a catalog preset, the driver must be new enough for
the image's CUDA major (images.check_driver) and every GPU's compute
capability high enough for it (images.check_gpu). An image outside the catalog
has unknown CUDA needs: only reported. A host without nvidia-smi is skipped
with a note; the check step diagnoses a missing driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootstrap.facts import Fact
from bootstrap.remembered_image import REMEMBERED_IMAGE
from bootstrap.shell import Sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, ok, skipped
from components.images import Incompatible, check_driver, check_gpu
from components.nvidia import Gpu, architecture_of


@dataclass(frozen=True)
class HostGpus:
    driver: str
    capabilities: tuple[tuple[int, int], ...]
    names: tuple[str, ...]


def parse_gpu_section(section: str) -> HostGpus | str:
    """The facts' @@gpu section: driver and capabilities, or why there are none."""
    lines = [ln.strip() for ln in section.strip().splitlines() if ln.strip()]
    if not lines or lines == ["absent"]:
        return "no nvidia-smi on the host"
    rc = lines[-1].removeprefix("rc=") if lines[-1].startswith("rc=") else "?"
    rows = lines[:-1] if lines[-1].startswith("rc=") else lines
    if rc != "0":
        return f"nvidia-smi failed ({rows[0] if rows else 'rc=' + rc})"
    drivers, caps, names = set(), [], []
    for row in rows:
        parts = [p.strip() for p in row.split(",", 2)]
        try:
            major, minor = parts[1].split(".")
            caps.append((int(major), int(minor)))
        except (IndexError, ValueError):
            return f"cannot read nvidia-smi's answer: {row!r}"
        drivers.add(parts[0])
        names.append(parts[2] if len(parts) > 2 and parts[2] else "GPU")
    if not caps:
        return "nvidia-smi lists no GPU"
    return HostGpus(driver=sorted(drivers)[0], capabilities=tuple(caps), names=tuple(names))


# Driver, compute capability and model, one line per GPU, then nvidia-smi's exit code.
GPUS: Fact[HostGpus | str] = Fact(
    "gpu",
    lambda _: Sh("if command -v nvidia-smi >/dev/null 2>&1; then\n"
                 "  wb_g=$(timeout 30 nvidia-smi --query-gpu=driver_version,compute_cap,name "
                 "--format=csv,noheader 2>&1); wb_rc=$?\n"
                 '  echo "$wb_g" | head -n 16; echo "rc=$wb_rc"\n'
                 "else echo absent; fi"),
    parse_gpu_section)


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    gpus = ctx.fact(GPUS)
    preset = o.preset
    if isinstance(gpus, str):
        return skipped(f"{gpus}: driver/GPU compatibility of {o.image_ref} not checked "
                       "(the check step diagnoses the driver)")
    cc = min(gpus.capabilities)  # the oldest GPU decides
    cc_text = f"{cc[0]}.{cc[1]}"
    name = gpus.names[gpus.capabilities.index(cc)]
    if preset is None:
        return ok(f"{o.image_ref} is not in the image catalog: its CUDA needs are unknown "
                  f"(driver {gpus.driver}, compute capability {cc_text})")
    gpu = Gpu(name, architecture_of(cc), cc, 0)
    try:
        check_driver(preset, gpus.driver)
        warnings = check_gpu(preset, gpu, gpu_label="this host's")
    except Incompatible as exc:
        raise StepFailed(f"not pulling {preset.image}: {exc}") from exc
    text = (f"{preset.name} ({preset.image}, CUDA {preset.cuda_text}) fits driver "
            f"{gpus.driver} and the {name} (compute capability {cc_text})")
    return ok("; ".join([text, *warnings]))


# REMEMBERED_IMAGE: read by the runner, so `fab compat` alone checks the host's image.
STEP = Step("compat", run, facts=(GPUS, REMEMBERED_IMAGE))
