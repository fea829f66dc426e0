"""Run the workstation's NGC container as Slurm batch jobs on an existing cluster.

    fab -H user@login-node slurm.pull --image nvcr.io/nvidia/pytorch:24.05-py3
    fab -H user@login-node slurm.submit --job-file job.yaml --gpus 2
    fab -H user@login-node slurm.status 1234
    fab -H user@login-node slurm.logs 1234
    fab -H user@login-node slurm.cancel 1234

Each task is one or two remote commands over the one SSH connection Fabric
holds to the login node (round trips are the cost far from the cluster).
Every remote command is a POSIX sh snippet run with `sh -c`, whatever the
user's login shell; data for it (a batch script, registry credentials) goes
in on stdin, so secrets never appear in a command line, a file or a log.
The snippets exit 3 when the login node lacks something (a runtime, an
image) and 4 when Slurm or the pull tool refused; their stderr is the one
line the task reports.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric import Connection, task
from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit

from cluster.job import (
    DEFAULT_CACHE_DIR,
    DEFAULT_JOBS_DIR,
    PULL_COMMAND,
    RUNTIME_COMMAND,
    RUNTIMES,
    JobError,
    JobSpec,
    JobState,
    array_task_ids,
    cached_image_name,
    check_job_id,
    expand_output_pattern,
    format_job_states,
    image_path,
    is_registry_reference,
    merge_options,
    parse_job_file,
    parse_job_states,
    parse_sbatch_parsable,
    registry_credentials,
    registry_reference,
    render_batch_script,
    sbatch_error_line,
    sbatch_option,
    shell_path,
    validate,
)

EXIT_BAD_INPUT = 2
PRECONDITION = 3  # the login node lacks something
REFUSED = 4  # Slurm or the pull tool said no

_FOUND_RUNTIMES = (
    'found=""; for b in apptainer singularity ch-run; do '
    'command -v "$b" >/dev/null 2>&1 && found="$found $b"; done; '
    '[ -n "$found" ] || found=" none"'
)


def _fail(task_name: str, message: str, code: int = 1) -> Exit:
    """The one-line error a task ends with (fab prints it to stderr)."""
    first = " ".join(message.split())
    return Exit(f"slurm.{task_name}: {first}", code=code)


def _connection(c: Context, task_name: str) -> Connection:
    if not isinstance(c, Connection):
        raise _fail(
            task_name, f"needs the login node: fab -H user@login-node slurm.{task_name} ...",
            EXIT_BAD_INPUT,
        )  # fmt: skip
    return c


@dataclass(frozen=True)
class RemoteResult:
    exited: int
    stdout: str
    stderr: str


def _remote(c: Connection, snippet: str, stdin: str = "") -> RemoteResult:
    """Run a sh snippet on the login node with `stdin` as its input; never raises on exit code.

    This drives the SSH channel itself rather than `c.run(in_stream=...)`:
    invoke feeds in_stream one character per 10 ms poll (a 3 kB script took
    30 s) and can close the channel's stdin before the last byte is sent.
    Here the whole input goes in one write, then EOF, on the connection
    Fabric already holds (its gateway and ssh_config settings included).
    Every snippet reads all of stdin before it writes anything, so the write
    cannot stall behind output nobody is reading yet.
    """
    c.open()
    transport = c.client.get_transport()
    if transport is None:  # open() failed without raising
        raise _fail("remote", f"no SSH transport to {c.host}")
    channel = transport.open_session()
    try:
        channel.exec_command("sh -c " + shlex.quote(snippet))
        if stdin:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            idle = True
            if channel.recv_ready():
                out += channel.recv(65536)
                idle = False
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                idle = False
            if idle and channel.exit_status_ready():
                # Exit status can arrive before the last output; drain it.
                if not (channel.recv_ready() or channel.recv_stderr_ready()):
                    break
            elif idle:
                time.sleep(0.005)
        return RemoteResult(
            channel.recv_exit_status(),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
    finally:
        channel.close()


def _require_command(executable: str, purpose: str, list_runtimes: bool = False) -> str:
    """sh that stops (exit 3) with a one-line reason when `executable` is not on PATH."""
    found = f"{_FOUND_RUNTIMES}; " if list_runtimes else ""
    tail = "; found:$found" if list_runtimes else ""
    return (
        f"command -v {executable} >/dev/null 2>&1 || {{ {found}"
        f'echo "{executable} not found on the login node ({purpose}){tail}" >&2; '
        f"exit {PRECONDITION}; }}\n"
    )


# -- pull -----------------------------------------------------------------------


def pull_snippet(runtime: str, reference: str, cache_dir: str) -> str:
    """sh that pulls `reference` into the cache once, atomically (temp name, then rename).

    Reads two lines from stdin: registry user and password (empty for anonymous).
    """
    name = cached_image_name(reference, runtime)
    tool = PULL_COMMAND[runtime]
    ref = shlex.quote(registry_reference(reference))
    docker_ref = shlex.quote("docker://" + registry_reference(reference))
    head = (
        # Read all of stdin before anything can exit: the sender must finish
        # before the channel closes, or its write fails.
        "{ IFS= read -r user || user=''; IFS= read -r password || password=''; cat >/dev/null; }\n"
        f"cache={shell_path(cache_dir)}\n"
        f'final="$cache"/{shlex.quote(name)}\n'
        'if [ -e "$final" ]; then printf "present %s\\n" "$final"; exit 0; fi\n'
        + _require_command(tool, f"slurm.pull --runtime {runtime} needs it", list_runtimes=True)
        + f'mkdir -p -- "$cache" || exit {PRECONDITION}\n'
        # A half-pulled image never sits under the final name: the pull writes
        # a dot-name in the same directory, renamed only when complete.
        + f'tmp="$cache"/.{shlex.quote(name)}.partial.$$\n'
        + "log=$(mktemp) || exit 3\n"
        + 'trap \'rm -rf -- "$tmp" "$log"\' EXIT\n'
    )
    if runtime == "charliecloud":
        body = (
            'if [ -n "$user" ]; then export CH_IMAGE_USERNAME="$user" '
            'CH_IMAGE_PASSWORD="$password" CH_IMAGE_AUTH=yes; fi\n'
            + _require_command("ch-convert", "charliecloud pulls convert with it")
            # --no-cache: the build cache needs git and a git identity, and a
            # pull only to convert gains nothing from it.
            + f'ch-image --no-cache pull {ref} >"$log" 2>&1 && '
            f'ch-convert -i ch-image -o dir {ref} "$tmp" >>"$log" 2>&1\n'
        )
    else:
        prefix = runtime.upper() + "_DOCKER_"
        body = (
            f'if [ -n "$user" ]; then export {prefix}USERNAME="$user" '
            f'{prefix}PASSWORD="$password"; fi\n'
            f'{tool} pull --disable-cache "$tmp" {docker_ref} >"$log" 2>&1\n'
        )
    tail = (
        "status=$?\n"
        'if [ "$status" -ne 0 ]; then\n'
        '  msg=$(grep -iE "fatal|error" "$log" | tail -n 1)\n'
        '  [ -n "$msg" ] || msg=$(tail -n 1 "$log")\n'
        '  printf "%s\\n" "$msg" >&2\n'
        f"  exit {REFUSED}\n"
        "fi\n"
        # -T: never move a finished image *into* one a concurrent pull made.
        'mv -T -- "$tmp" "$final" || exit 4\n'
        'printf "pulled %s\\n" "$final"\n'
    )
    return "set -u\n" + head + body + tail


@task(
    auto_shortflags=False,
    help={
        "image": "registry reference, e.g. nvcr.io/nvidia/pytorch:24.05-py3 (docker:// optional)",
        "runtime": f"one of {', '.join(RUNTIMES)} (default apptainer)",
        "cache_dir": f"shared image cache on the cluster (default {DEFAULT_CACHE_DIR})",
    },
)
def pull(c, image, runtime="apptainer", cache_dir=DEFAULT_CACHE_DIR):
    """Convert an NGC/Docker image to a SIF (or charliecloud dir) in the cluster's cache, once.

    Registry login comes from the local environment and reaches the login node
    on stdin only: APPTAINER_DOCKER_USERNAME/PASSWORD, SINGULARITY_DOCKER_*,
    CH_IMAGE_*, or NGC_API_KEY (as user $oauthtoken, for nvcr.io).
    """
    print(pull_image(c, image, runtime, cache_dir))


def pull_image(c: Context, image: str, runtime: str, cache_dir: str) -> str:
    """The pull itself; returns the remote status line ('present PATH' or 'pulled PATH')."""
    if runtime not in RUNTIMES:
        raise _fail("pull", f"--runtime: '{runtime}' is not one of {', '.join(RUNTIMES)}", 2)
    if not is_registry_reference(image):
        raise _fail("pull", f"--image: '{image}' is not a registry reference (repo/name:tag)", 2)
    try:
        credentials = registry_credentials(runtime, image, os.environ)
    except JobError as error:
        raise _fail("pull", str(error), EXIT_BAD_INPUT) from None
    conn = _connection(c, "pull")
    user, password = credentials or ("", "")
    result = _remote(conn, pull_snippet(runtime, image, cache_dir), f"{user}\n{password}\n")
    if result.exited != 0:
        reason = result.stderr.strip() or result.stdout.strip() or f"exit {result.exited}"
        if password:
            reason = reason.replace(password, "***")
        raise _fail("pull", f"cannot pull {image}: {reason}", result.exited)
    return str(result.stdout.strip().splitlines()[-1])


# -- submit ---------------------------------------------------------------------


def submit_snippet(spec: JobSpec) -> str:
    """sh that checks the login node, writes the script (stdin) atomically and runs sbatch."""
    rt = RUNTIME_COMMAND[spec.runtime]
    checks = _require_command("sbatch", "slurm.submit needs Slurm's client commands")
    if spec.modules:
        # Where the runtime comes from a module it is on PATH only after
        # `module load`, which the job does; here a missing one is a warning.
        checks += (
            f'command -v {rt} >/dev/null 2>&1 || echo "warning: {rt} is not on the login '
            f"node's PATH; the job expects it from its module load lines\" >&2\n"
        )
    else:
        checks += _require_command(
            rt, f"--runtime {spec.runtime} runs jobs with it", list_runtimes=True
        )
    checks += (
        f"image={shell_path(image_path(spec))}\n"
        'if [ ! -e "$image" ]; then echo "image $image is not on the cluster; '
        f'run slurm.pull first" >&2; exit {PRECONDITION}; fi\n'
    )
    for option, path in (("stage-data", spec.stage_data), ("requirements", spec.requirements)):
        if path:
            checks += (
                f"p={shell_path(path)}\n"
                f'if [ ! -r "$p" ]; then '
                f'echo "--{option}: $p is not readable on the login node" >&2; '
                f"exit {PRECONDITION}; fi\n"
            )
    # Slurm does not create the directory of --output/--error: a job whose log
    # dir is missing fails without a word. Make the ones without % patterns.
    log_dirs = set()
    script = render_batch_script(spec)
    for option in ("output", "error"):
        value = sbatch_option(script, option)
        if value and "/" in value and "%" not in value.rsplit("/", 1)[0]:
            log_dirs.add(shell_path(value.rsplit("/", 1)[0]))
    name = shlex.quote(spec.name)
    return (
        "set -u\n"
        # Take the whole script off stdin first (the sender must finish before
        # an early exit closes the channel); the dot keeps trailing newlines.
        "script=$(cat; echo .); script=${script%.}\n"
        # sbatch resolves relative #SBATCH paths from here, as the script body does.
        f'cd "$HOME" || exit {PRECONDITION}\n'
        + checks
        + f"jobs={shell_path(spec.jobs_dir)}\n"
        + f'mkdir -p -- "$jobs" {" ".join(sorted(log_dirs))} || exit {PRECONDITION}\n'
        + f'tmp=$(mktemp "$jobs"/.{name}.XXXXXX) || exit {PRECONDITION}\n'
        + "trap 'rm -f -- \"$tmp\"' EXIT\n"
        + f'printf "%s" "$script" >"$tmp" || exit {PRECONDITION}\n'
        + f'final="$jobs"/{name}.$(date +%Y%m%d-%H%M%S).$$.sbatch\n'
        + f'mv -- "$tmp" "$final" || exit {PRECONDITION}\n'
        + "err=$(mktemp) || exit 3\n"
        + 'trap \'rm -f -- "$tmp" "$err"\' EXIT\n'
        + 'if out=$(sbatch --parsable "$final" 2>"$err"); then\n'
        + '  cat "$err" >&2\n'
        + "  id=${out%%;*}\n"
        # JOBID.sbatch lets slurm.logs find the output path after the job has
        # left slurmctld's memory.
        + '  ln -sf -- "$(basename -- "$final")" "$jobs/$id.sbatch"\n'
        + '  printf "%s\\n%s\\n" "$out" "$final"\n'
        + "else\n"
        + '  rm -f -- "$final"\n'
        + '  cat "$err" >&2\n'
        + f"  exit {REFUSED}\n"
        + "fi\n"
    )


def load_job_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise JobError(f"--job-file: cannot read {path}: {error.strerror}") from None
    return parse_job_file(text, path)


def submit_job(c: Context, spec: JobSpec, dry_run: bool = False) -> tuple[str, str]:
    """Validate, then (unless dry_run) submit; returns (job id or '', script text)."""
    try:
        validate(spec)
    except JobError as error:
        raise _fail("submit", str(error), EXIT_BAD_INPUT) from None
    script = render_batch_script(spec)
    if dry_run:
        return "", script
    conn = _connection(c, "submit")
    result = _remote(conn, submit_snippet(spec), script)
    if result.exited == REFUSED:
        raise _fail(
            "submit", f"sbatch rejected the job: {sbatch_error_line(result.stderr)}", REFUSED
        )
    if result.exited != 0:
        raise _fail("submit", result.stderr.strip() or f"exit {result.exited}", result.exited)
    lines = result.stdout.strip().splitlines()
    for warning in result.stderr.strip().splitlines():
        print(warning, file=sys.stderr)
    job_id = parse_sbatch_parsable(lines[0])
    print(f"submitted batch job {job_id} (script {lines[-1]})", file=sys.stderr)
    return job_id, script


@task(
    auto_shortflags=False,
    iterable=["sbatch", "bind", "module"],
    help={
        "job_file": "YAML job file; flags given here override its keys",
        "command": "command line run in the container by sh -c (a job file may give a list)",
        "image": "registry reference (resolved in --cache-dir) or a SIF/image-dir path",
        "runtime": f"one of {', '.join(RUNTIMES)} (default apptainer)",
        "cache_dir": f"where slurm.pull put images (default {DEFAULT_CACHE_DIR})",
        "jobs_dir": f"batch scripts and default logs on the cluster (default {DEFAULT_JOBS_DIR})",
        "name": "job name (default workbench)",
        "account": "Slurm account to charge",
        "partition": "partition",
        "qos": "quality of service",
        "time": "time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
        "cpus": "CPUs per task (default 1)",
        "memory": "memory per node, e.g. 32G",
        "gpus": "GPUs, requested as --gres=gpu:N (default 0)",
        "array": "job array, e.g. 0-2 or 1,3,5-7%2",
        "output": "stdout path (Slurm % patterns; default JOBS_DIR/logs/%x-%j.out)",
        "error": "stderr path (default: with stdout)",
        "sbatch": "extra #SBATCH option, e.g. --constraint=a100 (repeatable)",
        "skip_nv": "do not pass --nv to apptainer/singularity",
        "code": "cluster dir bound at /workspace/code (and the working dir)",
        "data": "cluster dir bound at /workspace/data",
        "output_dir": "cluster dir bound at /workspace/output",
        "bind": "extra bind SRC[:DST] (repeatable)",
        "stage_data": "tar on the cluster unpacked to node-local scratch, bound as data",
        "module": "module to load before the run (repeatable)",
        "requirements": "requirements.txt on the cluster: a venv is built in scratch",
        "dry_run": "print the batch script; submit nothing",
    },
)
def submit(
    c,
    job_file=None,
    command=None,
    image=None,
    runtime=None,
    cache_dir=None,
    jobs_dir=None,
    name=None,
    account=None,
    partition=None,
    qos=None,
    time=None,
    cpus=None,
    memory=None,
    gpus=None,
    array=None,
    output=None,
    error=None,
    sbatch=None,
    skip_nv=False,
    code=None,
    data=None,
    output_dir=None,
    bind=None,
    stage_data=None,
    module=None,
    requirements=None,
    dry_run=False,
):
    """Submit the container and command as a Slurm batch job; prints the job id."""
    flags = {
        "command": command, "image": image, "runtime": runtime, "cache_dir": cache_dir,
        "jobs_dir": jobs_dir, "name": name, "account": account, "partition": partition,
        "qos": qos, "time": time, "cpus": cpus, "memory": memory, "gpus": gpus,
        "array": array, "output": output, "error": error, "sbatch": sbatch,
        "nv": False if skip_nv else None, "code": code, "data": data,
        "output_dir": output_dir, "binds": bind, "stage_data": stage_data,
        "modules": module, "requirements": requirements,
    }  # fmt: skip
    try:
        file_options = load_job_file(job_file) if job_file else None
        spec = merge_options(file_options, flags, job_file or "job file")
    except JobError as err:
        raise _fail("submit", str(err), EXIT_BAD_INPUT) from None
    job_id, script = submit_job(c, spec, dry_run=dry_run)
    print(script if dry_run else job_id, end="" if dry_run else "\n")


# -- status / logs / cancel -------------------------------------------------------


def status_snippet(job_id: str) -> str:
    jid = shlex.quote(job_id)
    return (
        "set -u\n"
        + _require_command("squeue", "Slurm's client commands")
        # -t all: a job that just ended is still in slurmctld's memory for
        # MinJobAge seconds; after that only accounting knows it.
        + f"if out=$(squeue -h -t all -j {jid} -o '%i|%T|%M|%l|%R' 2>&1); then\n"
        '  if [ -n "$out" ]; then echo squeue; printf "%s\\n" "$out"; exit 0; fi\n'
        # "Invalid job id" is squeue's word for "not in memory any more"; any
        # other failure (slurmctld down, auth) is the answer the user needs.
        'elif ! printf "%s" "$out" | grep -q "Invalid job id"; then\n'
        f'  printf "%s\\n" "$out" >&2; exit {REFUSED}\n'
        "fi\n"
        f"if out=$(sacct -n -P -X -j {jid} -o JobID,State,Elapsed,Timelimit,ExitCode 2>&1) "
        '&& [ -n "$out" ]; then echo sacct; printf "%s\\n" "$out"; exit 0; fi\n'
        f'echo "job {job_id} is not in the queue and sacct has no record of it'
        '${out:+ (sacct: $out)}" >&2\n'
        f"exit {REFUSED}\n"
    )


def job_states(c: Context, job_id: str) -> list[JobState]:
    try:
        job_id = check_job_id(job_id)
    except JobError as error:
        raise _fail("status", str(error), EXIT_BAD_INPUT) from None
    result = _remote(_connection(c, "status"), status_snippet(job_id))
    if result.exited != 0:
        raise _fail("status", sbatch_error_line(result.stderr), result.exited)
    source, _, rows = result.stdout.partition("\n")
    return parse_job_states(rows, source.strip())


@task(auto_shortflags=False, help={"job_id": "Slurm job id (123, or 123_4 for one array task)"})
def status(c, job_id):
    """A job's state: squeue while Slurm holds it, then sacct."""
    print(format_job_states(job_states(c, job_id)))


