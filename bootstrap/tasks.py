"""Fabric tasks: `fab -H user@host bootstrap` and each step on its own.

    fab -H ubuntu@203.0.113.7 -i ~/.ssh/id_ed25519 bootstrap --cloud azure
    fab -H ubuntu@203.0.113.7 nvidia-runtime --check

Fabric calls a task once per host in -H. Each call appends that host's report
to a run log kept in the run's shared config; a post-task prints the recap for
all hosts once and exits non-zero if any host failed, so one bad host neither
hides the others nor lets the run pass.
"""

from __future__ import annotations

import sys
from typing import Any

from fabric import Connection, task
from invoke import Collection, Context
from invoke.exceptions import Exit

from bootstrap.container import DEFAULT_IMAGE, DEFAULT_NAME, DEFAULT_WORKSPACE
from bootstrap.options import BootstrapOptions
from bootstrap.recap import HostReport, format_recap
from bootstrap.runner import ALL_STEPS, bootstrap_host

RUN_LOG_KEY = "gpu_workbench_run_log"


class RunLog:
    """Reports of one `fab` run. Invoke copies config values on every merge;
    returning self from __copy__ keeps one log per run, shared by its calls."""

    def __init__(self) -> None:
        self.reports: list[HostReport] = []
        self.check_mode = False

    def __copy__(self) -> RunLog:
        return self


def _run_log(c: Context) -> RunLog:
    log = c.config.get(RUN_LOG_KEY)
    if not isinstance(log, RunLog):
        log = RunLog()
        c.config[RUN_LOG_KEY] = log  # type: ignore[assignment]
    return log


@task
def recap(c: Context) -> None:
    """Print the recap of this run (runs by itself after every task)."""
    log = _run_log(c)
    if not log.reports:
        return
    print(format_recap(log.reports, check_mode=log.check_mode), flush=True)
    failed = [r.host for r in log.reports if r.failed]
    log.reports.clear()
    if failed:
        raise Exit(f"failed on {len(failed)} host(s): {', '.join(failed)}", code=2)


def _run(c: Any, steps: tuple[str, ...], **flags: Any) -> None:
    if not isinstance(c, Connection):
        raise Exit("no host given: use fab -H user@host ...", code=2)
    try:
        options = BootstrapOptions(**flags)
    except ValueError as exc:
        raise Exit(str(exc), code=2) from exc
    log = _run_log(c)
    log.check_mode = options.check
    if options.check:
        print(f"{c.user}@{c.host}  check mode: reading facts only, nothing will change",
              flush=True)
    report = bootstrap_host(
        c, options, steps,
        emit=lambda line: print(line, flush=True),
        emit_error=lambda line: print(line, file=sys.stderr, flush=True),
    )
    log.reports.append(report)


HELP = {
    "check": "read facts and print what would change; change nothing",
    "wait-timeout": "seconds to wait for SSH, cloud-init and the dpkg lock (default 300)",
    "cloud": "aws, gcp or azure (default: detect; azure moves Docker to /mnt/docker)",
    "image": f"container image (default {DEFAULT_IMAGE})",
    "name": f"container name (default {DEFAULT_NAME})",
    "workspace": f"host directory mounted at /workspace (default {DEFAULT_WORKSPACE})",
    "chmod-home": "also chmod -R a+rX the login user's home (except ~/.ssh and the token)",
    "skip-check": "skip the GPU check (for hosts without a GPU)",
}


def _help(*names: str) -> dict[str, str]:
    return {n.replace("-", "_"): HELP[n] for n in names}


@task(post=[recap], auto_shortflags=False,
      help=_help("check", "wait-timeout", "cloud", "image", "name", "workspace",
                 "chmod-home", "skip-check"))
def bootstrap(c: Any, cloud: str | None = None, image: str = DEFAULT_IMAGE,
              name: str = DEFAULT_NAME, workspace: str = DEFAULT_WORKSPACE,
              check: bool = False, skip_check: bool = False, chmod_home: bool = False,
              wait_timeout: int = 300) -> None:
    """Make a GPU VM ready for NGC containers: every step, in order."""
    _run(c, ALL_STEPS, cloud=cloud, image=image, container_name=name, workspace=workspace,
         check=check, skip_check=skip_check, chmod_home=chmod_home,
         wait_timeout=float(wait_timeout))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout"))
def wait(c: Any, check: bool = False, wait_timeout: int = 300) -> None:
    """Wait for SSH, cloud-init and the dpkg lock."""
    _run(c, ("wait",), check=check, wait_timeout=float(wait_timeout))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout", "chmod-home"))
def umask(c: Any, check: bool = False, chmod_home: bool = False,
          wait_timeout: int = 300) -> None:
    """umask 0002 in ~/.bashrc exactly once (--chmod-home: a+rX on the home)."""
    _run(c, ("umask",), check=check, chmod_home=chmod_home, wait_timeout=float(wait_timeout))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout"))
def nvidia_runtime(c: Any, check: bool = False, wait_timeout: int = 300) -> None:
    """Register the nvidia runtime in /etc/docker/daemon.json and reload dockerd."""
    _run(c, ("nvidia-runtime",), check=check, wait_timeout=float(wait_timeout))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout", "cloud"))
def data_root(c: Any, cloud: str | None = None, check: bool = False,
              wait_timeout: int = 300) -> None:
    """On Azure, move Docker's data-root to /mnt/docker."""
    _run(c, ("data-root",), cloud=cloud, check=check, wait_timeout=float(wait_timeout))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout"))
def compose(c: Any, check: bool = False, wait_timeout: int = 300) -> None:
    """Make `docker compose` available (apt package, else the release binary)."""
    _run(c, ("compose",), check=check, wait_timeout=float(wait_timeout))


@task(post=[recap], auto_shortflags=False,
      help=_help("check", "wait-timeout", "image", "name", "workspace"))
def container(c: Any, image: str = DEFAULT_IMAGE, name: str = DEFAULT_NAME,
              workspace: str = DEFAULT_WORKSPACE, check: bool = False,
              wait_timeout: int = 300) -> None:
    """Start the workbench container (JupyterLab on 8890, AIAA on 5000)."""
    _run(c, ("container",), image=image, container_name=name, workspace=workspace,
         check=check, wait_timeout=float(wait_timeout))


@task(name="check", post=[recap], auto_shortflags=False, help=_help("wait-timeout", "image"))
def gpu_check(c: Any, image: str = DEFAULT_IMAGE, wait_timeout: int = 300) -> None:
    """GPU visible on the host and in a container; a diagnosis when not."""
    _run(c, ("check",), image=image, wait_timeout=float(wait_timeout))


collection = Collection(bootstrap, wait, umask, nvidia_runtime, data_root, compose,
                        container, gpu_check)
