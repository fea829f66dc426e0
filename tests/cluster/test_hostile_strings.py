"""Hostile strings through every Slurm option that reaches a shell (login node or job).

Each value is refused before anything is sent (one line naming the option, exit
2), or it arrives literally: the batch script run under bash hands the exact
bytes to the runtime, tar and cp; the login-node snippets run under sh write
and name the exact paths; a real job on the real cluster reads and writes them.
No marker file (/tmp/pwned-...) ever appears. Decisions, option by option:

- command (string): literal, the container's `sh -c` gets it byte for byte;
  that shell running it is what a command is for. No layer before it reads it.
- command (list): literal, word for word.
- name: refused unless Slurm's job-name rule here (letters, digits, . _ + -):
  it goes on an #SBATCH line and into file names.
- code, data, output_dir, binds (host side), stage_data, requirements,
  cache_dir, image (a path): literal, relative ones under $HOME. Refused: a
  newline or NUL; for what is bound into the container (code, data,
  output_dir, binds) also ',' and ':', which apptainer's --bind splits on.
- jobs_dir: literal when --output is given; without it, the default log path
  under it goes on an #SBATCH line (unquotable), so it must then pass the
  same rule as --output or is refused with one line.
- image (a registry reference): refused unless an image reference by the rule
  the stack applies to containerImage.
- modules: refused unless a module name (letters, digits, . _ + / -).
- --sbatch: an #SBATCH line's text, read by sbatch, never by a shell (bash
  skips #SBATCH lines as comments): literal, in sbatch's own syntax (sbatch
  reads quotes there and refuses an unmatched one with its own one line); a
  newline or CR is refused.
- requirements, wheelhouse (runtime none or a container): literal, to cp and
  pip; a wheelhouse bound into a container is refused with ',' or ':' as the
  other binds are.
- slurm.jupyter's --local-port, --wait, --attach: refused unless a whole number
  in range (a job id), one line, before any connection. What the job writes
  back (its endpoint) is refused unless an address, a port and a path.
- the tunnel command slurm.jupyter prints: local paths (fab's -S config, -i
  key) in it are shell words a user's shell splits back into the exact paths.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fabric import Connection
from invoke.exceptions import Exit

from bootstrap.shell import Sh
from cluster import login_node, remote_scripts
from cluster import tasks as slurm
from cluster.batch_script import render_batch_script
from cluster.job import JobSpec, validate
from cluster.job_error import JobError
from cluster.jupyter_session import Endpoint, parse_poll, tunnel_command
from tests.support.hostile import hostile, markers_found, one_line
from tests.support.slurm_cluster import ACCOUNT, PARTITION
from tests.support.slurm_login_node import LoginNode

ALL = hostile(0)
IDS = [what for what, _ in ALL]
ONE_LINE = [(what, value) for what, value in ALL if "\n" not in value]
REGISTRY = "nvcr.io/nvidia/pytorch:24.05-py3"


@pytest.fixture(autouse=True)
def no_markers() -> Iterator[None]:
    assert markers_found() == []
    yield
    assert markers_found() == []


def base(**changes: object) -> JobSpec:
    return replace(JobSpec(command="true", image=REGISTRY, account="lab", partition="gpu"),
                   **changes)  # type: ignore[arg-type]


def refused(**changes: object) -> str:
    with pytest.raises(JobError) as failure:
        validate(base(**changes))
    message = str(failure.value)
    assert "\n" not in message
    return message


# --- refused before anything is sent ------------------------------------------------------

@pytest.mark.parametrize(("what", "value"), ALL, ids=IDS)
def test_names_modules_registry_images_and_bad_paths_are_refused_with_one_line(
        what: str, value: str) -> None:
    assert refused(name=value).startswith("--name: ")
    assert refused(modules=(value,)).startswith("--module: ")
    assert refused(image="docker://" + value).startswith(f"--image: 'docker://{value}' is not an"
                                                         .replace("\n", "\\n"))
    if "\n" in value:
        for option in ("code", "data", "output_dir", "stage_data", "requirements", "cache_dir",
                       "jobs_dir"):
            assert refused(**{option: "d " + value, "output": "o.out"}).startswith(
                f"--{option.replace('_', '-')}: path contains a newline or NUL")
        assert refused(binds=("/b " + value,)).startswith("--bind: path contains a newline")
        assert refused(wheelhouse="w " + value, requirements="r.txt").startswith(
            "--wheelhouse: path contains a newline")
        assert refused(image="./i " + value).startswith("--image: path contains a newline")
        assert refused(sbatch=("--comment=" + value,)).startswith("--sbatch: ")
        return
    for option in ("code", "data", "output_dir"):
        assert refused(**{option: "d,x " + value}).startswith(
            f"--{option.replace('_', '-')}: 'd,x {value}' is bound into the container")
    assert refused(binds=("/b:x " + value,)).startswith("--bind: '/b:x")
    assert refused(wheelhouse="w,x " + value, requirements="r").startswith(
        f"--wheelhouse: 'w,x {value}' is bound into the container")
    # Without a container nothing is bound: the same path is fine there.
    assert validate(base(runtime="none", image="", wheelhouse="w,x:" + value,
                         requirements="r")).wheelhouse == "w,x:" + value
    # The jobs dir holds the default #SBATCH --output path: there, only what sbatch reads.
    if re.fullmatch(r"[A-Za-z0-9._+/%~=@,:-]+", value):
        assert validate(base(jobs_dir=value)).jobs_dir == value
    else:
        assert refused(jobs_dir="jobs " + value).startswith("--jobs-dir: ")
        assert validate(base(jobs_dir="jobs " + value, output="o.out")).output == "o.out"
    assert refused(sbatch=("--comment=x\r" + value,)).startswith("--sbatch: ")


def test_pull_refuses_a_hostile_registry_reference_before_connecting() -> None:
    from invoke.context import Context

    for _, value in ALL:
        with pytest.raises(Exit) as failure:
            slurm.pull_image(Context(), "docker://" + value, "apptainer", "~/sif")
        assert failure.value.code == 2
        message = str(failure.value.message)
        assert message.startswith("slurm.pull: --image: ") and "\n" not in message


# --- the batch script under bash: every value reaches its command as given -----------------

STUBS = "".join(
    f"{name}() {{ printf '@@{name}\\0'; printf '%s\\0' \"$@\"; }}\n"
    for name in ("apptainer", "ch-run", "tar", "cp", "module")
)


def calls_of(spec: JobSpec, home: Path, path: str = "") -> tuple[dict[str, list[str]], str]:
    """{command: argv} of what the batch script ran (stubs print their argv), and stderr.
    `path`: directories of stand-in executables put first on PATH."""
    scratch = home / "scratch"
    scratch.mkdir(exist_ok=True)
    probe = STUBS + render_batch_script(validate(spec)).text
    proc = subprocess.run(["bash", "-c", probe], capture_output=True,
                          env={"HOME": str(home), "PATH": path + os.environ["PATH"],
                               "SLURM_TMPDIR": str(scratch), "SLURM_JOB_ID": "7"})
    assert proc.returncode == 0, proc.stderr
    calls: dict[str, list[str]] = {}
    current: list[str] = []
    for word in proc.stdout.decode().split("\0")[:-1]:
        if word.startswith("@@"):
            current = calls.setdefault(word[2:], [])
        else:
            current.append(word)
    return calls, proc.stderr.decode()


@pytest.mark.parametrize(("what", "value"), ALL, ids=IDS)
def test_the_command_reaches_the_container_byte_for_byte(what: str, value: str,
                                                         tmp_path: Path) -> None:
    calls, _ = calls_of(base(command=value, image="/i.sif"), tmp_path)
    assert calls["apptainer"][-3:] == ["sh", "-c", value]
    words = ("printf", "%s\\n", value, value.upper(), "")
    calls, _ = calls_of(base(command=words, image="/i.sif", runtime="charliecloud"), tmp_path)
    assert calls["ch-run"][-len(words):] == list(words)


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_every_path_reaches_apptainer_tar_and_cp_as_given(what: str, value: str,
                                                          tmp_path: Path) -> None:
    home, scratch = str(tmp_path), f"{tmp_path}/scratch/workbench"
    spec = base(
        command="true", runtime="apptainer", cache_dir=f"cache {value}", code=f"~/code {value}",
        output_dir=f"/out {value}", binds=(f"/opt/{value}:/mnt/{value}", f"rel {value}"),
        stage_data=f"data {value}.tar", requirements=f"/req {value}.txt",
    )
    calls, stderr = calls_of(spec, tmp_path)
    argv = calls["apptainer"]
    binds = [argv[i + 1] for i, word in enumerate(argv) if word == "--bind"]
    assert binds == [f"{home}/code {value}:/workspace/code", f"{scratch}/data:/workspace/data",
                     f"/out {value}:/workspace/output", f"{scratch}:/workspace/scratch",
                     f"/opt/{value}:/mnt/{value}", f"{home}/rel {value}"]
    assert f"{home}/cache {value}/nvcr.io_nvidia_pytorch_24.05-py3.sif" in argv
    assert calls["tar"] == ["-xf", f"{home}/data {value}.tar", "-C", f"{scratch}/data"]
    assert calls["cp"] == ["--", f"/req {value}.txt", f"{scratch}/requirements.txt"]
    assert stderr == f"gpu-workbench: staging data {value}.tar into {scratch}/data\n"
    # charliecloud: its own bind flag, an image path, data without staging.
    spec = base(command="true", runtime="charliecloud", image=f"./img {value}",
                data=f"/data {value}")
    argv = calls_of(spec, tmp_path)[0]["ch-run"]
    assert argv[:2] == ["-b", f"/data {value}:/workspace/data"]
    assert argv[2:4] == [f"{home}/./img {value}", "--"]


# python3 for a `runtime: none` job: records its argv; `-m venv DIR` makes a venv
# whose python records its own and whose activate script is empty.
STANDIN_PYTHON3 = r"""#!/bin/sh
printf '@@python3\0'; printf '%s\0' "$@"
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\nprintf "@@venv-python\\0"; printf "%%s\\0" "$@"\n' >"$3/bin/python"
  chmod +x "$3/bin/python"
  : >"$3/bin/activate"
