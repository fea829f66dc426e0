"""The sbatch script for a validated job: #SBATCH lines, modules, scratch staging, the run.

Paths in a job are as the cluster sees them: absolute, or relative to the
user's home directory on the login node (a leading ``~/`` is allowed). The
submit task runs sbatch from $HOME, so Slurm resolves relative #SBATCH paths
against the same directory the script body does.

A container job runs its command in the image, with code, data, output and
scratch bound at /workspace/...; a `runtime: none` job runs it on the node,
with the same places given by path. Either way the command finds them in
WORKBENCH_CODE, WORKBENCH_DATA, WORKBENCH_OUTPUT and WORKBENCH_SCRATCH.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootstrap.shell import LINES, Sh, comment, sh, words
from cluster import jupyter_job
from cluster.job import NO_CONTAINER, JobSpec, image_path, join_path

# Where code, data, output and node-local scratch appear inside the container.
# NGC images work in /workspace; charliecloud needs these mount points to exist
# in the image (ch-run creates none in a read-only image).
CONTAINER_CODE = "/workspace/code"


CONTAINER_DATA = "/workspace/data"


CONTAINER_OUTPUT = "/workspace/output"


CONTAINER_SCRATCH = "/workspace/scratch"


CONTAINER_WHEELHOUSE = "/workspace/wheelhouse"

# Builds a venv, installs the requirements into it and execs the command in it:
# `sh -c SETUP workbench-venv VENV REQUIREMENTS WHEELHOUSE COMMAND...`, where an
# empty WHEELHOUSE installs from the index pip is configured with. In a container
# the venv sits over the image's Python and keeps its packages (the NGC
# frameworks); on the node it is a plain venv of the Python the modules loaded.
_VENV_IN_CONTAINER = (
    'set -e; venv="$1"; req="$2"; wheels="$3"; shift 3; '
    'python3 -m venv --system-site-packages "$venv"; '
    '"$venv/bin/python" -m pip install --quiet --no-input '
    '${wheels:+--no-index --find-links "$wheels"} -r "$req"; '
    '. "$venv/bin/activate"; exec "$@"'
)
_VENV_ON_NODE = (
    'set -e; venv="$1"; req="$2"; wheels="$3"; shift 3; '
    'python3 -m venv "$venv"; '
    '"$venv/bin/python" -m pip install --quiet --no-input '
    '${wheels:+--no-index --find-links "$wheels"} -r "$req"; '
    '. "$venv/bin/activate"; exec "$@"'
)

# Where a batch shell finds `module` when the environment sbatch passed on has
# none: the init scripts Lmod and Environment Modules install (a login shell
# sources the profile.d ones).
_MODULE_INITS = Sh(
    "/etc/profile.d/lmod.sh /etc/profile.d/modules.sh "
    "/usr/share/lmod/lmod/init/bash /usr/share/Modules/init/bash /usr/share/modules/init/bash"
)


def shell_path(path: str) -> Sh:
    """A cluster path as a shell word: absolute stays absolute, else under $HOME."""
    if path.startswith("/"):
        return sh("{path}", path=path)
    relative = path[2:] if path.startswith("~/") else path
    return sh('"$HOME"/{relative}', relative=relative)


def sbatch_path(path: str) -> str:
    """A path for an #SBATCH line: sbatch resolves relative paths from the submit dir ($HOME)."""
    return path[2:] if path.startswith("~/") else path


def default_output(spec: JobSpec) -> str:
    # %A_%a names one file per array task; %j is each task's own job id.
    pattern = "%x-%A_%a.out" if spec.array else "%x-%j.out"
    return join_path(spec.jobs_dir, "logs/" + pattern)


def is_container(spec: JobSpec) -> bool:
    return spec.runtime != NO_CONTAINER


def needs_scratch(spec: JobSpec, jupyter: bool = False) -> bool:
    return bool(spec.stage_data or spec.requirements or jupyter)


@dataclass(frozen=True)
class Places:
    """Where the command finds each thing, as shell words (None: the job has none)."""

    code: Sh | None
    data: Sh | None
    output: Sh | None
    scratch: Sh | None
    wheelhouse: Sh | None
    requirements: Sh | None