def logs_locate_snippet(job_id: str, jobs_dir: str) -> str:
    jid = shlex.quote(job_id)
    base = shlex.quote(job_id.split("_", 1)[0])
    return (
        "set -u\n"
        f'if info=$(scontrol show job -o {jid} 2>/dev/null) && [ -n "$info" ]; then\n'
        '  echo scontrol; printf "%s\\n" "$info"; exit 0\n'
        "fi\n"
        f"record={shell_path(jobs_dir)}/{base}.sbatch\n"
        'if [ -r "$record" ]; then echo record; id -un; grep "^#SBATCH --" "$record"; exit 0; fi\n'
        f'echo "job {job_id} is not known to slurmctld and was not submitted through '
        f'slurm.submit with jobs dir {jobs_dir}" >&2\n'
        f"exit {REFUSED}\n"
    )


def output_paths_from_scontrol(text: str, stream: str = "StdOut") -> list[tuple[str, str, str]]:
    """(job id, state, path) for each job record in `scontrol show job -o` output."""
    found = []
    for line in text.splitlines():
        fields = dict(
            part.split("=", 1) for part in line.split() if "=" in part
        )  # paths hold no spaces: validate() keeps them so
        if stream in fields:
            array_task = fields.get("ArrayTaskId")
            job_id = (
                f"{fields['ArrayJobId']}_{array_task}"
                if array_task and array_task.isdigit() and "ArrayJobId" in fields
                else fields.get("JobId", "")
            )
            found.append((job_id, fields.get("JobState", ""), fields[stream]))
    return found


