"""The sh snippets the slurm tasks run on the login node, one per task.

Each reads all of its stdin first (the sender must finish before an early
exit closes the channel) and reports failures on stderr with the exit codes
of cluster.login_node. Each is built with bootstrap.shell's `sh`: a value
(a path, a job id, a name) is one quoted word, and a message prints it as a
word of its own, never inside its double quotes.
"""

from __future__ import annotations

from bootstrap.shell import LINES, SPACE, Sh, sh
from cluster.batch_script import sbatch_directives, shell_path
from cluster.job import (
    NO_CONTAINER,
    PULL_COMMAND,
    RUNTIME_COMMAND,
    JobSpec,
    image_path,
)
from cluster.jupyter_job import state_dir
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


def pull_snippet(runtime: str, reference: str, cache_dir: str) -> Sh:
    """sh that pulls `reference` into the cache once, atomically (temp name, then rename).

    Reads two lines from stdin: registry user and password (empty for anonymous).
    """
    name = cached_image_name(reference, runtime)
    tool = PULL_COMMAND[runtime]
    ref = registry_reference(reference)
    head = sh(
        # Read all of stdin before anything can exit: the sender must finish
        # before the channel closes, or its write fails.
        "{{ IFS= read -r user || user=''; IFS= read -r password || password=''; "
        "cat >/dev/null; }}\n"
        "cache={cache}\n"
        'final="$cache"/{name}\n'
        'if [ -e "$final" ]; then printf "present %s\\n" "$final"; exit 0; fi\n'
        "{require}"
        'mkdir -p -- "$cache" || exit {precondition}\n'
        # A half-pulled image never sits under the final name: the pull writes
        # a dot-name in the same directory, renamed only when complete.
        'tmp="$cache"/.{name}.partial.$$\n'
        "log=$(mktemp) || exit 3\n"
        "trap 'rm -rf -- \"$tmp\" \"$log\"' EXIT\n",
        cache=shell_path(cache_dir), name=name, precondition=PRECONDITION,
        require=require_command(tool, f"slurm.pull --runtime {runtime} needs it",
                                list_runtimes=True),
    )
    if runtime == "charliecloud":
        body = sh(
            'if [ -n "$user" ]; then export CH_IMAGE_USERNAME="$user" '
            'CH_IMAGE_PASSWORD="$password" CH_IMAGE_AUTH=yes; fi\n'
            "{require}"
            # --no-cache: the build cache needs git and a git identity, and a
            # pull only to convert gains nothing from it.
            'ch-image --no-cache pull {ref} >"$log" 2>&1 && '
            'ch-convert -i ch-image -o dir {ref} "$tmp" >>"$log" 2>&1\n',
            ref=ref, require=require_command("ch-convert", "charliecloud pulls convert with it"),
        )
    else:
        # export's arguments are words: a quoted NAME=value is still an assignment.
        prefix = runtime.upper() + "_DOCKER_"
        body = sh(
            'if [ -n "$user" ]; then export {username}="$user" '
            '{password}="$password"; fi\n'
            '{tool} pull --disable-cache "$tmp" {docker_ref} >"$log" 2>&1\n',
            username=prefix + "USERNAME", password=prefix + "PASSWORD",
            tool=tool, docker_ref="docker://" + ref,
        )
    tail = sh(
        "status=$?\n"
        'if [ "$status" -ne 0 ]; then\n'
        '  msg=$(grep -iE "fatal|error" "$log" | tail -n 1)\n'
        '  [ -n "$msg" ] || msg=$(tail -n 1 "$log")\n'
        '  printf "%s\\n" "$msg" >&2\n'
        "  exit {refused}\n"
        "fi\n"
        # -T: never move a finished image *into* one a concurrent pull made.
        'mv -T -- "$tmp" "$final" || exit 4\n'
        'printf "pulled %s\\n" "$final"\n',
        refused=REFUSED,
    )
    return Sh("set -u\n") + head + body + tail


