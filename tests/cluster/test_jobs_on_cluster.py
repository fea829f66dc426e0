"""The slurm tasks against a real Slurm behind a real sshd login node.

Jobs run the busybox charliecloud image with ch-run, on a node whose "gpu"
GRES is two stand-in devices. Nothing here is mocked: sbatch, squeue, sacct,
scontrol and scancel answer from slurmctld/slurmdbd, over SSH.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fabric import Connection
from invoke.exceptions import Exit

from cluster import tasks as slurm
from tests.support.slurm_cluster import ACCOUNT, PARTITION
from tests.support.slurm_login_node import LoginNode

pytestmark = pytest.mark.slow


def submit(conn: Connection, capsys: pytest.CaptureFixture[str], **options: object) -> str:
    """Run the slurm.submit task as fab would; returns the job id it printed."""
    slurm.submit(conn, **options)
    out = capsys.readouterr().out.strip().splitlines()
    assert out and out[-1].isdigit(), out
    return out[-1]


def status_rows(conn: Connection, capsys: pytest.CaptureFixture[str], job_id: str) -> list[str]:
    slurm.status(conn, job_id)
    return capsys.readouterr().out.strip().splitlines()


def busybox_job(node: LoginNode, name: str, command: object, **extra: object) -> dict[str, object]:
    options: dict[str, object] = {
        "runtime": "charliecloud",
        "image": str(node.busybox_image),
        "account": ACCOUNT,
        "partition": PARTITION,
        "time": "00:05:00",
        "name": name,
        "command": command,
        "jobs_dir": f"jobs-{name}",
    }
    options.update(extra)
    return options


def wait_for_status(
    conn: Connection,
    capsys: pytest.CaptureFixture[str],
    job_id: str,
    want: str,
    timeout: float = 60,
) -> list[str]:
    """Poll slurm.status (the task under test) until every row shows `want`."""
    deadline = time.monotonic() + timeout
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = status_rows(conn, capsys, job_id)[1:]
        if rows and all(row.split()[1] == want for row in rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never reached {want}: {rows}")


def scontrol_fields(node: LoginNode, job_id: str) -> dict[str, str]:
    out = node.run_as_user(f"scontrol show job -o {job_id}")
    assert out.returncode == 0, out.stderr
    return dict(part.split("=", 1) for part in out.stdout.split() if "=" in part)


def test_gpu_job_runs_to_completed_with_the_requested_limits_and_its_logs(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(
        conn,
        capsys,
        **busybox_job(
            login_node,
            "gpujob",
            'echo "gpus=$CUDA_VISIBLE_DEVICES job=$SLURM_JOB_ID"; hostname',
            gpus="1",
            time="00:07:00",
        ),
    )
    # What slurmctld recorded is what the user asked for.
    fields = scontrol_fields(login_node, job_id)
    assert fields["Account"] == ACCOUNT
    assert fields["Partition"] == PARTITION
    assert fields["TimeLimit"] == "00:07:00"
    assert fields["TresPerNode"] == "gres:gpu:1"
    assert "gres/gpu=1" in fields["TRES"]

    rows = wait_for_status(conn, capsys, job_id, "COMPLETED")
    assert rows[0].split()[0] == job_id

    slurm.logs(conn, job_id, jobs_dir="jobs-gpujob")
    log = capsys.readouterr().out
    # Slurm bound one of the two stand-in GPUs to the job: index 0.
    assert f"gpus=0 job={job_id}" in log


def test_a_long_job_is_cancelled(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(conn, capsys, **busybox_job(login_node, "longjob", "sleep 600"))
    login_node.wait_for_state(job_id, {"RUNNING"})
    slurm.cancel(conn, job_id)
    assert capsys.readouterr().out.strip() == f"cancelled {job_id} (was RUNNING)"
    wait_for_status(conn, capsys, job_id, "CANCELLED")
    # The job's sleep is gone from the node, not only from the queue.
    assert "sleep 600" not in login_node.run_as_user("ps -eo args").stdout


def test_an_array_of_three_runs_every_task(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(
        conn,
        capsys,
        **busybox_job(
            login_node, "arrayjob", "echo task=$SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID",
            array="0-2",
        ),
    )  # fmt: skip
    rows = wait_for_status(conn, capsys, job_id, "COMPLETED")
    assert sorted(row.split()[0] for row in rows) == [f"{job_id}_{i}" for i in range(3)]
    slurm.logs(conn, job_id, jobs_dir="jobs-arrayjob")
    log = capsys.readouterr().out
    for task in range(3):
        assert f"task={task} of {job_id}" in log
    # One task's log alone.
    slurm.logs(conn, f"{job_id}_1", jobs_dir="jobs-arrayjob")
    assert capsys.readouterr().out.strip() == f"task=1 of {job_id}"


def test_quotes_spaces_and_dollars_reach_the_container_literally(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    # A shell command line: the user's quoting is read by the container's sh
    # only. Were any layer before it (sh -c over SSH, the batch script, sbatch)
    # to read it, the single-quoted $HOME would expand or the quotes would break.
    shell_line = """printf '<%s>\\n' "it's" 'two  spaces' '$HOME' "say \\"hi\\"" 'a;b|c'"""
    job_id = submit(conn, capsys, **busybox_job(login_node, "quoting", shell_line))
    # An argv list (job-file form): each word reaches the program as is.
    argv = ["printf", "[%s]\\n", "it's", "two  spaces", "$HOME", 'say "hi"', "`id`"]
    argv_job = submit(conn, capsys, **busybox_job(login_node, "quoting-argv", argv))
    wait_for_status(conn, capsys, job_id, "COMPLETED")
    wait_for_status(conn, capsys, argv_job, "COMPLETED")
    slurm.logs(conn, job_id, jobs_dir="jobs-quoting")
    assert capsys.readouterr().out.splitlines() == [
        "<it's>", "<two  spaces>", "<$HOME>", '<say "hi">', "<a;b|c>",
    ]  # fmt: skip
    slurm.logs(conn, argv_job, jobs_dir="jobs-quoting-argv")
    assert capsys.readouterr().out.splitlines() == [
        "[it's]", "[two  spaces]", "[$HOME]", '[say "hi"]', "[`id`]",
    ]  # fmt: skip


def test_data_tar_is_staged_to_node_local_scratch_and_removed_after(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = login_node.run_as_user(
        "mkdir -p stage-src/sub && echo payload > stage-src/sub/file.txt"
        " && tar -cf data.tar -C stage-src sub && mkdir -p results"
    )
    assert setup.returncode == 0, setup.stderr
    job_id = submit(
        conn,
        capsys,
        **busybox_job(
            login_node,
            "staged",
            "cat /workspace/data/sub/file.txt; pwd > /workspace/output/where; echo done",
            stage_data="data.tar",
            output_dir="results",
        ),
    )
    wait_for_status(conn, capsys, job_id, "COMPLETED")
    slurm.logs(conn, job_id, jobs_dir="jobs-staged")
    log = capsys.readouterr().out
    assert "payload" in log and "done" in log
    assert f"staging data.tar into /tmp/workbench-{login_node.sshd.user}-{job_id}/data" in log
    assert (login_node.home / "results" / "where").read_text().strip() == "/"
    # SLURM_TMPDIR is unset on this cluster, so the job made and removed its own dir.
    assert not Path(f"/tmp/workbench-{login_node.sshd.user}-{job_id}").exists()


def test_status_falls_back_to_sacct_after_the_job_left_the_queue(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(conn, capsys, **busybox_job(login_node, "tosacct", "echo from-the-past"))
    array_id = submit(
        conn,
        capsys,
        **busybox_job(
            login_node, "tosacct-array", "echo old-task-$SLURM_ARRAY_TASK_ID", array="1,3"
        ),
    )
    wait_for_status(conn, capsys, job_id, "COMPLETED")
    wait_for_status(conn, capsys, array_id, "COMPLETED")
    # slurmctld forgets a finished job MinJobAge (5 s here) after it ends, on
    # its next purge pass (up to a minute); from then on only slurmdbd knows.
    deadline = time.monotonic() + 90
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = status_rows(conn, capsys, job_id)
        if rows[1:] and rows[1].split()[-1] == "sacct":
            break
        time.sleep(2)
    assert re.match(rf"{job_id}\s+COMPLETED\s+\S+\s+00:05:00\s+0:0\s+sacct$", rows[1]), rows
    # The log is found from the script slurm.submit kept, not from scontrol.
    assert login_node.run_as_user(f"scontrol show job {job_id}").returncode != 0
    slurm.logs(conn, job_id, jobs_dir="jobs-tosacct")
    assert capsys.readouterr().out.strip() == "from-the-past"
    # An array's tasks are found from its --array line once scontrol forgot them.
    assert login_node.run_as_user(f"scontrol show job {array_id}").returncode != 0
    slurm.logs(conn, array_id, jobs_dir="jobs-tosacct-array")
    log = capsys.readouterr().out
    assert "old-task-1" in log and "old-task-3" in log


def test_status_of_an_unknown_job_is_one_line_from_slurm(conn: Connection) -> None:
    with pytest.raises(Exit) as failure:
        slurm.status(conn, "999999")
    message = str(failure.value.message)
    assert failure.value.code == 4
    assert message.startswith("slurm.status: job 999999 is not in the queue")
    assert "\n" not in message


def test_a_large_script_goes_over_in_one_write(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    # invoke's in_stream would feed this 60 kB script one character per 10 ms
    # poll (10 minutes); the task writes it to the channel at once.
    payload = "x" * 60_000
    started = time.monotonic()
    job_id = submit(
        conn, capsys, **busybox_job(login_node, "bigscript", f"printf %s {payload} | wc -c")
    )
    assert time.monotonic() - started < 10
    wait_for_status(conn, capsys, job_id, "COMPLETED")
    slurm.logs(conn, job_id, jobs_dir="jobs-bigscript")
    assert capsys.readouterr().out.strip() == "60000"


def test_logs_shows_the_error_file_when_stderr_is_kept_apart(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(
        conn,
        capsys,
        **busybox_job(
            login_node, "split", "echo to-out; echo to-err >&2", error="split-logs/%x-%j.err"
        ),
    )
    wait_for_status(conn, capsys, job_id, "COMPLETED")
    slurm.logs(conn, job_id, jobs_dir="jobs-split")
    assert capsys.readouterr().out.strip() == "to-out"
    slurm.logs(conn, job_id, jobs_dir="jobs-split", stderr=True)
    assert capsys.readouterr().out.strip() == "to-err"
    assert (login_node.home / "split-logs" / f"split-{job_id}.err").exists()


def test_logs_of_a_job_that_has_not_started_says_where_output_will_be(
    login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(
        conn, capsys, **busybox_job(login_node, "held", "echo never", sbatch=["--hold"])
    )
    try:
        with pytest.raises(Exit) as failure:
            slurm.logs(conn, job_id, jobs_dir="jobs-held")
        assert failure.value.code == 4
        assert str(failure.value.message) == (
            f"slurm.logs: no output yet at {login_node.home}/jobs-held/logs/held-{job_id}.out"
            f" (job {job_id} PENDING)"
        )
    finally:
        slurm.cancel(conn, job_id)
    assert capsys.readouterr().out.strip() == f"cancelled {job_id} (was PENDING)"
