"""Reading what Slurm says: sbatch's job id and errors, squeue/sacct rows, output patterns."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cluster.job_error import JobError


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
