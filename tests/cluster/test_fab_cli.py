"""The real `fab` command line, as a user types it, against the real cluster."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.slurm_cluster import ACCOUNT, PARTITION
from tests.support.slurm_login_node import LoginNode

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
FAB = PROJECT / ".venv" / "bin" / "fab"
ECHO_GPUS = 'echo "cli gpus=$CUDA_VISIBLE_DEVICES name=$SLURM_JOB_NAME"'


def fab(node: LoginNode, *args: str) -> subprocess.CompletedProcess[str]:
    # -S: the node's key pinned in a known_hosts of the test's own (strict), so the
    # box's ~/.ssh/known_hosts is never read or written.
    return subprocess.run(
        [str(FAB), "-S", str(node.sshd.ssh_config), "-H", node.sshd.host_string,
         "-i", str(node.sshd.client_key), *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def job_file(login_node: LoginNode, tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "from-file",
                "account": ACCOUNT,
                "partition": PARTITION,
                "time": "00:04:00",
                "runtime": "charliecloud",
                "image": str(login_node.busybox_image),
                "jobs_dir": "cli-jobs",
                "command": ["sh", "-c", ECHO_GPUS],
            }
        )
    )
    return path


def test_fab_submit_status_logs_from_a_job_file_with_a_flag_on_top(
    login_node: LoginNode, job_file: Path
) -> None:
    if not FAB.exists():
        pytest.fail(f"{FAB} missing: run scripts/setup")
    submitted = fab(login_node, "slurm.submit", "--job-file", str(job_file), "--gpus", "2")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.isdigit(), submitted.stdout
    assert f"submitted batch job {job_id}" in submitted.stderr

    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        status = fab(login_node, "slurm.status", job_id)
        assert status.returncode == 0, status.stderr
        if "COMPLETED" in status.stdout:
            break
        time.sleep(1)
    assert status is not None and status.stdout.splitlines()[0].split()[:2] == ["JOBID", "STATE"]
    assert status.stdout.splitlines()[1].split()[:2] == [job_id, "COMPLETED"]

    # --job-file tells slurm.logs the jobs dir, whether or not scontrol still knows the job.
    logs = fab(login_node, "slurm.logs", job_id, "--job-file", str(job_file))
    assert logs.returncode == 0, logs.stderr
    # The --gpus flag beat the file (which asked for none): both stand-in GPUs.
    assert logs.stdout.strip() == "cli gpus=0,1 name=from-file"


def test_fab_reports_a_rejection_in_one_line_and_exits_non_zero(
    login_node: LoginNode, job_file: Path
) -> None:
    # An empty --account overrides the file's: the cluster wants one.
    rejected = fab(login_node, "slurm.submit", "--job-file", str(job_file), "--account", "")
    assert rejected.returncode == 4
    assert rejected.stdout == ""
    assert rejected.stderr.strip() == (
        "slurm.submit: sbatch rejected the job: Batch job submission failed: "
        "Invalid account or account/partition combination specified"
    )

    malformed = fab(login_node, "slurm.submit", "--job-file", str(job_file), "--time", "4:61")
    assert malformed.returncode == 2
    assert malformed.stderr.strip() == (
        "slurm.submit: --time: '4:61' is not a Slurm time limit "
        "(MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
    )


def test_fab_dry_run_prints_the_script_and_submits_nothing(
    login_node: LoginNode, job_file: Path
) -> None:
    before = login_node.run_as_user("squeue -h -t all -o %i").stdout.split()
    dry = fab(login_node, "slurm.submit", "--job-file", str(job_file), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("#!/bin/bash\n#SBATCH --job-name=from-file\n")
    assert f"#SBATCH --account={ACCOUNT}" in dry.stdout
    assert subprocess.run(["bash", "-n"], input=dry.stdout, text=True).returncode == 0
    assert login_node.run_as_user("squeue -h -t all -o %i").stdout.split() == before
