"""slurm.jupyter against the real Slurm, through the login node's real sshd, with real
JupyterLab and jupyter_server from PyPI's wheels (tests.support.slurm_python_parts.py).

The server is reached the way a user reaches it: the tunnel command the task prints,
run as printed, through the login node's sshd, then HTTP with the printed token. While
it runs, the token is looked for where others could see it: every process's command
line (/proc/*/cmdline, ps), the job's processes' environment, squeue, scontrol (the job
and its batch script), the job's log, and every file under the user's home, the job's
scratch and the cluster's own directories (only mode 0600-style files may hold it).
"""

from __future__ import annotations

import pwd
import re
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from fabric import Connection

from cluster import tasks as slurm
from tests.support.loopback_sshd import free_loopback_port
from tests.support.real_parts import skip_or_fail
from tests.support.slurm_cluster import ACCOUNT, PARTITION
from tests.support.slurm_login_node import LoginNode
from tests.support.slurm_python_parts import JUPYTER_SERVER, jupyter_image, lmod_missing, wheelhouse

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
FAB = PROJECT / ".venv" / "bin" / "fab"


def fab(node: LoginNode, *args: str) -> list[str]:
    """The fab command line as a user types it (the node's key pinned through -S)."""
    return [str(FAB), "-S", str(node.sshd.ssh_config), "-H", node.sshd.host_string,
            "-i", str(node.sshd.client_key), *args]


def run_fab(node: LoginNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fab(node, *args), cwd=PROJECT, capture_output=True, text=True,
                          timeout=300)


def get(url: str, token: str | None = None) -> tuple[int, str]:
    """HTTP GET through nothing but the given URL (no proxy); (status, body), status 0
    when nothing answers (through a tunnel: ssh resets the connection)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


@pytest.fixture
def tunnel() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Tunnels a test opened; closed (by their pid) after it."""
    opened: list[subprocess.Popen[bytes]] = []
    yield opened
    for process in opened:
        process.terminate()
        process.wait(timeout=10)


def open_tunnel(command: str, local_port: int, opened: list[subprocess.Popen[bytes]],
                extra: tuple[str, ...] = ()) -> None:
    """Run the printed ssh command; return once its local port forwards."""
    argv = shlex.split(command)
    process = subprocess.Popen([argv[0], *extra, *argv[1:]], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    opened.append(process)
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"the tunnel exited: {process.communicate()[1]!r}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", local_port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"{command} never listened on {local_port}")


