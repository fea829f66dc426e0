"""`runtime: none` on the real Slurm: no container. The job loads python/3.11 with the real
Lmod (Debian's lmod; the batch shell sources its init, as a login shell would), builds a
venv in node-local scratch, installs the requirements from a local wheelhouse only
(`--no-index`), stages data and runs the command, which finds its places in WORKBENCH_*.

The wheelhouse, the requirements file, the code and output dirs carry hostile names:
they reach pip, cp, tar and cd literally, and no marker file appears.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import Connection

from cluster import tasks as slurm
from tests.support.hostile import markers_found, one_line
from tests.support.python_image import build_wheel
from tests.support.real_parts import skip_or_fail
from tests.support.slurm_cluster import ACCOUNT, PARTITION
from tests.support.slurm_login_node import LoginNode
from tests.support.slurm_python_parts import PYTHON_MODULE, lmod_missing

pytestmark = pytest.mark.slow

REPORT = """\
set -e
echo "python3=$(command -v python3)"
echo "module=$WORKBENCH_TEST_PYTHON_MODULE"
echo "venv-home=$(sed -n 's/^home = //p' "$VIRTUAL_ENV/pyvenv.cfg")"
python3 -c 'import sys, wbtiny; print("wbtiny", wbtiny.VERSION, "from", sys.prefix)'
echo "cwd=$PWD"
cat "$WORKBENCH_DATA/sub/file.txt"
echo "done in $SLURM_JOB_ID" > "$WORKBENCH_OUTPUT/result"
"""


@pytest.fixture(autouse=True)
def no_markers() -> Iterator[None]:
    assert markers_found() == []
    yield
    assert markers_found() == []


def test_a_runtime_none_job_from_a_local_wheelhouse_runs_to_completed(
        login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]) -> None:
    why = lmod_missing()
    if why:
        skip_or_fail(why)
    home = login_node.home
    value = one_line(90)
    wheels, requirements = home / f"wheels {value}", home / f"req {value}.txt"
    code, output = home / f"code {value}", home / f"out {value}"
    # The hostile pieces hold "/": each of these is a few directories deep.
    for directory in (wheels, code, output, requirements.parent, home / "none-src" / "sub"):
        directory.mkdir(parents=True, exist_ok=True)
    build_wheel(wheels)  # wbtiny 0.1: on no index anywhere, only in this wheelhouse
    requirements.write_text("wbtiny==0.1\n")
    (home / "none-src" / "sub" / "file.txt").write_text("staged for the venv job\n")
    with tarfile.open(home / "none-data.tar", "w") as tar:
        tar.add(home / "none-src" / "sub", arcname="sub")
    subprocess.run(["chown", "-R", login_node.sshd.user, str(home)], check=True)

    slurm.submit(conn, runtime="none", account=ACCOUNT, partition=PARTITION, time="00:05:00",
                 name="venv-job", jobs_dir="none-jobs", module=[PYTHON_MODULE],
                 requirements=str(requirements.relative_to(home)), wheelhouse=str(wheels),
                 code=f"~/{code.relative_to(home)}", output_dir=str(output.relative_to(home)),
                 stage_data="none-data.tar", command=REPORT)
    job_id = capsys.readouterr().out.strip()
    state = login_node.wait_for_state(job_id, {"COMPLETED", "FAILED"}, timeout=120)
    log = (home / "none-jobs" / "logs" / f"venv-job-{job_id}.out").read_text()
    assert state == "COMPLETED", log
    scratch = f"/tmp/workbench-{login_node.sshd.user}-{job_id}"
    module_bin = f"{home.parent}/modules/python-3.11/bin"
    assert log.splitlines() == [
        f"gpu-workbench: staging none-data.tar into {scratch}/data",
        f"python3={scratch}/venv/bin/python3",
        f"module={PYTHON_MODULE}",
        f"venv-home={module_bin}",
        f"wbtiny 0.1 from {scratch}/venv",
        f"cwd={code}",
        "staged for the venv job",
    ]
    assert (output / "result").read_text() == f"done in {job_id}\n"
    assert not Path(scratch).exists()  # the job's own scratch, removed at its end
    slurm.status(conn, job_id)
    assert re.search(rf"^{job_id}\s+COMPLETED\s", capsys.readouterr().out, re.M)


def test_a_missing_wheel_fails_the_job_with_pips_words_not_a_download(
        login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]) -> None:
    """--no-index: a requirement the wheelhouse lacks is an error, not a trip to PyPI."""
    why = lmod_missing()
    if why:
        skip_or_fail(why)
    home = login_node.home
    (home / "empty-wheels").mkdir()
    (home / "needs-six.txt").write_text("six\n")
    subprocess.run(["chown", "-R", login_node.sshd.user, str(home / "empty-wheels"),
                    str(home / "needs-six.txt")], check=True)
    slurm.submit(conn, runtime="none", account=ACCOUNT, partition=PARTITION, time="00:05:00",
                 name="no-wheel", jobs_dir="no-wheel-jobs", module=[PYTHON_MODULE],
                 requirements="needs-six.txt", wheelhouse="empty-wheels",
                 command="echo should-not-run")
    job_id = capsys.readouterr().out.strip()
    state = login_node.wait_for_state(job_id, {"COMPLETED", "FAILED"}, timeout=120)
    log = (home / "no-wheel-jobs" / "logs" / f"no-wheel-{job_id}.out").read_text()
    assert state == "FAILED", log
    assert "No matching distribution found for six" in log
    assert "should-not-run" not in log