def submit_snippet(spec: JobSpec) -> Sh:
    """sh that checks the login node, writes the script (stdin) atomically and runs sbatch."""
    checks = [require_command("sbatch", "slurm.submit needs Slurm's client commands")]
    if spec.runtime != NO_CONTAINER:
        checks += _container_checks(spec)
    for flag, path in ((Sh("--stage-data"), spec.stage_data),
                       (Sh("--requirements"), spec.requirements)):
        if path:
            checks.append(sh(
                "p={path}\n"
                'if [ ! -r "$p" ]; then '
                'echo "{flag}: $p is not readable on the login node" >&2; '
                "exit {precondition}; fi\n",
                path=shell_path(path), flag=flag, precondition=PRECONDITION,
            ))
    if spec.wheelhouse:
        checks.append(sh(
            "p={path}\n"
            'if [ ! -d "$p" ] || [ ! -r "$p" ]; then '
            'echo "--wheelhouse: $p is not a readable directory on the login node" >&2; '
            "exit {precondition}; fi\n",
            path=shell_path(spec.wheelhouse), precondition=PRECONDITION,
        ))
    # Slurm does not create the directory of --output/--error: a job whose log
    # dir is missing fails without a word. Make the ones without % patterns.
    log_dirs: set[Sh] = set()
    script = LINES.join(sbatch_directives(spec)).text
    for option in ("output", "error"):
        value = sbatch_option(script, option)
        if value and "/" in value and "%" not in value.rsplit("/", 1)[0]:
            log_dirs.add(shell_path(value.rsplit("/", 1)[0]))
    return sh(
        "set -u\n"
        # Take the whole script off stdin first (the sender must finish before
        # an early exit closes the channel); the dot keeps trailing newlines.
        "script=$(cat; echo .); script=${{script%.}}\n"
        # sbatch resolves relative #SBATCH paths from here, as the script body does.
        'cd "$HOME" || exit {precondition}\n'
        "{checks}"
        "jobs={jobs}\n"
        'mkdir -p -- "$jobs" {log_dirs} || exit {precondition}\n'
        'tmp=$(mktemp "$jobs"/.{name}.XXXXXX) || exit {precondition}\n'
        "trap 'rm -f -- \"$tmp\"' EXIT\n"
        'printf "%s" "$script" >"$tmp" || exit {precondition}\n'
        'final="$jobs"/{name}.$(date +%Y%m%d-%H%M%S).$$.sbatch\n'
        'mv -- "$tmp" "$final" || exit {precondition}\n'
        "err=$(mktemp) || exit 3\n"
        "trap 'rm -f -- \"$tmp\" \"$err\"' EXIT\n"
        'if out=$(sbatch --parsable "$final" 2>"$err"); then\n'
        '  cat "$err" >&2\n'
        "  id=${{out%%;*}}\n"
        # JOBID.sbatch lets slurm.logs find the output path after the job has
        # left slurmctld's memory.
        '  ln -sf -- "$(basename -- "$final")" "$jobs/$id.sbatch"\n'
        '  printf "%s\\n%s\\n" "$out" "$final"\n'
        "else\n"
        '  rm -f -- "$final"\n'
        '  cat "$err" >&2\n'
        "  exit {refused}\n"
        "fi\n",
        precondition=PRECONDITION, refused=REFUSED, checks=Sh("").join(checks),
        jobs=shell_path(spec.jobs_dir),
        log_dirs=SPACE.join(sorted(log_dirs, key=lambda d: d.text)), name=spec.name,
    )


def _container_checks(spec: JobSpec) -> list[Sh]:
    """The runtime on the login node's PATH (or a module's promise of it), and the image."""
    rt = RUNTIME_COMMAND[spec.runtime]
    if spec.modules:
        # Where the runtime comes from a module it is on PATH only after
        # `module load`, which the job does; here a missing one is a warning.
        found = sh(
            'command -v {rt} >/dev/null 2>&1 || echo "warning:" {rt} "is not on the login '
            "node's PATH; the job expects it from its module load lines\" >&2\n",
            rt=rt,
        )
    else:
        found = require_command(
            rt, f"--runtime {spec.runtime} runs jobs with it", list_runtimes=True
        )
    return [found, sh(
        "image={image}\n"
        'if [ ! -e "$image" ]; then echo "image $image is not on the cluster; '
        'run slurm.pull first" >&2; exit {precondition}; fi\n',
        image=shell_path(image_path(spec)), precondition=PRECONDITION,
    )]


def status_snippet(job_id: str) -> Sh:
    return sh(
        "set -u\n"
        "{require}"
        # -t all: a job that just ended is still in slurmctld's memory for
        # MinJobAge seconds; after that only accounting knows it.
        "if out=$(squeue -h -t all -j {jid} -o '%i|%T|%M|%l|%R' 2>&1); then\n"
        '  if [ -n "$out" ]; then echo squeue; printf "%s\\n" "$out"; exit 0; fi\n'
        # "Invalid job id" is squeue's word for "not in memory any more"; any
        # other failure (slurmctld down, auth) is the answer the user needs.
        'elif ! printf "%s" "$out" | grep -q "Invalid job id"; then\n'
        '  printf "%s\\n" "$out" >&2; exit {refused}\n'
        "fi\n"
        "if out=$(sacct -n -P -X -j {jid} -o JobID,State,Elapsed,Timelimit,ExitCode 2>&1) "
        '&& [ -n "$out" ]; then echo sacct; printf "%s\\n" "$out"; exit 0; fi\n'
        'echo "job" {jid} "is not in the queue and sacct has no record of it'
        '${{out:+ (sacct: $out)}}" >&2\n'
        "exit {refused}\n",
        require=require_command("squeue", "Slurm's client commands"), jid=job_id,
        refused=REFUSED,
    )


