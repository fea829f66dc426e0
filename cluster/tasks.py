"""Run the workstation's NGC container as Slurm batch jobs on an existing cluster.

    fab -H user@login-node slurm.pull --image nvcr.io/nvidia/pytorch:24.05-py3
    fab -H user@login-node slurm.submit --job-file job.yaml --gpus 2
    fab -H user@login-node slurm.status 1234
    fab -H user@login-node slurm.logs 1234
    fab -H user@login-node slurm.cancel 1234
    fab -H user@login-node slurm.jupyter --job-file job.yaml   # JupyterLab as a job, tunnel

Each task is one or two remote commands over the one SSH connection Fabric
holds to the login node (round trips are the cost far from the cluster):
the snippets of cluster.remote_scripts, run by cluster.login_node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from fabric import task
from invoke.collection import Collection
from invoke.context import Context

from bootstrap.shell import SPACE, sh
from cluster import login_node
from cluster.batch_script import render_batch_script, shell_path
from cluster.job import (
    CONTAINER_RUNTIMES,
    DEFAULT_CACHE_DIR,
    DEFAULT_JOBS_DIR,
    RUNTIMES,
    JobSpec,
    array_task_ids,
    merge_options,
    parse_job_file,
    validate,
)
from cluster.job_error import JobError
from cluster.jupyter_session import jupyter_url, tunnel_command, wait_for_server
from cluster.login_node import (
    EXIT_BAD_INPUT,
    REFUSED,
    connection,
    fail,
    require_known_host,
)
from cluster.registry import (
    check_registry_reference,
    is_registry_reference,
    registry_credentials,
)
from cluster.remote_scripts import (
    cancel_snippet,
    logs_locate_snippet,
    pull_snippet,
    status_snippet,
    submit_snippet,
)
from cluster.slurm_answers import (
    JobState,
    check_job_id,
    expand_output_pattern,
    format_job_states,
    parse_job_states,
    parse_sbatch_parsable,
    sbatch_error_line,
    sbatch_option,
)

STRICT_HOST_KEYS_HELP = ("refuse a login node not yet in known_hosts (default: record it and "
                         "print its fingerprint, as ssh's accept-new; a changed key is always "
                         "refused)")

# Whole-number flags default to None, not ints: invoke casts a flag to its default's
# type and stops with a traceback on '--lines x' instead of the task's one line.
def _whole_number(option: str, value: object, low: int, high: int) -> int:
    """An int flag in [low, high]; JobError naming it otherwise."""
    text = str(value).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise JobError(f"--{option}: '{value}' is not a whole number from {low} to {high}")
    return int(text)


# -- pull -----------------------------------------------------------------------


@task(
    auto_shortflags=False,
    help={
        "image": "registry reference, e.g. nvcr.io/nvidia/pytorch:24.05-py3 (docker:// optional)",
        "runtime": f"one of {', '.join(CONTAINER_RUNTIMES)} (default apptainer)",
        "cache_dir": f"shared image cache on the cluster (default {DEFAULT_CACHE_DIR})",
        "strict_host_keys": STRICT_HOST_KEYS_HELP,
    },
)
def pull(c, image, runtime="apptainer", cache_dir=DEFAULT_CACHE_DIR, strict_host_keys=False):
    """Convert an NGC/Docker image to a SIF (or charliecloud dir) in the cluster's cache, once.

    Registry login comes from the local environment and reaches the login node
    on stdin only: APPTAINER_DOCKER_USERNAME/PASSWORD, SINGULARITY_DOCKER_*,
    CH_IMAGE_*, or NGC_API_KEY (as user $oauthtoken, for nvcr.io).
    """
    if strict_host_keys:
        require_known_host(c)
    print(pull_image(c, image, runtime, cache_dir))


def pull_image(c: Context, image: str, runtime: str, cache_dir: str) -> str:
    """The pull itself; returns the remote status line ('present PATH' or 'pulled PATH')."""
    if runtime not in CONTAINER_RUNTIMES:
        extra = "; --runtime none runs no container, so there is nothing to pull" \
            if runtime == "none" else ""
        raise fail("pull", f"--runtime: '{runtime}' is not one of"
                   f" {', '.join(CONTAINER_RUNTIMES)}{extra}", 2)
    if not is_registry_reference(image):
        raise fail("pull", f"--image: '{image}' is not a registry reference (repo/name:tag)", 2)
    try:
        check_registry_reference("--image", image)
        credentials = registry_credentials(runtime, image, os.environ)
    except JobError as error:
        raise fail("pull", str(error), EXIT_BAD_INPUT) from None
    conn = connection(c, "pull")
    user, password = credentials or ("", "")
    result = login_node.run(conn, pull_snippet(runtime, image, cache_dir), f"{user}\n{password}\n")
    if result.exited != 0:
        reason = result.stderr.strip() or result.stdout.strip() or f"exit {result.exited}"
        if password:
            reason = reason.replace(password, "***")
        raise fail("pull", f"cannot pull {image}: {reason}", result.exited)
    return str(result.stdout.strip().splitlines()[-1])


# -- submit ---------------------------------------------------------------------


def load_job_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise JobError(f"--job-file: cannot read {path}: {error.strerror}") from None
    return parse_job_file(text, path)


def submit_job(
    c: Context, spec: JobSpec, dry_run: bool = False, jupyter: bool = False
) -> tuple[str, str]:
    """Validate, then (unless dry_run) submit; returns (job id or '', script text).
    `jupyter`: the job serves Jupyter (slurm.jupyter) instead of the spec's command."""
    task_name = "jupyter" if jupyter else "submit"
    try:
        validate(spec, command_required=not jupyter)
    except JobError as error:
        raise fail(task_name, str(error), EXIT_BAD_INPUT) from None
    script = render_batch_script(spec, jupyter=jupyter).text
    if dry_run:
        return "", script
    conn = connection(c, task_name)
    result = login_node.run(conn, submit_snippet(spec), script)
    if result.exited == REFUSED:
        raise fail(
            task_name, f"sbatch rejected the job: {sbatch_error_line(result.stderr)}", REFUSED
        )
    if result.exited != 0:
        raise fail(task_name, result.stderr.strip() or f"exit {result.exited}", result.exited)
    lines = result.stdout.strip().splitlines()
    for warning in result.stderr.strip().splitlines():
        print(warning, file=sys.stderr)
    job_id = parse_sbatch_parsable(lines[0])
    print(f"submitted batch job {job_id} (script {lines[-1]})", file=sys.stderr)
    return job_id, script


