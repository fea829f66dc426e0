"""The nvidia-smi stand-in the systemd hosts carry (tests/support/nvidia_smi_standin.py),
run as a program, against what NVIDIA's nvidia-smi manual documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.systemd_host import ComputeApp, GpuReading

STANDIN = Path(__file__).resolve().parents[1] / "support" / "nvidia_smi_standin.py"


@pytest.fixture
def readings(tmp_path: Path) -> Path:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({
        "gpus": [GpuReading(index=0, uuid="GPU-a").as_json(),
                 GpuReading(index=1, uuid="GPU-b", utilization_gpu=55,
                            memory_used_mib=1000).as_json()],
        "compute_apps": [ComputeApp(pid=7, process_name="python", used_memory_mib=1000,
                                    gpu_uuid="GPU-b").as_json()],
    }))
    return path


def smi(readings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STANDIN), *args], capture_output=True,
                          text=True, env={"NVIDIA_SMI_STANDIN_READINGS": str(readings)},
                          timeout=30)


def test_query_gpu_csv_variants(readings: Path) -> None:
    q = "--query-gpu=index,utilization.gpu,memory.used,memory.free"
    assert smi(readings, q, "--format=csv").stdout.splitlines() == [
        "index, utilization.gpu [%], memory.used [MiB], memory.free [MiB]",
        "0, 0 %, 0 MiB, 23028 MiB",
        "1, 55 %, 1000 MiB, 22028 MiB",
    ]
    # nounits drops the units from the values only; noheader drops the header line.
    assert smi(readings, q, "--format=csv,nounits").stdout.splitlines()[0].endswith("[MiB]")
    assert smi(readings, q, "--format=csv,noheader,nounits").stdout.splitlines() == [
        "0, 0, 0, 23028", "1, 55, 1000, 22028"]
    assert smi(readings, "-i", "1", "--query-gpu=uuid", "--format=csv,noheader").stdout == \
        "GPU-b\n"


def test_documented_field_without_a_reading_is_na_and_unknown_field_is_exit_2(
        readings: Path) -> None:
    assert smi(readings, "--query-gpu=power.draw", "--format=csv,noheader").stdout == \
        "[N/A]\n[N/A]\n"  # one row per GPU
    bad = smi(readings, "--query-gpu=gpu_temperature_please", "--format=csv")
    assert bad.returncode == 2
    assert 'Field "gpu_temperature_please" is not a valid field to query.' in bad.stdout
    # --format=csv is mandatory for the query options.
    assert smi(readings, "--query-gpu=index").returncode == 2


def test_compute_apps_and_list(readings: Path) -> None:
    q = "--query-compute-apps=pid,process_name,used_memory"
    assert smi(readings, q, "--format=csv,noheader,nounits").stdout == "7, python, 1000\n"
    assert smi(readings, "-i", "0", q, "--format=csv,noheader").stdout == ""
    assert smi(readings, "-L").stdout.splitlines() == [
        "GPU 0: NVIDIA A10G (UUID: GPU-a)", "GPU 1: NVIDIA A10G (UUID: GPU-b)"]
    assert smi(readings, "-i", "9", "-L").returncode == 6


def test_broken_or_missing_driver_exits_9_with_nvidias_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"broken": True}))
    for path in (broken, tmp_path / "missing.json"):
        result = smi(path, "--query-gpu=utilization.gpu", "--format=csv")
        assert result.returncode == 9
        assert result.stdout.startswith("NVIDIA-SMI has failed because it couldn't "
                                        "communicate with the NVIDIA driver.")
