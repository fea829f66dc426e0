"""slurm.jupyter without a cluster: the login node's poll under a real sh, with the real
curl and python3 asking a real HTTP server; the job's side of the batch script under bash.

The token must reach the server in a header, from stdin: never on a command line
(each external program here records its argv) and never in the batch script.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from cluster import remote_scripts
from cluster import tasks as slurm
from cluster.batch_script import render_batch_script
from cluster.job import JobSpec, validate
from cluster.jupyter_job import LAUNCHER
from cluster.jupyter_session import Endpoint, jupyter_url, one_line_tail, parse_poll

TOKEN = "0123456789abcdef" * 4


class _Server(http.server.BaseHTTPRequestHandler):
    """Answers like jupyter_server's /api/status: 200 with the right token, else 403."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen.append((self.path, auth))
        self.send_response(200 if auth == f"token {TOKEN}" else 403)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    _Server.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def recording(bin_dir: Path, name: str, real: str) -> None:
    """`name` on PATH: writes its argv to $HOME/NAME-argv, then execs the real program."""
    (bin_dir / name).write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >>"$HOME/{name}-argv"\nexec {real} "$@"\n')
    (bin_dir / name).chmod(0o755)


def poll(home: Path, *, squeue: str, curl: bool = True) -> str:
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '%s' '{squeue}'\n")
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'FAILED'\n")
    for name in ("squeue", "sacct"):
        (bin_dir / name).chmod(0o755)
    (bin_dir / "head").unlink(missing_ok=True)
    (bin_dir / "head").symlink_to("/usr/bin/head")
    recording(bin_dir, "python3", "/usr/bin/python3")
    (bin_dir / "curl").unlink(missing_ok=True)
    if curl:
        recording(bin_dir, "curl", "/usr/bin/curl")
    snippet = remote_scripts.jupyter_poll_snippet("12", "~/jobs").text
    done = subprocess.run(["/bin/sh", "-c", snippet], capture_output=True, text=True,
                          env={"HOME": str(home), "PATH": str(bin_dir)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def job_state(home: Path, port: int, token: str = TOKEN) -> None:
    state = home / "jobs" / "jupyter" / "12"
    state.mkdir(parents=True, exist_ok=True)
    (state / "endpoint").write_text(f"127.0.0.1 {port} /lab node1\n")
    (state / "token").write_text(token)  # as the job writes it: no newline


@pytest.mark.parametrize("curl", [True, False], ids=["curl", "python3"])
def test_the_poll_asks_with_the_token_in_a_header_never_in_an_argv(
        tmp_path: Path, server: int, curl: bool) -> None:
    job_state(tmp_path, server)
    out = poll(tmp_path, squeue="RUNNING|None|node1|30:00", curl=curl)
    assert out.splitlines() == ["state RUNNING|None|node1|30:00",
                                f"endpoint 127.0.0.1 {server} /lab node1", "answer 200",
                                f"token {TOKEN}"]
    assert _Server.seen == [("/api/status?no_track_activity=1", f"token {TOKEN}")]
    tool = "curl" if curl else "python3"
    argv = (tmp_path / f"{tool}-argv").read_text()
    assert f"http://127.0.0.1:{server}/api/status?no_track_activity=1" in argv
    assert TOKEN not in argv
    assert not (tmp_path / ("python3-argv" if curl else "curl-argv")).exists()


def test_a_server_that_refuses_the_token_gets_no_token_line(tmp_path: Path, server: int) -> None:
    job_state(tmp_path, server, token="f" * 64)
    out = poll(tmp_path, squeue="RUNNING|None|node1|30:00")
    assert out.splitlines()[-1] == "answer 403"
    assert "token" not in out


def test_before_the_endpoint_and_after_the_queue_only_the_state(tmp_path: Path) -> None:
    assert poll(tmp_path, squeue="PENDING|JobHeldUser||30:00") == (
        "state PENDING|JobHeldUser||30:00\n")
    # Gone from squeue: sacct says how it ended.
    assert parse_poll(poll(tmp_path, squeue="")).state == "FAILED"


def test_nothing_listening_yet_reads_as_000(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    job_state(tmp_path, closed)
    assert parse_poll(poll(tmp_path, squeue="RUNNING|None|node1|30:00")).answer == "000"


def test_the_url_and_a_log_tail_on_one_line() -> None:
    endpoint = Endpoint("10.0.0.5", 40000, "/lab", "gpu01")
    assert jupyter_url(8888, endpoint, TOKEN) == f"http://localhost:8888/lab?token={TOKEN}"
    assert jupyter_url(9000, replace(endpoint, path="/"), "t" * 20) == (
        "http://localhost:9000/?token=" + "t" * 20)
    assert one_line_tail("a\n\n b \nc\n\nd\n") == "b / c / d"
    assert one_line_tail("") == "(empty)"


# -- the job's side ---------------------------------------------------------------------------

def jupyter_script(**changes: object) -> str:
    spec = replace(JobSpec(runtime="charliecloud", image="/images/jupyter", account="lab",
                           name="jupyter"), **changes)  # type: ignore[arg-type]
    return render_batch_script(validate(spec, command_required=False), jupyter=True).text


def test_the_jupyter_script_parses_and_makes_its_token_where_only_the_user_reads_it() -> None:
    script = jupyter_script()
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "# Written by gpu-workbench `fab slurm.jupyter` (charliecloud)." in script
    assert "umask 077\n  od -An -N32 -tx1 /dev/urandom" in script
    assert 'chmod 700 -- "$state" "$scratch"/jupyter' in script
    # The launcher gets scratch and the address; the server the token file's path only.
    assert 'JUPYTER_TOKEN_FILE"] = os.path.join(here, "token")' in LAUNCHER
    assert "--ServerApp.token" not in script and "JUPYTER_TOKEN=" not in script
    # Removed when the script exits: the token's copy in the shared jobs dir.
    assert 'wb_remove+=("$state")' in script


def test_runtime_none_serves_from_the_venv_in_the_users_home() -> None:
    script = jupyter_script(runtime="none", image="", modules=("python/3.11",),
                            requirements="req.txt", wheelhouse="/wh")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "ch-run" not in script
    # The venv wrapper execs the launcher in the venv: scratch and $HOME as root dir.
    assert re.search(r"workbench-venv \\\n  \"\$scratch\"/venv \\\n  \"\$scratch\"/requirements"
                     r"\.txt \\\n  /wh \\\n  python3 -c ", script)
    assert script.rstrip().endswith('wait "$wb_server"')
    assert '  "$scratch" \\\n  "$wb_addr" \\\n  "$HOME" &\n' in script


def test_the_launcher_runs_jupyter_on_the_port_it_wrote(tmp_path: Path) -> None:
    """The launcher under the box's python3, with a stand-in `jupyter_server` module that
    prints the argv and the Jupyter variables it was started with."""
    (tmp_path / "jupyter").mkdir()
    fake = tmp_path / "site" / "jupyter_server"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import os, sys\nprint(sys.argv[1:])\n"
        "print(os.environ['JUPYTER_TOKEN_FILE'], os.environ['JUPYTER_RUNTIME_DIR'])\n")
    done = subprocess.run(["/usr/bin/python3", "-c", LAUNCHER, str(tmp_path), "127.0.0.1",
                           "/root dir"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    port, path = (tmp_path / "jupyter" / "port").read_text().split()
    assert path == "/"  # no jupyterlab on this PYTHONPATH: the plain server
    assert done.stdout.splitlines() == [
        str(["--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
             "--ServerApp.root_dir=/root dir"]),
        f"{tmp_path}/jupyter/token {tmp_path}/jupyter/runtime",
    ]


# -- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"local_port": "0"}, "--local-port: '0' is not a whole number from 1 to 65535"),
        ({"local_port": "65536"}, "--local-port: '65536' is not a whole number from 1 to 65535"),
        ({"wait": "-1"}, "--wait: '-1' is not a whole number from 1 to 604800"),
        ({"attach": "12x"}, "JOBID: '12x' is not a Slurm job id (123 or 123_4)"),
        ({"runtime": "none"}, "--image: '/i.sif' with --runtime none, which runs no container"),
        ({"wheelhouse": "/wh"}, "--wheelhouse: '/wh' without --requirements"),
    ],
)
def test_jupyter_options_are_checked_before_anything_is_sent(
        options: dict[str, str], message: str) -> None:
    with pytest.raises(Exit) as failure:
        slurm.jupyter(Context(), image="/i.sif", **options)
    assert failure.value.code == 2
    assert str(failure.value.message).startswith(f"slurm.jupyter: {message}")


def test_a_job_files_array_is_refused_and_its_command_not_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("image: /i.sif\narray: 0-3\ncommand: python train.py\n")
    with pytest.raises(Exit) as failure:
        slurm.jupyter(Context(), job_file=str(job))
    assert str(failure.value.message) == (
        "slurm.jupyter: --array: '0-3': a Jupyter job is one server; drop the array from the"
        " job file")
    job.write_text("image: /i.sif\ncommand: python train.py\n")
    slurm.jupyter(Context(), job_file=str(job), dry_run=True)
    script = capsys.readouterr().out
    assert "#SBATCH --job-name=jupyter\n" in script
    assert "train.py" not in script and "python3 -c " in script
