"""A cluster job's options: the job file and flags merged into a JobSpec, then validated.

Nothing here touches a network or a cluster, so all of it is unit-tested
without one. `cluster.tasks` feeds these functions from flags and a YAML job
file; `cluster.batch_script` renders what they accept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

from cluster.job_error import JobError
from cluster.registry import cached_image_name, check_registry_reference, is_registry_reference

CONTAINER_RUNTIMES = ("apptainer", "singularity", "charliecloud")
# "none": no container; the command runs on the node with what `modules` load
# (e.g. python), in a venv built in node-local scratch when there are requirements.
NO_CONTAINER = "none"
RUNTIMES = (*CONTAINER_RUNTIMES, NO_CONTAINER)
# The executable each container runtime needs on the login node and the compute nodes.
RUNTIME_COMMAND = {"apptainer": "apptainer", "singularity": "singularity", "charliecloud": "ch-run"}
# The executable that pulls an image for each runtime.
PULL_COMMAND = {"apptainer": "apptainer", "singularity": "singularity", "charliecloud": "ch-image"}

DEFAULT_CACHE_DIR = "~/.workbench/images"
DEFAULT_JOBS_DIR = "~/.workbench/slurm"


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
    wheelhouse: str = ""


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
# Not starting with "-": `module load -x` would read an option.
_MODULE = re.compile(r"[A-Za-z0-9._+/][A-Za-z0-9._+/-]*")
# #SBATCH lines are parsed by sbatch, not by a shell, so values there cannot be
# quoted; paths that go there must not need it.
_SBATCH_PATH = re.compile(r"[A-Za-z0-9._+/%~=@,:-]+")


def _check_path(
    option: str, value: str, *, sbatch_line: bool = False, bound: bool = False
) -> None:
    """A path: anything but a newline or NUL goes into the shell quoted; `sbatch_line`:
    it also goes on an #SBATCH line, where nothing can be quoted; `bound`: it is the
    host side of a bind mount, where the runtimes read ':' and ',' as separators."""
    if not value.strip():
        raise JobError(f"--{option}: empty path")
    if "\n" in value or "\0" in value:
        raise JobError(f"--{option}: path contains a newline or NUL")
    if sbatch_line and not _SBATCH_PATH.fullmatch(value):
        raise JobError(
            f"--{option}: '{value}' goes on an #SBATCH line, where sbatch cannot read spaces,"
            " quotes or shell characters; use letters, digits and . _ - / % ~ only"
        )
    if bound and ("," in value or ":" in value):
        raise JobError(
            f"--{option}: '{value}' is bound into the container, and apptainer's --bind reads"
            " ',' and ':' as separators; use a path without them"
        )


def join_path(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def image_path(spec: JobSpec) -> str:
    """The image on the cluster: the path given, or its place in the shared cache ('' for none)."""
    if is_registry_reference(spec.image):
        return join_path(spec.cache_dir, cached_image_name(spec.image, spec.runtime))
    return spec.image


def validate(spec: JobSpec, *, command_required: bool = True) -> JobSpec:
    """Check every option before anything reaches the cluster; JobError names the first bad one.

    `command_required`: False where the task supplies the command itself (slurm.jupyter).
    """
    if command_required and (
        not spec.command or (isinstance(spec.command, str) and not spec.command.strip())
    ):
        raise JobError("--command: required (the command to run in the container)")
    words = [spec.command] if isinstance(spec.command, str) else list(spec.command)
    if any("\0" in word for word in words):
        raise JobError("--command: contains a NUL byte")
    if spec.runtime not in RUNTIMES:
        raise JobError(f"--runtime: '{spec.runtime}' is not one of {', '.join(RUNTIMES)}")
    if spec.runtime == NO_CONTAINER:
        # A container option without a container would be silently ignored.
        if spec.image:
            raise JobError(f"--image: '{spec.image}' with --runtime none, which runs no"
                           " container; drop the image or pick a container runtime")
        if spec.binds:
            raise JobError("--bind: --runtime none runs no container, so there is nothing to"
                           " bind into; use the paths as they are")
    elif not spec.image:
        raise JobError("--image: required (a registry reference pulled by slurm.pull, or a path)")
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
    if not spec.output and spec.jobs_dir.strip() and not _SBATCH_PATH.fullmatch(spec.jobs_dir):
        # The default log path is under the jobs dir, on an #SBATCH line.
        raise JobError(
            f"--jobs-dir: '{spec.jobs_dir}' holds the default --output log, which goes on an"
            " #SBATCH line, where sbatch cannot read spaces, quotes or shell characters; use"
            " letters, digits and . _ - / % ~ only, or give --output"
        )
    for line in spec.sbatch:
        # sbatch reads the line itself (no shell); a CR or NUL would break the script.
        if not line.startswith("-") or any(c in line for c in "\n\r\0"):
            raise JobError(
                f"--sbatch: '{line}' should be one sbatch option such as --constraint=a100"
            )
    for module in spec.modules:
        if not _MODULE.fullmatch(module):
            raise JobError(f"--module: '{module}' is not a module name (e.g. cuda/12.2)")
    for option in ("cache_dir", "jobs_dir", "stage_data"):
        if getattr(spec, option):
            _check_path(option.replace("_", "-"), getattr(spec, option))
    for option in ("code", "data", "output_dir"):
        if getattr(spec, option):
            _check_path(option.replace("_", "-"), getattr(spec, option), bound=True)
    if spec.requirements:
        _check_path("requirements", spec.requirements)
    if spec.wheelhouse:
        if not spec.requirements:
            raise JobError(f"--wheelhouse: '{spec.wheelhouse}' without --requirements: there is"
                           " nothing to install from it")
        _check_path("wheelhouse", spec.wheelhouse, bound=spec.runtime != NO_CONTAINER)
    if spec.image and is_registry_reference(spec.image):
        check_registry_reference("--image", spec.image)
    elif spec.image:
        _check_path("image", spec.image)
    for bind in spec.binds:
        source, _, target = bind.partition(":")
        _check_path("bind", source, bound=True)
        if target and not target.startswith("/"):
            raise JobError(f"--bind: '{bind}': the container side must be an absolute path")
        if "," in target or "\n" in target or "\0" in target:
            raise JobError(f"--bind: '{bind}': the container side may not hold ',', a newline"
                           " or NUL")
    return spec