def locate_logs(c: Context, job_id: str, jobs_dir: str, stream: str) -> list[tuple[str, str, str]]:
    conn = _connection(c, "logs")
    result = _remote(conn, logs_locate_snippet(job_id, jobs_dir))
    if result.exited != 0:
        raise _fail("logs", result.stderr.strip() or f"exit {result.exited}", result.exited)
    source, _, rest = result.stdout.partition("\n")
    if source == "scontrol":
        # Without --error, Slurm reports StdErr as the StdOut path, so both work.
        return output_paths_from_scontrol(rest, stream)
    user, _, directives = rest.partition("\n")
    option = "output" if stream == "StdOut" else "error"
    pattern = sbatch_option(directives, option) or sbatch_option(directives, "output")
    name = sbatch_option(directives, "job-name") or ""
    array = sbatch_option(directives, "array")
    if pattern is None:
        raise _fail("logs", f"job {job_id}: its script has no --output line", REFUSED)
    # An array's id without a task stands for every task, as in scontrol.
    task_ids = (
        [f"{job_id}_{task}" for task in array_task_ids(array)]
        if array and "_" not in job_id
        else [job_id]
    )
    located = []
    for task_id in task_ids:
        try:
            path = expand_output_pattern(pattern, task_id, name, user.strip())
        except JobError as error:
            raise _fail("logs", str(error), REFUSED) from None
        located.append((task_id, "(left the queue)", path if path.startswith("/") else "~/" + path))
    return located


