"""Step 7: a GPU is visible on the host (`nvidia-smi`) and inside a container
(`docker run --rm --gpus all IMAGE nvidia-smi`); when not, say why."""

from __future__ import annotations

import json

from bootstrap.gpu_diagnosis import GpuProbe, diagnose
from bootstrap.remembered_image import REMEMBERED_IMAGE
from bootstrap.shell import Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, ok, skipped

# After the line that sets $wb_image.
PROBE = Sh(r"""
say() { printf '\n@@%s\n' "$1"; }
say host_smi
if command -v nvidia-smi >/dev/null 2>&1; then
  out=$(timeout 60 nvidia-smi -L 2>&1); echo "rc=$?"; echo "$out" | head -n 8
else echo absent; fi
say driver
if [ -e /proc/driver/nvidia/version ]; then echo yes; else echo no; fi
say toolkit
for b in nvidia-ctk nvidia-container-runtime-hook nvidia-container-cli; do command -v "$b"; done
say runtimes
docker info --format '{{json .Runtimes}}' 2>/dev/null || echo '{}'
say container
out=$(timeout 900 docker run --rm --gpus all "$wb_image" nvidia-smi -L 2>&1); echo "rc=$?"
echo "$out" | tail -n 8
""")


def run(ctx: HostContext) -> StepOutcome:
    if ctx.options.skip_check:
        return skipped("--skip-check")
    image = ctx.options.image_ref
    result = ctx.remote.run(sh("wb_image={image}", image=image) + PROBE, timeout=1200)
    s = result.sections()
    host = s.get("host_smi", "absent").splitlines() or ["absent"]
    container = s.get("container", "rc=1").splitlines() or ["rc=1"]
    try:
        runtimes = sorted(json.loads(s.get("runtimes", "{}") or "{}"))
    except json.JSONDecodeError:
        runtimes = []
    probe = GpuProbe(
        host_smi_present=host[0] != "absent",
        host_smi_rc=int(host[0].removeprefix("rc=")) if host[0].startswith("rc=") else None,
        host_smi_output="\n".join(host[1:]),
        container_rc=int(container[0].removeprefix("rc=")) if container[0].startswith("rc=")
        else None,
        container_output="\n".join(container[1:]),
        runtimes=runtimes,
        toolkit_bins=s.get("toolkit", "").split(),
        driver_loaded=s.get("driver", "").strip() == "yes",
    )
    problems = diagnose(probe)
    if problems:
        raise StepFailed("GPU check failed: " + "; ".join(problems))
    gpus = [ln for ln in probe.host_smi_output.splitlines() if ln.startswith("GPU ")]
    return ok(f"{len(gpus)} GPU(s) on the host and in {image}: "
              + (gpus[0] if gpus else ""))


# No facts: it probes the GPU at the end, after the container step changed things.
# REMEMBERED_IMAGE: read by the runner, so `fab check` alone runs the host's image.
STEP = Step("check", run, facts=(REMEMBERED_IMAGE,))
