"""Bad input against the real cluster: one line with Slurm's own words, non-zero, nothing left.

Each case uses its own jobs dir in the login user's home, so "nothing
half-written" is checked as "that dir holds no file at all".
"""

from __future__ import annotations

import os
import subprocess

import pytest
from fabric import Connection
from invoke.exceptions import Exit

from cluster import tasks as slurm
from cluster.registry import cached_image_name
from tests.cluster.test_jobs_on_cluster import busybox_job
from tests.support.slurm_cluster import PARTITION_MAX_TIME
from tests.support.slurm_login_node import LoginNode

pytestmark = pytest.mark.slow


def job(node: LoginNode, jobs_dir: str, **extra: object) -> dict[str, object]:
    options = busybox_job(node, "bad", "echo should-not-run", jobs_dir=jobs_dir)
    options.update(extra)
    return options


def failed_submit(conn: Connection, options: dict[str, object]) -> Exit:
    with pytest.raises(Exit) as failure:
        slurm.submit(conn, **options)
    message = str(failure.value.message)
    assert "\n" not in message, message
    assert message.startswith("slurm.submit: ")
    return failure.value


def files_under(node: LoginNode, relative: str) -> list[str]:
    """Every entry below a dir of the login user's home ([] when it does not exist)."""
    root = node.home / relative
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def no_job_named(node: LoginNode, name: str) -> bool:
    out = node.run_as_user(f"squeue -h -t PD,R -n {name} -o %i")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("case", "options", "slurm_says"),
    [
        (
            "no-account",
            {"account": None},
            "Invalid account or account/partition combination specified",
        ),
        ("too-many-gpus", {"gpus": "3"}, "Requested node configuration is not available"),
        (
            "time-over-partition-max",
            {"time": "05:00:00"},
            "Requested time limit is invalid (missing or exceeds some limit)",
        ),
        ("unknown-feature", {"sbatch": ["--constraint=nvlink"]}, "Invalid feature specification"),
    ],
)
def test_sbatch_rejection_is_one_line_with_slurms_message_and_leaves_nothing(
    login_node: LoginNode,
    conn: Connection,
    case: str,
    options: dict[str, object],
    slurm_says: str,
) -> None:
    jobs_dir = f"rejected-{case}"
    spec = job(login_node, jobs_dir, name=case, **options)
    if options.get("account", "") is None:
        del spec["account"]
    failure = failed_submit(conn, spec)
    assert failure.code == 4
    assert str(failure.message) == (
        f"slurm.submit: sbatch rejected the job: Batch job submission failed: {slurm_says}"
    )
    # The script was written (atomically) and removed again once sbatch said no;
    # the log dir the job would have used was the only thing made.
    assert files_under(login_node, jobs_dir) == ["logs"]
    assert no_job_named(login_node, case)


def test_partition_limit_in_the_test_cluster_is_what_the_rejection_case_assumes() -> None:
    # The time-over-partition-max case above only means something if 05:00:00
    # is really over the partition's MaxTime.
    assert PARTITION_MAX_TIME == "02:00:00"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"time": "1:2:3:4"},
            "--time: '1:2:3:4' is not a Slurm time limit "
            "(MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)",
        ),
        ({"time": "2-25"}, "--time: '2-25' is not a Slurm time limit"),
        ({"gpus": "-1"}, "--gpus: must be 0 or more, not -1"),
        ({"gpus": "two"}, "--gpus: must be a whole number, not 'two'"),
        ({"array": "5-1"}, "--array: '5-1': range '5-1' runs backwards"),
        ({"name": "my job"}, "--name: 'my job' may hold letters, digits"),
        ({"output": "logs/my out.txt"}, "--output: 'logs/my out.txt' goes on an #SBATCH line"),
    ],
)
def test_malformed_options_fail_before_the_cluster_is_touched(
    login_node: LoginNode, conn: Connection, options: dict[str, object], message: str
) -> None:
    failure = failed_submit(conn, job(login_node, "never-made", **options))
    assert failure.code == 2
    assert str(failure.message).startswith("slurm.submit: " + message)
    assert not (login_node.home / "never-made").exists()