def places(spec: JobSpec, jupyter: bool = False) -> Places:
    has_scratch = needs_scratch(spec, jupyter)
    if not is_container(spec):
        return Places(
            code=shell_path(spec.code) if spec.code else None,
            data=(Sh('"$scratch"/data') if spec.stage_data
                  else shell_path(spec.data) if spec.data else None),
            output=shell_path(spec.output_dir) if spec.output_dir else None,
            scratch=Sh('"$scratch"') if has_scratch else None,
            wheelhouse=shell_path(spec.wheelhouse) if spec.wheelhouse else None,
            requirements=Sh('"$scratch"/requirements.txt') if spec.requirements else None,
        )

    def inside(path: str, present: object) -> Sh | None:
        return sh("{path}", path=path) if present else None

    return Places(
        code=inside(CONTAINER_CODE, spec.code),
        data=inside(CONTAINER_DATA, spec.stage_data or spec.data),
        output=inside(CONTAINER_OUTPUT, spec.output_dir),
        scratch=inside(CONTAINER_SCRATCH, has_scratch),
        wheelhouse=inside(CONTAINER_WHEELHOUSE, spec.wheelhouse),
        requirements=inside(CONTAINER_SCRATCH + "/requirements.txt", spec.requirements),
    )


def command_argv(spec: JobSpec, jupyter: bool = False) -> list[Sh]:
    """The command the job runs (in the container, or on the node), as shell words."""
    where = places(spec, jupyter)
    if jupyter:
        assert where.scratch is not None  # needs_scratch(spec, jupyter=True)
        root = where.code or (None if is_container(spec) else Sh('"$HOME"'))
        argv = jupyter_job.launcher_argv(where.scratch, root)
    elif isinstance(spec.command, str):
        # A string is a shell command line: the user's own quoting and $VARS are
        # read by the container's (or the node's) shell, and by nothing before it.
        argv = [words(["sh", "-c", spec.command])]
    else:
        argv = [words(list(spec.command))]  # a list is an argv passed as is
    if spec.requirements:
        assert where.scratch is not None and where.requirements is not None
        setup = _VENV_IN_CONTAINER if is_container(spec) else _VENV_ON_NODE
        argv = [
            words(["sh", "-c", setup, "workbench-venv"]),
            where.scratch + Sh("/venv"),
            where.requirements,
            where.wheelhouse or sh("{none}", none=""),
            *argv,
        ]
    return argv


def _bind_pairs(spec: JobSpec, jupyter: bool = False) -> list[tuple[Sh, str]]:
    """(host side as a shell word, container side) for every bind mount."""
    pairs: list[tuple[Sh, str]] = []
    if spec.code:
        pairs.append((shell_path(spec.code), CONTAINER_CODE))
    if spec.stage_data:
        pairs.append((Sh('"$scratch"/data'), CONTAINER_DATA))
    elif spec.data:
        pairs.append((shell_path(spec.data), CONTAINER_DATA))
    if spec.output_dir:
        pairs.append((shell_path(spec.output_dir), CONTAINER_OUTPUT))
    if needs_scratch(spec, jupyter):
        pairs.append((Sh('"$scratch"'), CONTAINER_SCRATCH))
    if spec.wheelhouse:
        pairs.append((shell_path(spec.wheelhouse), CONTAINER_WHEELHOUSE))
    for bind in spec.binds:
        source, _, target = bind.partition(":")
        pairs.append((shell_path(source), target or (source if source.startswith("/") else "")))
    return pairs


def runtime_line(spec: JobSpec, image: str, jupyter: bool = False) -> Sh:
    """The command of the batch script that starts the run (continued lines)."""
    argv = command_argv(spec, jupyter)
    if not is_container(spec):
        return Sh(" \\\n  ").join(argv)
    binds = _bind_pairs(spec, jupyter)
    flag = "-b" if spec.runtime == "charliecloud" else "--bind"
    bind_words = [sh("{flag} {host}:{target}", flag=flag, host=host, target=target) if target
                  else sh("{flag} {host}", flag=flag, host=host)
                  for host, target in binds]
    if spec.runtime == "charliecloud":
        lines = [Sh("ch-run"), *bind_words]
        if spec.code:
            lines.append(sh("--cd {code}", code=CONTAINER_CODE))
        lines.append(shell_path(image) + Sh(" --"))
    else:
        lines = [sh("{runtime} exec", runtime=spec.runtime) + (Sh(" --nv") if spec.nv else Sh("")),
                 *bind_words]
        if spec.code:
            lines.append(sh("--pwd {code}", code=CONTAINER_CODE))
        lines.append(shell_path(image))
    lines.extend(argv)
    return Sh(" \\\n  ").join(lines)


def sbatch_directives(spec: JobSpec) -> list[Sh]:
    """The #SBATCH lines: read by sbatch, not a shell, so nothing in them can be quoted;
    cluster.job.validate keeps their values to what sbatch reads as one word."""
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
    return [comment("SBATCH " + line) for line in lines]


