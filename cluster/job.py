"""Pure logic behind the `slurm` tasks: job options, validation and batch scripts.

Nothing here touches a network or a cluster, so all of it is unit-tested
without one. `cluster.tasks` feeds these functions from flags and a YAML job
file and runs what they render on the login node.

Paths in a job are as the cluster sees them: absolute, or relative to the
user's home directory on the login node (a leading ``~/`` is allowed). The
submit task runs sbatch from $HOME, so Slurm resolves relative #SBATCH paths
against the same directory the script body does.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

RUNTIMES = ("apptainer", "singularity", "charliecloud")
# The executable each runtime needs on the login node and the compute nodes.
RUNTIME_COMMAND = {"apptainer": "apptainer", "singularity": "singularity", "charliecloud": "ch-run"}
# The executable that pulls an image for each runtime.
PULL_COMMAND = {"apptainer": "apptainer", "singularity": "singularity", "charliecloud": "ch-image"}

# Where code, data, output and node-local scratch appear inside the container.
# NGC images work in /workspace; charliecloud needs these mount points to exist
# in the image (ch-run creates none in a read-only image).
CONTAINER_CODE = "/workspace/code"
CONTAINER_DATA = "/workspace/data"
CONTAINER_OUTPUT = "/workspace/output"
CONTAINER_SCRATCH = "/workspace/scratch"

DEFAULT_CACHE_DIR = "~/.workbench/images"
DEFAULT_JOBS_DIR = "~/.workbench/slurm"


class JobError(ValueError):
    """A job option is wrong; the message is one line and names the option."""

    def __init__(self, message: str) -> None:
        # Values quoted back to the user may hold newlines; the message may not.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


@dataclass(frozen=True)
class JobSpec:
    """Everything `slurm.submit` needs, after the job file and flags are merged."""

    command: str | tuple[str, ...] = ""
    image: str = ""
    runtime: str = "apptainer"
    cache_dir: str = DEFAULT_CACHE_DIR
    jobs_dir: str = DEFAULT_JOBS_DIR
    name: str = "workbench"
    account: str = ""
    partition: str = ""
    qos: str = ""
    time: str = ""
    cpus: int = 1
    memory: str = ""
    gpus: int = 0
    array: str = ""
    output: str = ""
    error: str = ""
    sbatch: tuple[str, ...] = ()
    nv: bool = True
    code: str = ""
    data: str = ""
    output_dir: str = ""
    binds: tuple[str, ...] = ()
    stage_data: str = ""
    modules: tuple[str, ...] = ()
    requirements: str = ""


JOB_KEYS = tuple(f.name for f in fields(JobSpec))
_LIST_KEYS = {"sbatch", "binds", "modules"}
_INT_KEYS = {"cpus", "gpus"}
_BOOL_KEYS = {"nv"}


# -- merging a job file with flags ----------------------------------------------


def _coerce(key: str, value: Any, source: str) -> Any:
    """One option from a job file (source: its name) or a flag (source: --flag)."""
    label = f"{source}:" if source.startswith("--") else f"{source}: '{key}'"
    if key == "command":
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str | int) for v in value):
            return tuple(str(v) for v in value)
        raise JobError(f"{label} must be a string or a non-empty list of strings")
    if key in _LIST_KEYS:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise JobError(f"{label} must be a list of strings")
        return tuple(items)
    if key in _INT_KEYS:
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(str(value).strip())
        except ValueError:
            raise JobError(f"{label} must be a whole number, not {value!r}") from None
    if key in _BOOL_KEYS:
        if isinstance(value, bool):
            return value
        raise JobError(f"{label} must be true or false, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise JobError(f"{label} must be a string, not {value!r}")
    return str(value)


def merge_options(
    file_options: Mapping[str, Any] | None,
    flag_options: Mapping[str, Any],
    file_name: str = "job file",
) -> JobSpec:
    """A JobSpec from a job file's mapping, then flags on top (a flag wins).

    A flag counts as given when it is not None and not an empty list, which is
    how invoke reports a flag the user did not pass.
    """
    values: dict[str, Any] = {}
    if file_options is not None:
        if not isinstance(file_options, Mapping):
            raise JobError(f"{file_name}: expected a mapping of job options at the top level")
        for key, value in file_options.items():
            norm = str(key).replace("-", "_")
            if norm not in JOB_KEYS:
                raise JobError(f"{file_name}: unknown key '{key}' (known: {', '.join(JOB_KEYS)})")
            if value is not None:
                values[norm] = _coerce(norm, value, file_name)
    for key, value in flag_options.items():
        if key not in JOB_KEYS:
            raise JobError(f"unknown option --{key.replace('_', '-')}")
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    return replace(JobSpec(), **values)


class _JobFileLoader(yaml.SafeLoader):
    """YAML 1.1 minus its base-60 and octal numbers.

    Plain PyYAML reads `time: 1:30:00` as the integer 5400 and `time: 010` as
    8, which would silently become a 5400- or 8-minute limit. In a job file
    such scalars stay the strings the user typed.
    """


def _int_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    text = str(node.value)
    if ":" in text or (len(text) > 1 and text.startswith("0") and text.isdigit()):
        return text
    return int(loader.construct_yaml_int(node))


def _float_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float | str:
    text = str(node.value)
    return text if ":" in text else float(loader.construct_yaml_float(node))


_JobFileLoader.add_constructor("tag:yaml.org,2002:int", _int_or_text)
_JobFileLoader.add_constructor("tag:yaml.org,2002:float", _float_or_text)


def parse_job_file(text: str, file_name: str) -> dict[str, Any]:
    """A job file's options; JobError (one line, naming the file) when it is not one."""
    try:
        # A SafeLoader subclass: no arbitrary objects.
        data = yaml.load(text, Loader=_JobFileLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise JobError(f"--job-file: {file_name}{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JobError(f"--job-file: {file_name} should hold a mapping of job options")
    return data


# -- validation -----------------------------------------------------------------

# Slurm's --time forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME_FORMS = [
    re.compile(r"(?P<m>\d+)"),
    re.compile(r"(?P<m>\d+):(?P<s>\d+)"),
    re.compile(r"(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d+)"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)"),
]
TIME_FORMS_TEXT = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def time_limit_minutes(value: str) -> int | None:
    """Minutes in a Slurm time limit (rounded up), None for UNLIMITED; JobError if malformed."""
    text = value.strip()
    if text.lower() in ("unlimited", "infinite"):
        return None
    for form in _TIME_FORMS:
        match = form.fullmatch(text)
        if not match:
            continue
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        # The leading field may be any size (Slurm reads "90" as 90 minutes);
        # the fields after it are clock fields and must stay on the clock.
        leading = next(iter(match.groupdict()))
        limits = {"h": 24 if "d" in parts else None, "m": 60, "s": 60}
        for key, limit in limits.items():
            if key in parts and key != leading and limit is not None and parts[key] >= limit:
                break
        else:
            seconds = (
                parts.get("d", 0) * 86400
                + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60
                + parts.get("s", 0)
            )
            return -(-seconds // 60)
    raise JobError(f"--time: '{value}' is not a Slurm time limit ({TIME_FORMS_TEXT})")


_ARRAY_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def array_task_ids(value: str) -> list[int]:
    """The task ids a Slurm --array spec makes (0-15, 1,3,5-7, 0-15:4, 0-9%2), in order."""
    spec, percent, throttle = value.strip().partition("%")
    if percent and not throttle.isdigit():
        raise JobError(f"--array: '{value}': the part after % must be a whole number")
    if not spec:
        raise JobError(f"--array: '{value}' is empty; use e.g. 0-2, 1,3,5 or 0-15:4")
    ids: list[int] = []
    for item in spec.split(","):
        match = _ARRAY_ITEM.fullmatch(item)
        if not match:
            raise JobError(
                f"--array: '{value}' is not a Slurm array ('{item}' should be N, N-M or N-M:STEP)"
            )
        start, end, step = match.groups()
        first, last = int(start), int(end if end is not None else start)
        stride = int(step) if step is not None else 1
        if last < first or stride < 1:
            raise JobError(f"--array: '{value}': range '{item}' runs backwards or has step 0")
        ids.extend(range(first, last + 1, stride))
    return sorted(set(ids))


_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_PARTITIONS = re.compile(r"[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*")
_MEMORY = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
_MODULE = re.compile(r"[A-Za-z0-9._+/-]+")
# #SBATCH lines are parsed by sbatch, not by a shell, so values there cannot be
# quoted; paths that go there must not need it.
_SBATCH_PATH = re.compile(r"[A-Za-z0-9._+/%~=@,:-]+")


def _check_path(option: str, value: str, *, sbatch_line: bool = False) -> None:
    if not value.strip():
        raise JobError(f"--{option}: empty path")
    if "\n" in value or "\0" in value:
        raise JobError(f"--{option}: path contains a newline or NUL")
    if sbatch_line and not _SBATCH_PATH.fullmatch(value):
        raise JobError(
            f"--{option}: '{value}' goes on an #SBATCH line, where sbatch cannot read spaces,"
            " quotes or shell characters; use letters, digits and . _ - / % ~ only"
        )


def is_registry_reference(image: str) -> bool:
    """True for `nvcr.io/nvidia/pytorch:24.05-py3`, `docker://...`; False for paths."""
    if image.startswith("docker://"):
        return True
    if image.startswith(("/", "./", "../", "~")) or image.endswith((".sif", ".sqfs", ".simg")):
        return False
    return "/" in image or ":" in image


def registry_reference(image: str) -> str:
    return image.removeprefix("docker://")


def cached_image_name(image: str, runtime: str) -> str:
    """File (SIF) or directory (charliecloud) name of an image in the shared cache."""
    ref = registry_reference(image)
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        ref += ":latest"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ref)
    return safe if runtime == "charliecloud" else f"{safe}.sif"


def join_path(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def image_path(spec: JobSpec) -> str:
    """The image on the cluster: the path given, or its place in the shared cache."""
    if is_registry_reference(spec.image):
        return join_path(spec.cache_dir, cached_image_name(spec.image, spec.runtime))
    return spec.image


def validate(spec: JobSpec) -> JobSpec:
    """Check every option before anything reaches the cluster; JobError names the first bad one."""
    if not spec.command or (isinstance(spec.command, str) and not spec.command.strip()):
        raise JobError("--command: required (the command to run in the container)")
    if isinstance(spec.command, str) and "\0" in spec.command:
        raise JobError("--command: contains a NUL byte")
    if not spec.image:
        raise JobError("--image: required (a registry reference pulled by slurm.pull, or a path)")
    if spec.runtime not in RUNTIMES:
        raise JobError(f"--runtime: '{spec.runtime}' is not one of {', '.join(RUNTIMES)}")
    if not _SLURM_NAME.fullmatch(spec.name) or len(spec.name) > 128:
        raise JobError(f"--name: '{spec.name}' may hold letters, digits and . _ + - only")
    for option in ("account", "qos"):
        value = getattr(spec, option)
        if value and not _SLURM_NAME.fullmatch(value):
            raise JobError(f"--{option}: '{value}' may hold letters, digits and . _ + - only")
    if spec.partition and not _PARTITIONS.fullmatch(spec.partition):
        raise JobError(f"--partition: '{spec.partition}' is not a partition name (or a, b list)")
    if spec.time:
        time_limit_minutes(spec.time)
    if spec.cpus < 1:
        raise JobError(f"--cpus: must be 1 or more, not {spec.cpus}")
    if spec.gpus < 0:
        raise JobError(f"--gpus: must be 0 or more, not {spec.gpus}")
    if spec.memory and not _MEMORY.fullmatch(spec.memory):
        raise JobError(f"--memory: '{spec.memory}' should be a number with K, M, G or T (16G)")
    if spec.array:
        array_task_ids(spec.array)
    for option in ("output", "error"):
        if getattr(spec, option):
            _check_path(option, getattr(spec, option), sbatch_line=True)
    for line in spec.sbatch:
        if not line.startswith("-") or "\n" in line:
            raise JobError(
                f"--sbatch: '{line}' should be one sbatch option such as --constraint=a100"
            )
    for module in spec.modules:
        if not _MODULE.fullmatch(module):
            raise JobError(f"--module: '{module}' is not a module name (e.g. cuda/12.2)")
    for option in ("cache_dir", "jobs_dir", "code", "data", "output_dir", "stage_data"):
        if getattr(spec, option):
            _check_path(option.replace("_", "-"), getattr(spec, option))
    if spec.requirements:
        _check_path("requirements", spec.requirements)
    if not is_registry_reference(spec.image):
        _check_path("image", spec.image)
    for bind in spec.binds:
        source, _, target = bind.partition(":")
        _check_path("bind", source)
        if target and not target.startswith("/"):
            raise JobError(f"--bind: '{bind}': the container side must be an absolute path")
    return spec


# -- rendering ------------------------------------------------------------------


def shell_path(path: str) -> str:
    """A cluster path as a shell word: absolute stays absolute, else under $HOME."""
    if path.startswith("/"):
        return shlex.quote(path)
    relative = path[2:] if path.startswith("~/") else path
    return '"$HOME"/' + shlex.quote(relative)


def sbatch_path(path: str) -> str:
    """A path for an #SBATCH line: sbatch resolves relative paths from the submit dir ($HOME)."""
    return path[2:] if path.startswith("~/") else path


def default_output(spec: JobSpec) -> str:
    # %A_%a names one file per array task; %j is each task's own job id.
    pattern = "%x-%A_%a.out" if spec.array else "%x-%j.out"
    return join_path(spec.jobs_dir, "logs/" + pattern)


def container_command(spec: JobSpec) -> list[str]:
    """The argv run inside the container, before the runtime prefix."""
    # A string is a shell command line: the user's own quoting and $VARS are
    # read by the container's shell, and by nothing before it. A list is an
    # argv passed as is.
    argv = ["sh", "-c", spec.command] if isinstance(spec.command, str) else list(spec.command)
    if spec.requirements:
        # Build the venv inside the container so it matches the image's Python;
        # --system-site-packages keeps the NGC image's framework packages.
        setup = (
            'set -e; venv="$1"; req="$2"; shift 2; '
            'python3 -m venv --system-site-packages "$venv"; '
            '"$venv/bin/python" -m pip install --quiet --no-input -r "$req"; '
            '. "$venv/bin/activate"; exec "$@"'
        )
        argv = [
            "sh", "-c", setup, "workbench-venv",
            f"{CONTAINER_SCRATCH}/venv", f"{CONTAINER_SCRATCH}/requirements.txt",
            *argv,
        ]  # fmt: skip
    return argv


def _bind_pairs(spec: JobSpec) -> list[tuple[str, str]]:
    """(host side as a shell word, container side) for every bind mount."""
    pairs: list[tuple[str, str]] = []
    if spec.code:
        pairs.append((shell_path(spec.code), CONTAINER_CODE))
    if spec.stage_data:
        pairs.append(('"$scratch"/data', CONTAINER_DATA))
    elif spec.data:
        pairs.append((shell_path(spec.data), CONTAINER_DATA))
    if spec.output_dir:
        pairs.append((shell_path(spec.output_dir), CONTAINER_OUTPUT))
    if needs_scratch(spec):
        pairs.append(('"$scratch"', CONTAINER_SCRATCH))
    for bind in spec.binds:
        source, _, target = bind.partition(":")
        pairs.append((shell_path(source), target or (source if source.startswith("/") else "")))
    return pairs


def needs_scratch(spec: JobSpec) -> bool:
    return bool(spec.stage_data or spec.requirements)


def runtime_line(spec: JobSpec, image: str) -> str:
    """The command of the batch script that starts the container (continued lines)."""
    argv = container_command(spec)
    binds = _bind_pairs(spec)
    if spec.runtime == "charliecloud":
        lines = ["ch-run"]
        for host, target in binds:
            lines.append("-b " + host + (":" + shlex.quote(target) if target else ""))
        if spec.code:
            lines.append("--cd " + CONTAINER_CODE)
        lines.append(shell_path(image) + " --")
    else:
        lines = [f"{spec.runtime} exec" + (" --nv" if spec.nv else "")]
        for host, target in binds:
            lines.append("--bind " + host + (":" + shlex.quote(target) if target else ""))
        if spec.code:
            lines.append("--pwd " + CONTAINER_CODE)
        lines.append(shell_path(image))
    lines.append(" ".join(shlex.quote(word) for word in argv))
    return " \\\n  ".join(lines)


def sbatch_directives(spec: JobSpec) -> list[str]:
    lines = [f"--job-name={spec.name}"]
    for option, value in (("account", spec.account), ("partition", spec.partition),
                          ("qos", spec.qos), ("time", spec.time)):  # fmt: skip
        if value:
            lines.append(f"--{option}={value}")
    lines.append(f"--cpus-per-task={spec.cpus}")
    if spec.memory:
        lines.append(f"--mem={spec.memory}")
    if spec.gpus:
        lines.append(f"--gres=gpu:{spec.gpus}")
    if spec.array:
        lines.append(f"--array={spec.array}")
    lines.append(f"--output={sbatch_path(spec.output or default_output(spec))}")
    if spec.error:
        lines.append(f"--error={sbatch_path(spec.error)}")
    lines.extend(spec.sbatch)
    return ["#SBATCH " + line for line in lines]


def render_batch_script(spec: JobSpec) -> str:
    """The whole sbatch script for a validated spec."""
    image = image_path(spec)
    out: list[str] = ["#!/bin/bash", *sbatch_directives(spec)]
    out += [
        f"# Written by gpu-workbench `fab slurm.submit` ({spec.runtime}).",
        # No `set -u`: Lmod's `module` function reads unset variables.
        "set -eo pipefail",
        "",
    ]
    if spec.modules:
        out += [f"module load {shlex.quote(m)}" for m in spec.modules] + [""]
    if needs_scratch(spec):
        out += [
            "# Node-local scratch: the site's $SLURM_TMPDIR, else our own per-job dir",
            "# under /tmp that this job removes when it ends.",
            'if [ -n "${SLURM_TMPDIR:-}" ]; then',
            '  scratch="$SLURM_TMPDIR/workbench"',
            "else",
            '  scratch="/tmp/workbench-$(id -un)-$SLURM_JOB_ID"',
            "  trap 'rm -rf -- \"$scratch\"' EXIT",
            "fi",
            'mkdir -p -m 700 -- "$scratch"',
        ]
        if spec.stage_data:
            out += [
                f'echo "gpu-workbench: staging {spec.stage_data} into $scratch/data" >&2',
                'mkdir -p -- "$scratch"/data',
                f'tar -xf {shell_path(spec.stage_data)} -C "$scratch"/data',
            ]
        if spec.requirements:
            out.append(f'cp -- {shell_path(spec.requirements)} "$scratch"/requirements.txt')
        out.append("")
    out.append(runtime_line(spec, image))
    return "\n".join(out) + "\n"


# -- reading Slurm's answers ----------------------------------------------------


def sbatch_error_line(stderr: str) -> str:
    """Slurm's rejection as one line: 'sbatch: error: X' lines joined, prefixes dropped."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines
    cleaned = [re.sub(r"^(sbatch|scancel|squeue|sacct|scontrol): (error: )?", "", line)
               for line in errors]  # fmt: skip
    return " / ".join(dict.fromkeys(cleaned)) or "no message from Slurm"


def parse_sbatch_parsable(stdout: str) -> str:
    """The job id from `sbatch --parsable` (JOBID or JOBID;CLUSTER)."""
    first = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = first.split(";", 1)[0]
    if not job_id.isdigit():
        raise JobError(f"sbatch --parsable printed {stdout.strip()!r}, not a job id")
    return job_id


_JOB_ID = re.compile(r"\d+(_\d+)?")


def check_job_id(value: str) -> str:
    text = str(value).strip()
    if not _JOB_ID.fullmatch(text):
        raise JobError(f"JOBID: '{value}' is not a Slurm job id (123 or 123_4)")
    return text


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    elapsed: str
    time_limit: str
    detail: str  # squeue: reason/nodes; sacct: exit code
    source: str  # "squeue" or "sacct"


def parse_job_states(text: str, source: str) -> list[JobState]:
    """Rows of `squeue -o '%i|%T|%M|%l|%R'` or `sacct -P -o JobID,State,Elapsed,...`."""
    states = []
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) < 5 or not cells[0]:
            continue
        states.append(JobState(cells[0], cells[1], cells[2], cells[3], cells[4], source))
    return states


def format_job_states(states: list[JobState]) -> str:
    header = ("JOBID", "STATE", "ELAPSED", "TIMELIMIT", "NODE/REASON/EXIT", "FROM")
    rows = [header] + [
        (s.job_id, s.state, s.elapsed, s.time_limit, s.detail, s.source) for s in states
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


_PATTERN = re.compile(r"%(%|[A-Za-z])")


def expand_output_pattern(pattern: str, job_id: str, job_name: str, user: str) -> str:
    """Slurm's filename pattern for a job that left the queue (%j %x %A %a %u %%).

    `job_id` is 123 or 123_4 (an array task). Raises JobError for patterns that
    need what only slurmctld knew (node name, step, ...).
    """
    base, _, task = job_id.partition("_")

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "%":
            return "%"
        known = {"j": base if not task else None, "x": job_name, "A": base, "u": user,
                 "a": task or None}  # fmt: skip
        value = known.get(code)
        if value is None:
            raise JobError(
                f"output path {pattern!r}: %{code} cannot be resolved for job {job_id}"
                " after it left the queue"
            )
        return value

    return _PATTERN.sub(one, pattern)


def sbatch_option(script: str, option: str) -> str | None:
    """The value of `#SBATCH --option=value` in a script we wrote (last one wins)."""
    value = None
    for line in script.splitlines():
        if line.startswith(f"#SBATCH --{option}="):
            value = line.split("=", 1)[1].strip()
    return value


def registry_credentials(
    runtime: str, image: str, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """Registry login for a pull, from the local environment; None pulls anonymously.

    Explicit APPTAINER_/SINGULARITY_DOCKER_USERNAME+PASSWORD (or CH_IMAGE_ for
    charliecloud) win. NGC_API_KEY is used with the user `$oauthtoken`, and only
    for nvcr.io, so an NGC key is never sent to another registry.
    """
    prefixes = {
        "apptainer": ("APPTAINER_DOCKER_", "SINGULARITY_DOCKER_"),
        "singularity": ("SINGULARITY_DOCKER_", "APPTAINER_DOCKER_"),
        "charliecloud": ("CH_IMAGE_", "APPTAINER_DOCKER_", "SINGULARITY_DOCKER_"),
    }[runtime]
    found: tuple[str, str] | None = None
    for prefix in prefixes:
        user, password = environ.get(prefix + "USERNAME"), environ.get(prefix + "PASSWORD")
        if user and password:
            found = (user, password)
            break
    ngc_key = environ.get("NGC_API_KEY")
    if found is None and ngc_key and registry_reference(image).startswith("nvcr.io/"):
        found = ("$oauthtoken", ngc_key)
    if found and any("\n" in part or "\r" in part for part in found):
        raise JobError("registry credentials contain a newline")
    return found