def test_a_runtime_missing_on_the_login_node_is_named(
    login_node: LoginNode, conn: Connection
) -> None:
    failure = failed_submit(conn, job(login_node, "no-runtime", runtime="apptainer"))
    assert failure.code == 3
    assert str(failure.message) == (
        "slurm.submit: apptainer not found on the login node "
        "(--runtime apptainer runs jobs with it); found: ch-run"
    )
    assert files_under(login_node, "no-runtime") == []


def test_an_image_that_was_never_pulled_is_named(login_node: LoginNode, conn: Connection) -> None:
    failure = failed_submit(
        conn, job(login_node, "no-image", image="example.org/lab/never-pulled:1", cache_dir="sif")
    )
    assert failure.code == 3
    assert str(failure.message) == (
        f"slurm.submit: image {login_node.home}/sif/example.org_lab_never-pulled_1 "
        "is not on the cluster; run slurm.pull first"
    )


def test_an_image_that_cannot_be_pulled_fails_with_the_tools_message_and_no_partial_file(
    login_node: LoginNode, conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # .invalid never resolves (RFC 6761), with or without internet access.
    secret = "registry-password-must-never-land-anywhere"
    monkeypatch.setenv("CH_IMAGE_USERNAME", "researcher")
    monkeypatch.setenv("CH_IMAGE_PASSWORD", secret)
    with pytest.raises(Exit) as failure:
        slurm.pull(conn, image="registry.invalid/lab/model:1", runtime="charliecloud",
                   cache_dir="sif")  # fmt: skip
    message = str(failure.value.message)
    assert failure.value.code == 4
    # ch-image's own words: it tried the registry and could not reach it.
    assert message.startswith(
        "slurm.pull: cannot pull registry.invalid/lab/model:1: error: GET failed: "
    ), message
    assert "host='registry.invalid'" in message
    assert "\n" not in message and secret not in message
    # No half-pulled image under any name, and the password is in no file the pull touched.
    assert files_under(login_node, "sif") == []
    storage = login_node.home.parent / "ch-image" / "storage"  # the session's CH_IMAGE_STORAGE
    assert (storage / "version").exists()  # ch-image really ran and initialised it
    grep = subprocess.run(
        ["grep", "-rl", secret, str(login_node.home), str(storage)],
        capture_output=True,
        text=True,
    )
    assert grep.stdout == "", grep.stdout


def test_pull_skips_an_image_already_in_the_cache(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    name = cached_image_name("docker.io/library/busybox:1.36", "charliecloud")
    cached = login_node.home / "shared-sif" / name
    name = f"shared-sif/{name}"
    copy = login_node.run_as_user(f"mkdir -p shared-sif && cp -a {login_node.busybox_image} {name}")
    assert copy.returncode == 0, copy.stderr
    before = os.stat(cached).st_mtime_ns
    slurm.pull(
        conn, image="docker.io/library/busybox:1.36", runtime="charliecloud", cache_dir="shared-sif"
    )
    assert capsys.readouterr().out.strip() == f"present {cached}"
    assert os.stat(cached).st_mtime_ns == before


def test_cancel_of_a_job_slurm_does_not_know_says_so(conn: Connection) -> None:
    # scancel alone prints nothing and exits 0 here; the task must not.
    with pytest.raises(Exit) as failure:
        slurm.cancel(conn, "987654")
    assert failure.value.code == 4
    assert str(failure.value.message) == (
        "slurm.cancel: job 987654 is not in the queue "
        "(slurm_load_jobs error: Invalid job id specified) and sacct has no record of it"
    )


def test_cancel_of_a_finished_job_says_it_already_ended_and_is_fine(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    slurm.submit(conn, **job(login_node, "finished", name="finished", command="true"))
    job_id = capsys.readouterr().out.strip()
    login_node.wait_for_state(job_id, {"COMPLETED"})
    # Whether slurmctld still holds the finished job or accounting alone knows it.
    slurm.cancel(conn, job_id)
    assert capsys.readouterr().out.strip() == (
        f"job {job_id} already ended (COMPLETED); nothing to cancel")