fi
"""
# The command of a `runtime: none` job: where it runs, and the places it is given.
REPORT_PLACES = ("printf '@@command\\0'; printf '%s\\0' \"$PWD\" \"$WORKBENCH_CODE\" "
                 "\"$WORKBENCH_DATA\" \"$WORKBENCH_OUTPUT\" \"$WORKBENCH_SCRATCH\"")


@pytest.mark.parametrize(("what", "value"), ALL, ids=IDS)
def test_runtime_none_hands_requirements_wheelhouse_and_places_over_as_given(
        what: str, value: str, tmp_path: Path) -> None:
    """No container: cp, python3 -m venv, pip --no-index --find-links and the command's
    working dir and WORKBENCH_* get each path byte for byte; a newline is refused."""
    if "\n" in value:
        with pytest.raises(JobError, match=r"^--requirements: path contains a newline"):
            validate(base(runtime="none", image="", requirements=f"r {value}"))
        return
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "python3").write_text(STANDIN_PYTHON3)
    (stand_ins / "python3").chmod(0o755)
    (tmp_path / f"code {value}").mkdir(parents=True)
    scratch = f"{tmp_path}/scratch/workbench"
    spec = base(runtime="none", image="", command=REPORT_PLACES, code=f"code {value}",
                stage_data=f"/data {value}.tar", output_dir=f"~/out {value}",
                requirements=f"req {value}.txt", wheelhouse=f"/wheels {value}")
    calls, _ = calls_of(spec, tmp_path, path=f"{stand_ins}:")
    assert calls["cp"] == ["--", f"{tmp_path}/req {value}.txt", f"{scratch}/requirements.txt"]
    assert calls["tar"] == ["-xf", f"/data {value}.tar", "-C", f"{scratch}/data"]
    assert calls["python3"] == ["-m", "venv", f"{scratch}/venv"]
    assert calls["venv-python"] == ["-m", "pip", "install", "--quiet", "--no-input", "--no-index",
                                    "--find-links", f"/wheels {value}",
                                    "-r", f"{scratch}/requirements.txt"]
    assert calls["command"] == [f"{tmp_path}/code {value}", f"{tmp_path}/code {value}",
                                f"{scratch}/data", f"{tmp_path}/out {value}", scratch]
    # Without a wheelhouse, pip reads the index it is configured with.
    calls, _ = calls_of(replace(spec, wheelhouse=""), tmp_path, path=f"{stand_ins}:")
    assert calls["venv-python"] == ["-m", "pip", "install", "--quiet", "--no-input",
                                    "-r", f"{scratch}/requirements.txt"]


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_a_containers_wheelhouse_is_bound_as_given_and_pip_reads_it_there(
        what: str, value: str, tmp_path: Path) -> None:
    spec = base(command="true", image="/i.sif", requirements=f"req {value}.txt",
                wheelhouse=f"~/wheels {value}")
    argv = calls_of(spec, tmp_path)[0]["apptainer"]
    binds = [argv[i + 1] for i, word in enumerate(argv) if word == "--bind"]
    assert binds[-1] == f"{tmp_path}/wheels {value}:/workspace/wheelhouse"
    setup = argv.index("workbench-venv")
    assert argv[setup + 1:setup + 4] == ["/workspace/scratch/venv",
                                         "/workspace/scratch/requirements.txt",
                                         "/workspace/wheelhouse"]


@pytest.mark.parametrize(("what", "value"), ALL, ids=IDS)
def test_jupyter_refuses_hostile_port_wait_and_job_id_in_one_line(what: str, value: str) -> None:
    from invoke.context import Context

    for option, flag in (("local_port", "--local-port"), ("wait", "--wait"),
                         ("attach", "JOBID")):
        with pytest.raises(Exit) as failure:
            slurm.jupyter(Context(), image="/i.sif", **{option: value})
        message = str(failure.value.message)
        assert failure.value.code == 2
        assert message.startswith(f"slurm.jupyter: {flag}: ") and "\n" not in message


@pytest.mark.parametrize(("what", "value"), ALL, ids=IDS)
def test_fab_itself_refuses_hostile_whole_number_flags_in_one_line(what: str,
                                                                  value: str) -> None:
    """Through the real `fab` command line, where invoke parses the flags first (it would
    cast a flag with an int default, with a traceback); nothing connects: no host listens
    on port 1."""
    fab = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "fab"
    for flag, says in (("--local-port", "--local-port"), ("--wait", "--wait"),
                       ("--attach", "JOBID")):
        done = subprocess.run([str(fab), "-H", "me@127.0.0.1:1", "slurm.jupyter", "--image",
                               "/i.sif", flag, value], capture_output=True, text=True,
                              cwd=fab.parents[2], timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        message = done.stderr.strip()
        assert message.startswith(f"slurm.jupyter: {says}: ") and "\n" not in message, message
    done = subprocess.run([str(fab), "-H", "me@127.0.0.1:1", "slurm.logs", "12", "--lines", value],
                          capture_output=True, text=True, cwd=fab.parents[2], timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("slurm.logs: --lines: ")


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_an_endpoint_the_job_wrote_is_refused_unless_address_port_and_path(
        what: str, value: str) -> None:
    # One line: the poll snippet reads the endpoint file's first line only (`read`).
    good = "state RUNNING|None|vm|30:00\nendpoint 10.1.2.3 41234 /lab vm\nanswer 200\n"
    assert parse_poll(good).endpoint == Endpoint("10.1.2.3", 41234, "/lab", "vm")
    for bad in (f"{value} 41234 /lab vm", f"10.1.2.3 {value} /lab vm",
                f"10.1.2.3 41234 {value} vm", f"10.1.2.3 41234 /lab {value}"):
        with pytest.raises(ValueError, match="endpoint file holds"):
            parse_poll(f"state RUNNING|None|vm|30:00\nendpoint {bad}\nanswer 200\n")
    with pytest.raises(ValueError, match="token file holds"):
        parse_poll(good + f"token {value}\n")


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_the_printed_tunnel_splits_back_into_the_exact_paths(what: str, value: str,
                                                             tmp_path: Path) -> None:
    import shlex

    from fabric import Config

    config = Config()
    config.set_runtime_ssh_path(f"/cfg {value}")
    conn = Connection("login.example", user="me", port=2222, config=config,
                      connect_kwargs={"key_filename": [f"/keys/id {value}"]})
    line = tunnel_command(conn, 8888, Endpoint("10.1.2.3", 41234, "/lab", "vm"))
    assert shlex.split(line) == ["ssh", "-F", f"/cfg {value}", "-i", f"/keys/id {value}",
                                 "-p", "2222", "-N", "-L", "8888:10.1.2.3:41234",
                                 "me@login.example"]


# --- the login-node snippets under sh: the exact paths are written and named ----------------

SBATCH_STUB = """#!/bin/sh
printf '%s' "$2" > "$HOME/sbatch-got"
echo 42
"""


def run_snippet(snippet: object, home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("sbatch", SBATCH_STUB), ("ch-run", "#!/bin/sh\nexit 0\n"),
                       ("scontrol", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return subprocess.run(["sh", "-c", str(snippet)], input=stdin, capture_output=True,
                          text=True, env={"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"})


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_submit_writes_the_script_into_the_exact_jobs_dir(what: str, value: str,
                                                          tmp_path: Path) -> None:
    spec = validate(base(runtime="charliecloud", image=f"./img {value}", jobs_dir=f"jobs {value}",
                         output="logs/%x-%j.out", stage_data=f"data {value}.tar",
                         requirements=f"req {value}.txt"))
    script = render_batch_script(spec).text
    (tmp_path / f"img {value}").mkdir(parents=True)
    # Each missing input is named with its exact path.
    missing = run_snippet(remote_scripts.submit_snippet(spec), tmp_path, script)
    assert (missing.returncode, missing.stderr) == (
        3, f"--stage-data: {tmp_path}/data {value}.tar is not readable on the login node\n")
    (tmp_path / f"data {value}.tar").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / f"data {value}.tar").write_bytes(b"")
    missing = run_snippet(remote_scripts.submit_snippet(spec), tmp_path, script)
    assert missing.stderr == (
        f"--requirements: {tmp_path}/req {value}.txt is not readable on the login node\n")
    (tmp_path / f"req {value}.txt").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / f"req {value}.txt").write_text("")
    done = run_snippet(remote_scripts.submit_snippet(spec), tmp_path, script)
    assert done.returncode == 0, done.stderr
    job_id, final = done.stdout.splitlines()
    jobs = tmp_path / f"jobs {value}"
    assert job_id == "42" and Path(final).parent == jobs
    assert (tmp_path / "sbatch-got").read_text() == final
    assert Path(final).read_text() == script
    assert os.readlink(jobs / "42.sbatch") == Path(final).name
    # slurm.logs finds the job's record in that same dir.
    found = run_snippet(remote_scripts.logs_locate_snippet("42", f"jobs {value}"), tmp_path)
    assert found.stdout.splitlines()[0] == "record"
    assert "#SBATCH --output=logs/%x-%j.out" in found.stdout
    gone = run_snippet(remote_scripts.logs_locate_snippet("43", f"jobs {value}"), tmp_path)
    assert gone.stderr == ("job 43 is not known to slurmctld and was not submitted through "
                           f"slurm.submit with jobs dir jobs {value}\n")


STANDIN_APPTAINER = """#!/bin/sh
[ "$1" = pull ] || exit 64
printf '%s\\n' "$4" > "$3"
"""


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_pull_fills_the_exact_cache_dir(what: str, value: str, tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "apptainer").write_text(STANDIN_APPTAINER)
    (tmp_path / "bin" / "apptainer").chmod(0o755)
    snippet = remote_scripts.pull_snippet("apptainer", REGISTRY, f"sif {value}")
    pulled = run_snippet(snippet, tmp_path, "\n\n")
    final = tmp_path / f"sif {value}" / "nvcr.io_nvidia_pytorch_24.05-py3.sif"
    assert pulled.stdout == f"pulled {final}\n", pulled.stderr
    assert final.read_text() == f"docker://{REGISTRY}\n"


@pytest.mark.parametrize(("what", "value"), ONE_LINE, ids=[w for w, _ in ONE_LINE])
def test_logs_tails_the_exact_files(what: str, value: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / f"logs {value}" / "a.out"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\n")
    monkeypatch.setattr(slurm, "connection", lambda c, task: None)
    located = [("5", "RUNNING", f"~/logs {value}/a.out")]
    monkeypatch.setattr(slurm, "locate_logs", lambda *a: located)

    def run_here(_: object, snippet: Sh, stdin: str = "") -> login_node.RemoteResult:
        """The login node's runner, with this box's sh for the SSH channel."""
        assert isinstance(snippet, Sh)
        done = run_snippet(snippet, tmp_path, stdin)
        return login_node.RemoteResult(done.returncode, done.stdout, done.stderr)

    monkeypatch.setattr(slurm.login_node, "run", run_here)
    assert slurm.read_logs(None, "5", 1, "~/jobs", False) == "two\n"  # type: ignore[arg-type]


# --- a real job on the real cluster ---------------------------------------------------------

@pytest.mark.slow
def test_a_real_job_reads_and_writes_hostile_paths_literally(
        login_node: LoginNode, conn: Connection, capsys: pytest.CaptureFixture[str]) -> None:
    """code, stage_data, output_dir, jobs_dir, a list command and an #SBATCH comment,
    each holding hostile pieces, through slurm.submit over SSH to slurmctld and back."""
    home = login_node.home
    value = one_line(70)
    code, output_dir = f"code {value}", f"out {value}"
    stage, jobs = f"data {value}.tar", f"jobs {value}"
    (home / code).mkdir(parents=True)
    (home / code / "hello.txt").write_text("hello from the code dir\n")
    (home / output_dir).mkdir(parents=True)
    payload = home / "stage-src" / "sub"
    payload.mkdir(parents=True, exist_ok=True)
    (payload / "file.txt").write_text("staged payload\n")
    (home / stage).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(home / stage, "w") as tar:
        tar.add(payload, arcname="sub")
    for top in {p.split("/")[0] for p in (code, output_dir, stage, "stage-src")}:
        subprocess.run(["chown", "-R", login_node.sshd.user, str(home / top)], check=True)
    words = [value for _, value in ALL]  # the newline too: a list is an argv
    # sbatch reads an #SBATCH line with quotes of its own (an unmatched one is refused,
    # below); everything else in it is taken as it is.
    comment = "--comment=" + re.sub(r"[\s'\"]", "", one_line(80, space="${IFS}"))
    logs = f"hostile-logs-{os.getpid()}"
    slurm.submit(
        conn, runtime="charliecloud", image=str(login_node.busybox_image), account=ACCOUNT,
        partition=PARTITION, time="00:05:00", name="hostile", jobs_dir=jobs,
        output=f"{logs}/%x-%j.out", code=code, output_dir=output_dir, stage_data=stage,
        sbatch=[comment],
        command=["sh", "-c", 'cat hello.txt /workspace/data/sub/file.txt; pwd; '
                 'printf "[%s]\\n" "$@" > /workspace/output/argv', "job", *words],
    )
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    with pytest.raises(Exit) as failure:
        slurm.submit(conn, runtime="charliecloud", image=str(login_node.busybox_image),
                     account=ACCOUNT, partition=PARTITION, name="hostile-quote", jobs_dir=jobs,
                     output=f"{logs}/%x-%j.out", sbatch=["--comment=it's"], command="true")
    assert failure.value.code == 4
    assert "Unmatched" in str(failure.value.message) and "\n" not in str(failure.value.message)
    assert job_id.isdigit()
    scontrol = login_node.run_as_user(f"scontrol show job -o {job_id}").stdout
    assert re.search(r"Comment=(\S+)", scontrol)[1] == comment.removeprefix(  # type: ignore[index]
        "--comment=")
    state = login_node.wait_for_state(job_id, {"COMPLETED", "FAILED"})
    log = (home / logs / f"hostile-{job_id}.out").read_text()
    assert state == "COMPLETED", log
    assert log.splitlines() == [
        f"gpu-workbench: staging {stage} into /tmp/workbench-{login_node.sshd.user}-{job_id}/data",
        "hello from the code dir", "staged payload", "/workspace/code",
    ]
    assert (home / output_dir / "argv").read_text() == "".join(f"[{w}]\n" for w in words)
    scripts = sorted(p.name for p in (home / jobs).iterdir())
    assert f"{job_id}.sbatch" in scripts and any(s.startswith("hostile.") for s in scripts)
    shutil.rmtree(home / logs, ignore_errors=True)