# What every job flag means (slurm.submit and slurm.jupyter take the same ones).
JOB_FLAG_HELP = {
    "job_file": "YAML job file; flags given here override its keys",
    "image": "registry reference (resolved in --cache-dir) or a SIF/image-dir path",
    "runtime": f"one of {', '.join(RUNTIMES)} (default apptainer; none: no container)",
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
    "wheelhouse": "dir of wheels on the cluster: requirements install from it only (--no-index)",
    "strict_host_keys": STRICT_HOST_KEYS_HELP,
}


@task(
    auto_shortflags=False,
    iterable=["sbatch", "bind", "module"],
    help={
        **JOB_FLAG_HELP,
        "command": "command line run in the container by sh -c (a job file may give a list)",
        "array": "job array, e.g. 0-2 or 1,3,5-7%2",
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
    wheelhouse=None,
    dry_run=False,
    strict_host_keys=False,
):
    """Submit the container and command as a Slurm batch job; prints the job id."""
    if strict_host_keys:
        require_known_host(c)
    flags = {
        "command": command, "image": image, "runtime": runtime, "cache_dir": cache_dir,
        "jobs_dir": jobs_dir, "name": name, "account": account, "partition": partition,
        "qos": qos, "time": time, "cpus": cpus, "memory": memory, "gpus": gpus,
        "array": array, "output": output, "error": error, "sbatch": sbatch,
        "nv": False if skip_nv else None, "code": code, "data": data,
        "output_dir": output_dir, "binds": bind, "stage_data": stage_data,
        "modules": module, "requirements": requirements, "wheelhouse": wheelhouse,
    }  # fmt: skip
    try:
        file_options = load_job_file(job_file) if job_file else None
        spec = merge_options(file_options, flags, job_file or "job file")
    except JobError as err:
        raise fail("submit", str(err), EXIT_BAD_INPUT) from None
    job_id, script = submit_job(c, spec, dry_run=dry_run)
    print(script if dry_run else job_id, end="" if dry_run else "\n")


# -- status / logs / cancel -------------------------------------------------------


def job_states(c: Context, job_id: str) -> list[JobState]:
    try:
        job_id = check_job_id(job_id)
    except JobError as error:
        raise fail("status", str(error), EXIT_BAD_INPUT) from None
    result = login_node.run(connection(c, "status"), status_snippet(job_id))
    if result.exited != 0:
        raise fail("status", sbatch_error_line(result.stderr), result.exited)
    source, _, rows = result.stdout.partition("\n")
    return parse_job_states(rows, source.strip())


@task(auto_shortflags=False, help={
    "job_id": "Slurm job id (123, or 123_4 for one array task)",
    "strict_host_keys": STRICT_HOST_KEYS_HELP,
})
def status(c, job_id, strict_host_keys=False):
    """A job's state: squeue while Slurm holds it, then sacct."""
    if strict_host_keys:
        require_known_host(c)
    print(format_job_states(job_states(c, job_id)))


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
    conn = connection(c, "logs")
    result = login_node.run(conn, logs_locate_snippet(job_id, jobs_dir))
    if result.exited != 0:
        raise fail("logs", result.stderr.strip() or f"exit {result.exited}", result.exited)
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
        raise fail("logs", f"job {job_id}: its script has no --output line", REFUSED)
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
            raise fail("logs", str(error), REFUSED) from None
        located.append((task_id, "(left the queue)", path if path.startswith("/") else "~/" + path))
    return located


def read_logs(c: Context, job_id: str, lines: int, jobs_dir: str, stderr: bool) -> str:
    try:
        job_id = check_job_id(job_id)
    except JobError as error:
        raise fail("logs", str(error), EXIT_BAD_INPUT) from None
    if lines < 1:
        raise fail("logs", f"--lines: must be 1 or more, not {lines}", EXIT_BAD_INPUT)
    located = locate_logs(c, job_id, jobs_dir, "StdErr" if stderr else "StdOut")
    if not located:
        raise fail("logs", f"job {job_id}: Slurm reports no output path", REFUSED)
    paths = SPACE.join(shell_path(path) for _, _, path in located)
    snippet = sh(
        "for f in {paths}; do\n"
        '  [ -e "$f" ] || {{ echo "no output yet at $f" >&2; missing=1; }}\n'
        "done\n"
        '[ -z "${{missing:-}}" ] || exit {refused}\n'
        "tail -n {lines} -- {paths}\n",
        paths=paths, refused=REFUSED, lines=int(lines),
    )
    result = login_node.run(connection(c, "logs"), snippet)
    if result.exited != 0:
        states = ", ".join(f"{jid} {state}" for jid, state, _ in located)
        raise fail("logs", f"{result.stderr.strip()} (job {states})", result.exited)
    return str(result.stdout)


@task(
    auto_shortflags=False,
    help={
        "job_id": "Slurm job id (123; an array's id shows every task)",
        "lines": "how many lines from the end (default 100)",
        "jobs_dir": f"jobs dir used at submit (default {DEFAULT_JOBS_DIR})",
        "job_file": "take --jobs-dir from this job file",
        "stderr": "show the --error file instead of the output",
        "strict_host_keys": STRICT_HOST_KEYS_HELP,
    },
)
def logs(c, job_id, lines=None, jobs_dir=None, job_file=None, stderr=False,
         strict_host_keys=False):
    """Tail a job's output file, wherever Slurm put it."""
    if strict_host_keys:
        require_known_host(c)
    try:
        count = _whole_number("lines", 100 if lines is None else lines, 1, 1_000_000)
        file_options = load_job_file(job_file) if job_file else None
        spec = merge_options(file_options, {"jobs_dir": jobs_dir}, job_file or "job file")
    except JobError as error:
        raise fail("logs", str(error), EXIT_BAD_INPUT) from None
    print(read_logs(c, job_id, count, spec.jobs_dir, stderr), end="")


def cancel_job(c: Context, job_id: str) -> str:
    try:
        job_id = check_job_id(job_id)
    except JobError as error:
        raise fail("cancel", str(error), EXIT_BAD_INPUT) from None
    result = login_node.run(connection(c, "cancel"), cancel_snippet(job_id))
    if result.exited != 0:
        raise fail("cancel", sbatch_error_line(result.stderr), result.exited)
    if result.stdout.startswith("ended "):
        return f"job {job_id} already ended ({result.stdout.strip()[6:]}); nothing to cancel"
    return f"cancelled {job_id} (was {', '.join(result.stdout.split())})"


@task(auto_shortflags=False, help={
    "job_id": "Slurm job id (123, or 123_4 for one array task)",
    "strict_host_keys": STRICT_HOST_KEYS_HELP,
})
def cancel(c, job_id, strict_host_keys=False):
    """Cancel a job (scancel); a job that already ended is left as it is, and said so."""
    if strict_host_keys:
        require_known_host(c)
    print(cancel_job(c, job_id))


# -- jupyter --------------------------------------------------------------------------

DEFAULT_LOCAL_PORT = 8888
DEFAULT_WAIT_SECONDS = 600


@task(
    auto_shortflags=False,
    iterable=["sbatch", "bind", "module"],
    help={
        **JOB_FLAG_HELP,
        "name": "job name (default jupyter)",
        "local_port": f"port on your machine the tunnel listens on (default {DEFAULT_LOCAL_PORT})",
        "wait": f"seconds to wait for the job and its server (default {DEFAULT_WAIT_SECONDS})",
        "attach": "wait for the server of this already submitted job instead of submitting",
        "dry_run": "print the batch script; submit nothing",
    },
)
def jupyter(
    c,
    job_file=None,
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
    wheelhouse=None,
    local_port=None,
    wait=None,
    attach=None,
    dry_run=False,
    strict_host_keys=False,
):
    """JupyterLab as a Slurm job: submit, wait until it answers, print the tunnel and URL.

    The server runs in the container (or, with --runtime none, in the modules' Python
    or the venv the requirements build) on a free port of the compute node, with a
    token made there. stdout: the ssh tunnel command, then the URL. The job's time
    limit ends it, or slurm.cancel. A job file's `command` is not used.
    """
    if strict_host_keys:
        require_known_host(c)
    flags = {
        "image": image, "runtime": runtime, "cache_dir": cache_dir, "jobs_dir": jobs_dir,
        "name": name, "account": account, "partition": partition, "qos": qos, "time": time,
        "cpus": cpus, "memory": memory, "gpus": gpus, "output": output, "error": error,
        "sbatch": sbatch, "nv": False if skip_nv else None, "code": code, "data": data,
        "output_dir": output_dir, "binds": bind, "stage_data": stage_data, "modules": module,
        "requirements": requirements, "wheelhouse": wheelhouse,
    }  # fmt: skip
    try:
        file_options = dict(load_job_file(job_file)) if job_file else {}
        file_options.pop("command", None)  # the job serves Jupyter; a file may hold both
        file_options.setdefault("name", "jupyter")
        spec = merge_options(file_options, flags, job_file or "job file")
        if spec.array:
            raise JobError(f"--array: '{spec.array}': a Jupyter job is one server; drop the"
                           " array from the job file")
        port = _whole_number("local-port", DEFAULT_LOCAL_PORT if local_port is None
                             else local_port, 1, 65535)
        wait_seconds = _whole_number("wait", DEFAULT_WAIT_SECONDS if wait is None else wait,
                                     1, 7 * 86400)
        attach_id = check_job_id(attach) if attach is not None else None
    except JobError as err:
        raise fail("jupyter", str(err), EXIT_BAD_INPUT) from None
    if attach_id is None:
        job_id, script = submit_job(c, spec, dry_run=dry_run, jupyter=True)
        if dry_run:
            print(script, end="")
            return
    else:
        job_id = attach_id

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    poll = wait_for_server(
        c, job_id, spec.jobs_dir, wait_seconds,
        log_tail=lambda: read_logs(c, job_id, 20, spec.jobs_dir, False), say=say,
    )  # fmt: skip
    assert poll.endpoint is not None
    app = "JupyterLab" if poll.endpoint.path == "/lab" else "Jupyter Server"
    limit = f"its time limit ({poll.time_limit})" if poll.time_limit else "its time limit"
    say(f"job {job_id}: {app} answers on {poll.endpoint.node}"
        f" ({poll.endpoint.address}:{poll.endpoint.port}); it ends with the job, at {limit},"
        f" or with slurm.cancel {job_id}. On your machine, run the tunnel, then open the URL:")
    print(tunnel_command(c, port, poll.endpoint))
    print(jupyter_url(port, poll.endpoint, poll.token))


collection = Collection("slurm", pull, submit, status, logs, cancel, jupyter)