def refuses(address: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((address, port)) != 0


def until(check: Callable[[], bool], what: str, attempts: int = 300) -> None:
    """Poll a condition (bounded; a hang becomes a failure, not a timing assertion)."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


def token_exposures(node: LoginNode, job_id: str, token: str) -> list[str]:
    """Everywhere another user could see the token (empty is what we want)."""
    seen: list[str] = []
    needle = token.encode()
    uid = pwd.getpwnam(node.sshd.user).pw_uid
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                seen.append(f"/proc/{proc.name}/cmdline")
            if proc.stat().st_uid == uid and needle in (proc / "environ").read_bytes():
                seen.append(f"/proc/{proc.name}/environ")
        except OSError:
            continue  # the process ended while we looked
    for what, command in (
        ("ps", "ps -eo args"),
        ("squeue", f"squeue -h -j {job_id} -o %all"),
        ("scontrol show job", f"scontrol show job -dd {job_id}"),
        ("batch script", f"scontrol write batch_script {job_id} -"),
    ):
        out = node.run_as_user(command)
        assert out.returncode == 0, (command, out.stderr)
        if token in out.stdout:
            seen.append(what)
    return seen


def files_holding(token: str, roots: list[Path]) -> dict[Path, int]:
    """{file: mode} for every regular file under roots whose bytes hold the token."""
    found: dict[Path, int] = {}
    for root in roots:
        for path in root.rglob("*"):
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                if token.encode() in path.read_bytes():
                    found[path] = path.stat().st_mode & 0o777
            except OSError:
                continue  # removed while we walked
    return found


def readable_by_another_user(paths: list[Path]) -> list[Path]:
    """The paths `nobody` can open: mode bits and every directory above count, as for
    any other user of the cluster."""
    return [path for path in paths
            if subprocess.run(["runuser", "-u", "nobody", "--", "head", "-c", "1", str(path)],
                              capture_output=True).returncode == 0]


def job_file(tmp_path: Path, **options: object) -> Path:
    path = tmp_path / "jupyter.yaml"
    path.write_text(yaml.safe_dump({"account": ACCOUNT, "partition": PARTITION, **options}))
    return path


def test_jupyterlab_in_charliecloud_answers_through_the_printed_tunnel_and_goes_with_cancel(
        login_node: LoginNode, tmp_path: Path,
        tunnel: list[subprocess.Popen[bytes]]) -> None:
    """Held first: the task says Slurm's reason while it waits, then serves once released."""
    image = jupyter_image()
    jobs = "jupyter-ch-jobs"
    spec = job_file(tmp_path, name="jupyter-ch", time="00:10:00", runtime="charliecloud",
                    image=str(image), jobs_dir=jobs, sbatch=["--hold"])
    local_port = free_loopback_port()
    task = subprocess.Popen(fab(login_node, "slurm.jupyter", "--job-file", str(spec),
                                "--local-port", str(local_port), "--wait", "300"),
                            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert task.stderr is not None
    submitted = task.stderr.readline()
    assert submitted.startswith("submitted batch job "), submitted
    job_id = submitted.split()[3]
    waiting = task.stderr.readline()
    assert waiting == f"job {job_id} is PENDING (JobHeldUser); waiting up to 300 s\n"
    released = login_node.run_as_user(f"scontrol release {job_id}")
    assert released.returncode == 0, released.stderr
    out, err = task.communicate(timeout=300)
    assert task.returncode == 0, err
    assert f"job {job_id}: JupyterLab answers on " in err.splitlines()[-1]
    tunnel_line, url = out.splitlines()
    token = url.rsplit("token=", 1)[1]
    node_addr = tunnel_line.split(f"{local_port}:", 1)[1].split(":")[0]
    node_port = int(tunnel_line.split(f"{local_port}:{node_addr}:", 1)[1].split()[0])
    assert shlex.split(tunnel_line) == [
        "ssh", "-F", str(login_node.sshd.ssh_config), "-i", str(login_node.sshd.client_key),
        "-p", str(login_node.sshd.port), "-N", "-L", f"{local_port}:{node_addr}:{node_port}",
        f"{login_node.sshd.user}@127.0.0.1"]
    assert url == f"http://localhost:{local_port}/lab?token={token}"
    # The node's Slurm address: what the login node reaches it by.
    assert node_addr == "127.0.0.1"

    # Nobody else sees the token: not in any process's argv or the job's environment,
    # not in what Slurm shows, not in the log, only in files that are the user's alone.
    assert token_exposures(login_node, job_id, token) == []
    log = login_node.home / jobs / "logs" / f"jupyter-ch-{job_id}.out"
    assert "Jupyter Server" in log.read_text() and token not in log.read_text()
    scratch = Path(f"/tmp/workbench-{login_node.sshd.user}-{job_id}")
    state = login_node.home / jobs / "jupyter" / job_id
    holding = files_holding(token, [login_node.home, scratch, login_node.cluster.root])
    # Ours (0600), and the server's own runtime files in our 0700 scratch dir.
    assert holding[state / "token"] == holding[scratch / "jupyter" / "token"] == 0o600
    assert any(path.name.startswith("jpserver-") for path in holding), holding
    for directory in (state, scratch / "jupyter"):
        assert directory.stat().st_mode & 0o077 == 0
    assert readable_by_another_user(list(holding)) == []
    # The check can see a readable file: the job's log is one (and holds no token).
    assert readable_by_another_user([log]) == [log]

    # The printed tunnel, as printed, through the login node's sshd.
    open_tunnel(tunnel_line, local_port, tunnel)
    base = f"http://localhost:{local_port}"
    assert get(f"{base}/api/status", token)[0] == 200
    assert get(f"{base}/api/status")[0] == 403
    status, page = get(url)
    assert status == 200 and "<title>JupyterLab</title>" in page

    # --attach finds the same server again.
    again = run_fab(login_node, "slurm.jupyter", "--attach", job_id, "--job-file", str(spec),
                    "--local-port", str(local_port))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [tunnel_line, url]

    cancelled = run_fab(login_node, "slurm.cancel", job_id)
    assert cancelled.stdout.strip() == f"cancelled {job_id} (was RUNNING)", cancelled.stderr
    login_node.wait_for_state(job_id, {"CANCELLED"})
    until(lambda: refuses(node_addr, node_port), "the server stopped listening")
    assert get(f"{base}/api/status", token) == (0, "")
    until(lambda: not state.exists() and not scratch.exists(),
          "the job removed its token files")
    # Cancelling what already ended is fine, and says so.
    late = run_fab(login_node, "slurm.cancel", job_id)
    assert late.returncode == 0, late.stderr
    assert late.stdout.strip() == (
        f"job {job_id} already ended (CANCELLED); nothing to cancel"), late.stdout


def test_jupyter_server_in_a_venv_from_the_modules_python_ends_at_the_time_limit(
        login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, tunnel: list[subprocess.Popen[bytes]]) -> None:
    """runtime none: real Lmod loads python/3.11, the job builds a venv in scratch from the
    wheelhouse (--no-index) and serves the plain jupyter_server; Slurm's time limit ends
    it, and a cancel after that is fine."""
    why = lmod_missing()
    if why:
        skip_or_fail(why)
    wheels = wheelhouse()
    home = login_node.home
    (home / "venv-jupyter").mkdir()
    (home / "venv-jupyter" / "requirements.txt").write_text(f"{JUPYTER_SERVER}\n")
    subprocess.run(["chown", "-R", login_node.sshd.user, str(home / "venv-jupyter")], check=True)
    local_port = free_loopback_port()
    slurm.jupyter(conn, runtime="none", account=ACCOUNT, partition=PARTITION, time="1",
                  name="jupyter-venv", jobs_dir="jupyter-venv-jobs", module=["python/3.11"],
                  requirements="venv-jupyter/requirements.txt", wheelhouse=str(wheels),
                  code="venv-jupyter", local_port=str(local_port), wait="300")
    out, err = capsys.readouterr()
    job_id = re.search(r"submitted batch job (\d+)", err)[1]  # type: ignore[index]
    tunnel_line, url = out.splitlines()
    assert url.startswith(f"http://localhost:{local_port}/?token=")
    token = url.rsplit("=", 1)[1]
    assert f"Jupyter Server answers on {socket.gethostname().split('.')[0]} " in err
    assert "it ends with the job, at its time limit (1:00)" in err
    open_tunnel(tunnel_line, local_port, tunnel, extra=("-F", str(login_node.sshd.ssh_config)))
    status, body = get(f"http://localhost:{local_port}/api/contents", token)
    assert status == 200 and '"requirements.txt"' in body  # served from the code dir
    assert token_exposures(login_node, job_id, token) == []

    # The venv came from the module's Python, in node-local scratch.
    scratch = Path(f"/tmp/workbench-{login_node.sshd.user}-{job_id}")
    venv_home = (scratch / "venv" / "pyvenv.cfg").read_text()
    assert f"home = {login_node.home.parent}/modules/python-3.11/bin" in venv_home

    state = login_node.wait_for_state(job_id, {"TIMEOUT"}, timeout=150)
    assert state == "TIMEOUT"
    until(lambda: not (home / "jupyter-venv-jobs" / "jupyter" / job_id).exists()
          and not scratch.exists(), "the job removed its files at the time limit")
    assert get(f"http://localhost:{local_port}/api/status", token) == (0, "")
    slurm.cancel(conn, job_id)
    assert capsys.readouterr().out.strip() == (
        f"job {job_id} already ended (TIMEOUT); nothing to cancel")


def test_a_held_jupyter_job_says_why_it_waits_and_stops_waiting_at_wait(
        login_node: LoginNode, tmp_path: Path) -> None:
    spec = job_file(tmp_path, name="jupyter-held", time="00:05:00", runtime="charliecloud",
                    image=str(login_node.busybox_image), jobs_dir="jupyter-held-jobs",
                    sbatch=["--hold"])
    held = run_fab(login_node, "slurm.jupyter", "--job-file", str(spec), "--wait", "3")
    assert held.returncode == 5
    job_id = re.search(r"submitted batch job (\d+)", held.stderr)[1]  # type: ignore[index]
    lines = held.stderr.splitlines()
    assert lines[1] == f"job {job_id} is PENDING (JobHeldUser); waiting up to 3 s"
    assert lines[-1] == (
        f"slurm.jupyter: job {job_id} is still PENDING (JobHeldUser) after 3 s; it stays"
        f" queued: slurm.jupyter --attach {job_id} waits again, slurm.cancel {job_id} drops it")
    assert held.stdout == ""
    cancelled = run_fab(login_node, "slurm.cancel", job_id)
    assert cancelled.stdout.strip() == f"cancelled {job_id} (was PENDING)"


@pytest.mark.parametrize("case", ["no-python-in-the-image", "unknown-module"])
def test_a_job_that_fails_before_jupyter_answers_gives_its_log_tail_in_one_line(
        login_node: LoginNode, tmp_path: Path, case: str) -> None:
    if case == "unknown-module":
        why = lmod_missing()
        if why:
            skip_or_fail(why)
        options: dict[str, object] = {"runtime": "none", "modules": ["nosuchmodule/1.0"]}
        # Lmod's own words, carried onto the job's last line.
        says = ('gpu-workbench: module load nosuchmodule/1.0 failed: Lmod has detected the'
                ' following error: The following module(s) are unknown: "nosuchmodule/1.0"')
    else:
        options = {"runtime": "charliecloud", "image": str(login_node.busybox_image)}
        says = "error: can't execve(2): python3: No such file or directory"
    spec = job_file(tmp_path, name=f"jupyter-{case}", time="00:05:00",
                    jobs_dir=f"jupyter-{case}", **options)
    failed = run_fab(login_node, "slurm.jupyter", "--job-file", str(spec), "--wait", "120")
    assert failed.returncode == 5, failed.stderr
    job_id = re.search(r"submitted batch job (\d+)", failed.stderr)[1]  # type: ignore[index]
    message = failed.stderr.splitlines()[-1]
    assert message.startswith(f"slurm.jupyter: job {job_id} ended (FAILED) before Jupyter"
                              " answered; its log ends: "), message
    assert says in message
    assert not (login_node.home / f"jupyter-{case}" / "jupyter" / job_id).exists()


def test_more_gpus_than_the_partition_has_is_slurms_one_line(
        login_node: LoginNode, tmp_path: Path) -> None:
    spec = job_file(tmp_path, name="jupyter-greedy", runtime="charliecloud",
                    image=str(login_node.busybox_image), jobs_dir="jupyter-greedy", gpus=3)
    refused = run_fab(login_node, "slurm.jupyter", "--job-file", str(spec))
    assert refused.returncode == 4
    assert refused.stderr.strip() == (
        "slurm.jupyter: sbatch rejected the job: Batch job submission failed: Requested node"
        " configuration is not available")