def module_lines(spec: JobSpec) -> list[Sh]:
    """`module load` for each module, after making sure the batch shell has `module`."""
    if not spec.modules:
        return []
    out = [
        Sh("# sbatch passes on the submitting shell's environment, which may lack the"),
        Sh("# `module` function; then source the site's init, as a login shell would."),
        Sh("if ! type module >/dev/null 2>&1; then"),
        Sh("  set +eo pipefail  # init scripts are written for interactive shells"),
        sh("  for wb_init in {inits}; do", inits=_MODULE_INITS),
        Sh('    if [ -r "$wb_init" ]; then . "$wb_init" >/dev/null; break; fi'),
        Sh("  done"),
        Sh("  set -eo pipefail"),
        Sh("fi"),
        Sh("if ! type module >/dev/null 2>&1; then"),
        Sh('  echo "gpu-workbench: no module command on $(hostname) (no Lmod or Environment'
           ' Modules init found); cannot load the job\'s modules" >&2'),
        Sh("  exit 3"),
        Sh("fi"),
    ]
    # Lmod returns non-zero for a module it cannot find, after a dozen lines on
    # stderr; the job's last line says which module and the first of Lmod's words.
    out += [Sh('wb_modules=$(mktemp) && wb_remove+=("$wb_modules")')]
    for module in spec.modules:
        out += [
            sh('if ! module load {module} 2>"$wb_modules"; then', module=module),
            sh('  echo "gpu-workbench: module load" {module} "failed:'
               " $(grep -v '^[[:space:]]*$' \"$wb_modules\" | head -n 2 | tr '\\n' ' ')\" >&2",
               module=module),
            Sh("  exit 3"),
            Sh("fi"),
            Sh('cat -- "$wb_modules" >&2  # what a load that worked said (warnings)'),
        ]
    return [*out, Sh("")]


def workbench_exports(spec: JobSpec, jupyter: bool = False) -> list[Sh]:
    """WORKBENCH_* for the command: the same names whether it runs in a container or not."""
    where = places(spec, jupyter)
    exports = ((Sh("export WORKBENCH_CODE="), where.code),
               (Sh("export WORKBENCH_DATA="), where.data),
               (Sh("export WORKBENCH_OUTPUT="), where.output),
               (Sh("export WORKBENCH_SCRATCH="), where.scratch))
    return [assignment + word for assignment, word in exports if word is not None]


def render_batch_script(spec: JobSpec, jupyter: bool = False) -> Sh:
    """The whole sbatch script for a validated spec; `jupyter`: the job serves Jupyter
    (cluster.jupyter_job) instead of running the spec's command."""
    image = image_path(spec)
    task = "slurm.jupyter" if jupyter else "slurm.submit"
    out: list[Sh] = [Sh("#!/bin/bash"), *sbatch_directives(spec)]
    out += [
        comment(f" Written by gpu-workbench `fab {task}` ({spec.runtime})."),
        # No `set -u`: Lmod's `module` function reads unset variables.
        Sh("set -eo pipefail"),
        # Paths removed when the script exits, however it ends (bash runs the
        # EXIT trap on scancel's SIGTERM too).
        Sh("wb_remove=()"),
        Sh("trap 'rm -rf -- \"${wb_remove[@]}\"' EXIT"),
        Sh(""),
    ]
    out += module_lines(spec)
    if needs_scratch(spec, jupyter):
        out += [
            Sh("# Node-local scratch: the site's $SLURM_TMPDIR, else our own per-job dir"),
            Sh("# under /tmp that this job removes when it ends."),
            Sh('if [ -n "${SLURM_TMPDIR:-}" ]; then'),
            Sh('  scratch="$SLURM_TMPDIR/workbench"'),
            Sh("else"),
            Sh('  scratch="/tmp/workbench-$(id -un)-$SLURM_JOB_ID"'),
            Sh('  wb_remove+=("$scratch")'),
            Sh("fi"),
            Sh('mkdir -p -m 700 -- "$scratch"'),
        ]
        if spec.stage_data:
            out += [
                # The path is a word of its own: inside the message's quotes bash
                # would run what a $(...) in it says.
                sh('echo "gpu-workbench: staging" {path} "into $scratch/data" >&2',
                   path=spec.stage_data),
                Sh('mkdir -p -- "$scratch"/data'),
                sh('tar -xf {path} -C "$scratch"/data', path=shell_path(spec.stage_data)),
            ]
        if spec.requirements:
            out.append(sh('cp -- {path} "$scratch"/requirements.txt',
                          path=shell_path(spec.requirements)))
        out.append(Sh(""))
    out += workbench_exports(spec, jupyter)
    if spec.code and not is_container(spec):
        out.append(sh("cd -- {code}", code=shell_path(spec.code)))
    line = runtime_line(spec, image, jupyter)
    if jupyter:
        out += jupyter_job.serve(line, shell_path(jupyter_job.state_root(spec.jobs_dir)))
    else:
        out.append(line)
    return LINES.join(out) + LINES
