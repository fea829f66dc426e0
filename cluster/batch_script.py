"""The sbatch script for a validated job: #SBATCH lines, scratch staging, the container run.

Paths in a job are as the cluster sees them: absolute, or relative to the
user's home directory on the login node (a leading ``~/`` is allowed). The
submit task runs sbatch from $HOME, so Slurm resolves relative #SBATCH paths
against the same directory the script body does.
"""

from __future__ import annotations

from bootstrap.shell import LINES, Sh, comment, sh, words
from cluster.job import JobSpec, image_path, join_path

# Where code, data, output and node-local scratch appear inside the container.
# NGC images work in /workspace; charliecloud needs these mount points to exist
# in the image (ch-run creates none in a read-only image).
CONTAINER_CODE = "/workspace/code"


CONTAINER_DATA = "/workspace/data"


CONTAINER_OUTPUT = "/workspace/output"


CONTAINER_SCRATCH = "/workspace/scratch"


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


def _bind_pairs(spec: JobSpec) -> list[tuple[Sh, str]]:
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
    if needs_scratch(spec):
        pairs.append((Sh('"$scratch"'), CONTAINER_SCRATCH))
    for bind in spec.binds:
        source, _, target = bind.partition(":")
        pairs.append((shell_path(source), target or (source if source.startswith("/") else "")))
    return pairs


def needs_scratch(spec: JobSpec) -> bool:
    return bool(spec.stage_data or spec.requirements)


def runtime_line(spec: JobSpec, image: str) -> Sh:
    """The command of the batch script that starts the container (continued lines)."""
    argv = container_command(spec)
    binds = _bind_pairs(spec)
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
    lines.append(words(argv))
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


def render_batch_script(spec: JobSpec) -> Sh:
    """The whole sbatch script for a validated spec."""
    image = image_path(spec)
    out: list[Sh] = [Sh("#!/bin/bash"), *sbatch_directives(spec)]
    out += [
        comment(f" Written by gpu-workbench `fab slurm.submit` ({spec.runtime})."),
        # No `set -u`: Lmod's `module` function reads unset variables.
        Sh("set -eo pipefail"),
        Sh(""),
    ]
    if spec.modules:
        out += [sh("module load {module}", module=m) for m in spec.modules] + [Sh("")]
    if needs_scratch(spec):
        out += [
            Sh("# Node-local scratch: the site's $SLURM_TMPDIR, else our own per-job dir"),
            Sh("# under /tmp that this job removes when it ends."),
            Sh('if [ -n "${SLURM_TMPDIR:-}" ]; then'),
            Sh('  scratch="$SLURM_TMPDIR/workbench"'),
            Sh("else"),
            Sh('  scratch="/tmp/workbench-$(id -un)-$SLURM_JOB_ID"'),
            Sh("  trap 'rm -rf -- \"$scratch\"' EXIT"),
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
    out.append(runtime_line(spec, image))
    return LINES.join(out) + LINES
