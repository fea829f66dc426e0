"""GPU check diagnoses, without a host (the host tests check the no-GPU case for real)."""

from __future__ import annotations

from bootstrap.gpu_diagnosis import GpuProbe, diagnose

WORKING = GpuProbe(host_smi_present=True, host_smi_rc=0,
                   host_smi_output="GPU 0: NVIDIA A10G (UUID: GPU-1)", container_rc=0,
                   container_output="GPU 0: NVIDIA A10G (UUID: GPU-1)",
                   runtimes=["nvidia", "runc"], toolkit_bins=["/usr/bin/nvidia-ctk"],
                   driver_loaded=True)


def probe(**changes: object) -> GpuProbe:
    return GpuProbe(**{**WORKING.__dict__, **changes})


def test_working_gpu_has_no_problems() -> None:
    assert diagnose(WORKING) == []


def test_driver_missing() -> None:
    problems = diagnose(probe(host_smi_present=False, host_smi_rc=None, driver_loaded=False))
    assert problems[0].startswith("host: no NVIDIA driver")


def test_driver_not_talking_to_gpu() -> None:
    out = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    problems = diagnose(probe(host_smi_rc=9, host_smi_output=out))
    assert "couldn't communicate" in problems[0] and "reboot" in problems[0]


def test_toolkit_missing() -> None:
    out = 'docker: Error response from daemon: could not select device driver "" with ' \
          "capabilities: [[gpu]]."
    problems = diagnose(probe(container_rc=125, container_output=out))
    assert problems == [p for p in problems if "Container Toolkit missing" in p]


def test_runtime_not_registered() -> None:
    problems = diagnose(probe(runtimes=["runc"]))
    assert problems == ["docker: nvidia runtime not registered with dockerd (run the "
                        "nvidia-runtime step)"]
