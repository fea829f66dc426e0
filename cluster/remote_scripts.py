"""The sh snippets the slurm tasks run on the login node, one per task.

Each reads all of its stdin first (the sender must finish before an early
exit closes the channel) and reports failures on stderr with the exit codes
of cluster.login_node.
"""

from __future__ import annotations

import shlex

from cluster.batch_script import render_batch_script, shell_path
from cluster.job import (
    PULL_COMMAND,
    RUNTIME_COMMAND,
    JobSpec,
    image_path,
)
from cluster.login_node import (
    PRECONDITION,
    REFUSED,
    require_command,
)
from cluster.registry import (
    cached_image_name,
    registry_reference,
)
from cluster.slurm_answers import (
    sbatch_option,
)


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
        + require_command(tool, f"slurm.pull --runtime {runtime} needs it", list_runtimes=True)
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
            + require_command("ch-convert", "charliecloud pulls convert with it")
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


def submit_snippet(spec: JobSpec) -> str:
    """sh that checks the login node, writes the script (stdin) atomically and runs sbatch."""
    rt = RUNTIME_COMMAND[spec.runtime]
    checks = require_command("sbatch", "slurm.submit needs Slurm's client commands")
    if spec.modules:
        # Where the runtime comes from a module it is on PATH only after
        # `module load`, which the job does; here a missing one is a warning.
        checks += (
            f'command -v {rt} >/dev/null 2>&1 || echo "warning: {rt} is not on the login '
            f"node's PATH; the job expects it from its module load lines\" >&2\n"
        )
    else:
        checks += require_command(
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


def status_snippet(job_id: str) -> str:
    jid = shlex.quote(job_id)
    return (
        "set -u\n"
        + require_command("squeue", "Slurm's client commands")
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


def cancel_snippet(job_id: str) -> str:
    jid = shlex.quote(job_id)
    # scancel says nothing and exits 0 for a job id Slurm no longer knows, so
    # ask squeue first; its answer is the one the user needs.
    return (
        "set -u\n"
        + require_command("scancel", "Slurm's client commands")
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