def read_logs(c: Context, job_id: str, lines: int, jobs_dir: str, stderr: bool) -> str:
    try:
        job_id = check_job_id(job_id)
    except JobError as error:
        raise _fail("logs", str(error), EXIT_BAD_INPUT) from None
    if lines < 1:
        raise _fail("logs", f"--lines: must be 1 or more, not {lines}", EXIT_BAD_INPUT)
    located = locate_logs(c, job_id, jobs_dir, "StdErr" if stderr else "StdOut")
    if not located:
        raise _fail("logs", f"job {job_id}: Slurm reports no output path", REFUSED)
    words = " ".join(shell_path(path) for _, _, path in located)
    snippet = (
        f"for f in {words}; do\n"
        '  [ -e "$f" ] || { echo "no output yet at $f" >&2; missing=1; }\n'
        "done\n"
        f'[ -z "${{missing:-}}" ] || exit {REFUSED}\n'
        f"tail -n {int(lines)} -- {words}\n"
    )
    result = _remote(_connection(c, "logs"), snippet)
    if result.exited != 0:
        states = ", ".join(f"{jid} {state}" for jid, state, _ in located)
        raise _fail("logs", f"{result.stderr.strip()} (job {states})", result.exited)
    return str(result.stdout)


@task(
    auto_shortflags=False,
    help={
        "job_id": "Slurm job id (123; an array's id shows every task)",
        "lines": "how many lines from the end (default 100)",
        "jobs_dir": f"jobs dir used at submit (default {DEFAULT_JOBS_DIR})",
        "job_file": "take --jobs-dir from this job file",
        "stderr": "show the --error file instead of the output",
    },
)
def logs(c, job_id, lines=100, jobs_dir=None, job_file=None, stderr=False):
    """Tail a job's output file, wherever Slurm put it."""
    try:
        file_options = load_job_file(job_file) if job_file else None
        spec = merge_options(file_options, {"jobs_dir": jobs_dir}, job_file or "job file")
    except JobError as error:
        raise _fail("logs", str(error), EXIT_BAD_INPUT) from None
    print(read_logs(c, job_id, int(lines), spec.jobs_dir, stderr), end="")