def logs_locate_snippet(job_id: str, jobs_dir: str) -> Sh:
    return sh(
        "set -u\n"
        'if info=$(scontrol show job -o {jid} 2>/dev/null) && [ -n "$info" ]; then\n'
        '  echo scontrol; printf "%s\\n" "$info"; exit 0\n'
        "fi\n"
        "record={jobs}/{base}.sbatch\n"
        'if [ -r "$record" ]; then echo record; id -un; grep "^#SBATCH --" "$record"; exit 0; fi\n'
        'echo "job" {jid} "is not known to slurmctld and was not submitted through '
        'slurm.submit with jobs dir" {jobs_dir} >&2\n'
        "exit {refused}\n",
        jid=job_id, base=job_id.split("_", 1)[0], jobs=shell_path(jobs_dir), jobs_dir=jobs_dir,
        refused=REFUSED,
    )


def cancel_snippet(job_id: str) -> Sh:
    """sh that cancels a waiting or running job and prints the state it had; for a job
    that already ended it prints `ended STATE` and cancels nothing (exit 0): ending a
    session that its time limit already ended is not an error."""
    # scancel says nothing and exits 0 for a job id Slurm no longer knows, so
    # ask squeue first, then accounting; their answer is the one the user needs.
    return sh(
        "set -u\n"
        "{require}"
        'if ! state=$(squeue -h -t all -j {jid} -o %T 2>&1) || [ -z "$state" ]; then\n'
        "  if ended=$(sacct -n -P -X -j {jid} -o State 2>/dev/null) && [ -n \"$ended\" ]; then\n"
        '    echo "ended" $ended; exit 0\n'
        "  fi\n"
        '  echo "job" {jid} "is not in the queue${{state:+ ($state)}} and sacct has no record'
        ' of it" >&2; exit {refused}\n'
        "fi\n"
        'case "$state" in\n'
        "  *PENDING*|*RUNNING*|*SUSPENDED*|*CONFIGURING*|*REQUEUE*|*RESIZING*|*STOPPED*) ;;\n"
        # Unquoted: an array's task states go on one line.
        '  *) echo "ended" $state; exit 0 ;;\n'
        "esac\n"
        'err=$(scancel {jid} 2>&1) || {{ printf "%s\\n" "$err" >&2; exit {refused}; }}\n'
        'printf "%s\\n" "$state"\n',
        require=require_command("scancel", "Slurm's client commands"), jid=job_id,
        refused=REFUSED,
    )


# Asks a server for /api/status with the token read from stdin; prints the HTTP
# status, or 000 when nothing answers. No proxy: the node is on the cluster's
# own network, and a site's http_proxy must not see the token.
_PROBE = """\
import sys, urllib.error, urllib.request
token = sys.stdin.readline().strip()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "token " + token})
try:
    print(opener.open(request, timeout=5).status)
except urllib.error.HTTPError as error:
    print(error.code)
except Exception:
    print("000")
"""


def jupyter_poll_snippet(job_id: str, jobs_dir: str) -> Sh:
    """sh that reports a Jupyter job in lines: `state STATE|REASON|NODES|TIMELIMIT`; once
    the job published its endpoint, `endpoint ADDR PORT PATH NODE` and `answer CODE`
    (the HTTP status of /api/status asked with the token); with 200, `token TOKEN`.

    The token goes from its file to a shell variable (`read`, a builtin) and from
    there to curl's (or python3's) stdin: never onto a command line `ps` shows.
    """
    return sh(
        "set -u\n"
        "{require}"
        "q=$(squeue -h -t all -j {jid} -o '%T|%r|%N|%l' 2>/dev/null) || q=''\n"
        # A job that left slurmctld's memory: only accounting knows how it ended.
        'if [ -z "$q" ]; then\n'
        "  q=$(sacct -n -P -X -j {jid} -o State 2>/dev/null | head -n 1)\n"
        '  q="${{q:-UNKNOWN}}|||"\n'
        "fi\n"
        'printf "state %s\\n" "$q"\n'
        "state={state}\n"
        '[ -r "$state"/endpoint ] && [ -r "$state"/token ] || exit 0\n'
        'read -r addr port path node <"$state"/endpoint\n'
        'read -r token <"$state"/token\n'
        'case "$addr" in *:*) host="[$addr]" ;; *) host=$addr ;; esac\n'
        # no_track_activity: our poll is not the user's activity (jupyter_server
        # base/handlers.py), should an idle culler be watching.
        'url="http://$host:$port/api/status?no_track_activity=1"\n'
        "if command -v curl >/dev/null 2>&1; then\n"
        "  code=$(printf 'Authorization: token %s\\n' \"$token\" | curl -s --noproxy '*'"
        " -o /dev/null -m 5 -w '%{{http_code}}' -H @- \"$url\") || true\n"
        "elif command -v python3 >/dev/null 2>&1; then\n"
        "  code=$(printf '%s\\n' \"$token\" | python3 -c {probe} \"$url\") || true\n"
        "else\n"
        "  code=none\n"
        "fi\n"
        'printf "endpoint %s %s %s %s\\nanswer %s\\n" "$addr" "$port" "$path" "$node"'
        ' "${{code:-000}}"\n'
        'if [ "${{code:-}}" = 200 ]; then printf "token %s\\n" "$token"; fi\n',
        require=require_command("squeue", "Slurm's client commands"), jid=job_id,
        state=shell_path(state_dir(jobs_dir, job_id)), probe=_PROBE,
    )