def cancel_snippet(job_id: str) -> str:
    jid = shlex.quote(job_id)
    # scancel says nothing and exits 0 for a job id Slurm no longer knows, so
    # ask squeue first; its answer is the one the user needs.
    return (
        "set -u\n"
        + _require_command("scancel", "Slurm's client commands")
        + f'if ! state=$(squeue -h -t all -j {jid} -o %T 2>&1) || [ -z "$state" ]; then\n'
        f'  echo "job {job_id} is not in the queue${{state:+ ($state)}}" >&2; exit {REFUSED}\n'
        "fi\n"
        'case "$state" in\n'
        "  *PENDING*|*RUNNING*|*SUSPENDED*|*CONFIGURING*|*REQUEUE*|*RESIZING*|*STOPPED*) ;;\n"
        # $(echo $state) puts an array's task states on one line.
        f'  *) echo "job {job_id} already ended ($(echo $state)); nothing to cancel" >&2; '
        f"exit {REFUSED} ;;\n"
        "esac\n"
        f'err=$(scancel {jid} 2>&1) || {{ printf "%s\\n" "$err" >&2; exit {REFUSED}; }}\n'
        'printf "%s\\n" "$state"\n'
    )


def cancel_job(c: Context, job_id: str) -> str:
    try:
        job_id = check_job_id(job_id)
    except JobError as error:
        raise _fail("cancel", str(error), EXIT_BAD_INPUT) from None
    result = _remote(_connection(c, "cancel"), cancel_snippet(job_id))
    if result.exited != 0:
        raise _fail("cancel", sbatch_error_line(result.stderr), result.exited)
    return f"cancelled {job_id} (was {', '.join(result.stdout.split())})"


@task(auto_shortflags=False, help={"job_id": "Slurm job id (123, or 123_4 for one array task)"})
def cancel(c, job_id):
    """Cancel a job (scancel)."""
    print(cancel_job(c, job_id))


collection = Collection("slurm", pull, submit, status, logs, cancel)
