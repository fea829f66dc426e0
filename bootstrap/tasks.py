"""Fabric tasks: `fab -H user@host bootstrap` and each step on its own.

    fab -H ubuntu@203.0.113.7 -i ~/.ssh/id_ed25519 bootstrap --cloud azure
    fab -H ubuntu@203.0.113.7 nvidia-runtime --check

Fabric calls a task once per host in -H. Each call appends that host's report
to a run log kept in the run's shared config; a post-task prints the recap for
all hosts once and exits non-zero if any host failed, so one bad host neither
hides the others nor lets the run pass.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fabric import Connection, task
from invoke import Collection, Context
from invoke.exceptions import Exit

from bootstrap.container_spec import DEFAULT_IMAGE, DEFAULT_NAME, DEFAULT_WORKSPACE
from bootstrap.logs import DEFAULT_LINES, SOURCES, LogsError, log_command, show_logs
from bootstrap.options import JUPYTER_TOKEN_ENV, BootstrapOptions, requirement_lines
from bootstrap.recap import HostReport, format_recap
from bootstrap.remote import HostError, Remote, strict_host_keys_configured
from bootstrap.runner import DEFAULT_STEPS, bootstrap_host
from components.images import PRESETS

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


def _run(c: Any, steps: tuple[str, ...], *, pip: list[str] | None = None,
         requirements: str | None = None, jupyter_token: str | None = None,
         **flags: Any) -> None:
    if not isinstance(c, Connection):
        raise Exit("no host given: use fab -H user@host ...", code=2)
    try:
        if "image" in flags:
            # No --image: the image this host ran last (bootstrap/remembered_image.py),
            # else the default.
            flags["image_source"] = "given" if flags["image"] else "default"
            flags["image"] = flags["image"] or DEFAULT_IMAGE
        if pip or requirements:
            flags["requirements"] = requirement_lines(pip or [], requirements)
        # The token: the flag, else the environment (which keeps it out of `ps`).
        token = jupyter_token or os.environ.get(JUPYTER_TOKEN_ENV) or None
        if token is not None:
            flags["jupyter_token"] = token.strip()
        # --strict-host-keys, or workbench.strict_host_keys in Fabric's config.
        flags["strict_host_keys"] = (flags.get("strict_host_keys", False)
                                     or strict_host_keys_configured(c.config))
        flags.update(pull_settings(c.config))
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


def pull_settings(config: Any) -> dict[str, Any]:
    """workbench.pull_progress_seconds and workbench.pull_stall_seconds from Fabric's
    config (fabric.yaml; FABRIC_WORKBENCH_PULL_PROGRESS_SECONDS=1 from the environment)."""
    section = config.get("workbench") or {}
    found: dict[str, Any] = {}
    for key, kind in (("pull_progress_seconds", float), ("pull_stall_seconds", int)):
        value = section.get(key) if hasattr(section, "get") else None
        if value is None or value == "":
            continue
        try:
            found[key] = kind(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"workbench.{key} must be a number, not {value!r}") from exc
    return found


HELP = {
    "check": "read facts and print what would change; change nothing",
    "wait-timeout": "seconds to wait for SSH, cloud-init and the dpkg lock (default 300)",
    "cloud": ("aws, gcp or azure (default: detect; on azure Docker may move to the resource "
              "disk: --docker-min-free-gib)"),
    "docker-min-free-gib": ("Azure: move Docker's data-root to the resource disk /mnt, which "
                            "a deallocate wipes, only when its disk has less than this free "
                            "(default 50)"),
    "image": ("a preset (" + ", ".join(p.name for p in PRESETS) + ") or any image "
              f"(default: the one this host was bootstrapped with last, else {DEFAULT_IMAGE})"),
    "pip": "an extra Python package for the container, as pip takes it (repeatable)",
    "requirements": "a local requirements file: its packages go into the container too",
    "jupyter-token": (f"use this Jupyter token (better: set {JUPYTER_TOKEN_ENV}, which "
                      "stays off the command line)"),
    "mlflow": "also start the MLflow tracking server (port 5001, store in the workspace)",
    "name": f"container name (default {DEFAULT_NAME})",
    "workspace": f"host directory mounted at /workspace (default {DEFAULT_WORKSPACE})",
    "chmod-home": ("also chmod -R a+rX the login user's home, except where credentials live "
                   "(~/.ssh, ~/.docker, ~/.ngc, ~/.aws, ~/.kube, ~/.netrc, ...: "
                   "bootstrap/steps/umask.py)"),
    "skip-check": "skip the GPU check (for hosts without a GPU)",
    "data-device": ("the data disk, by path (default: --data-volume-id's disk; without "
                    "either, a disk found by the cloud's data-disk names is mounted only "
                    "when it carries our label, never formatted; 'none' to skip)"),
    "data-mount": "where the data disk is mounted (default /data)",
    "autostop-minutes": "stop the machine after this many idle minutes (default 60; 0 off)",
    "strict-host-keys": ("refuse a host that is not in known_hosts yet (default: record a "
                         "new host and print its fingerprint, as ssh's accept-new; a changed "
                         "key is always refused)"),
    "host-key-fingerprint": ("accept a new host only if its key has this SHA256:... "
                             "fingerprint (scripts/bootstrap passes the stack's)"),
    "data-volume-id": ("the stack's data volume ID (its data_volume_id output): only that "
                       "disk is used, and it must be there"),
}


def _help(*names: str) -> dict[str, str]:
    # Every task connects, so every task takes --strict-host-keys.
    return {n.replace("-", "_"): HELP[n] for n in (*names, "strict-host-keys")}


@task(post=[recap], auto_shortflags=False, iterable=["pip"],
      help=_help("check", "wait-timeout", "cloud", "image", "name", "workspace",
                 "chmod-home", "skip-check", "pip", "requirements", "jupyter-token", "mlflow",
                 "data-device", "data-mount", "data-volume-id", "autostop-minutes",
                 "host-key-fingerprint", "docker-min-free-gib"))
def bootstrap(c: Any, cloud: str | None = None, image: str = "",
              name: str = DEFAULT_NAME, workspace: str = DEFAULT_WORKSPACE,
              check: bool = False, skip_check: bool = False, chmod_home: bool = False,
              wait_timeout: int = 300, pip: list[str] | None = None,
              requirements: str | None = None, jupyter_token: str | None = None,
              mlflow: bool = False, data_device: str | None = None,
              data_mount: str = "/data", data_volume_id: str | None = None,
              autostop_minutes: int = 60, strict_host_keys: bool = False,
              host_key_fingerprint: str | None = None,
              docker_min_free_gib: int = 50) -> None:
    """Make a GPU VM ready for NGC containers: every step, in order."""
    steps = (*DEFAULT_STEPS, "mlflow") if mlflow else DEFAULT_STEPS
    _run(c, steps, cloud=cloud, image=image, container_name=name, workspace=workspace,
         check=check, skip_check=skip_check, chmod_home=chmod_home,
         wait_timeout=float(wait_timeout), pip=pip, requirements=requirements,
         jupyter_token=jupyter_token, mlflow=mlflow, data_device=data_device,
         data_mount=data_mount, data_volume_id=data_volume_id,
         autostop_minutes=int(autostop_minutes), strict_host_keys=strict_host_keys,
         host_key_fingerprint=host_key_fingerprint,
         docker_min_free_gib=int(docker_min_free_gib))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout"))
def wait(c: Any, check: bool = False, wait_timeout: int = 300,
         strict_host_keys: bool = False) -> None:
    """Wait for SSH, cloud-init and the dpkg lock."""
    _run(c, ("wait",), check=check, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout", "chmod-home"))
def umask(c: Any, check: bool = False, chmod_home: bool = False,
          wait_timeout: int = 300, strict_host_keys: bool = False) -> None:
    """umask 0002 in ~/.bashrc exactly once (--chmod-home: a+rX on the home, credentials
    excepted)."""
    _run(c, ("umask",), check=check, chmod_home=chmod_home, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout"))
def nvidia_runtime(c: Any, check: bool = False, wait_timeout: int = 300,
                   strict_host_keys: bool = False) -> None:
    """Register the nvidia runtime in /etc/docker/daemon.json and reload dockerd."""
    _run(c, ("nvidia-runtime",), check=check, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False,
      help=_help("check", "wait-timeout", "cloud", "docker-min-free-gib"))
def data_root(c: Any, cloud: str | None = None, check: bool = False,
              wait_timeout: int = 300, strict_host_keys: bool = False,
              docker_min_free_gib: int = 50) -> None:
    """On Azure, move Docker's data-root to /mnt/docker when its disk is short of space."""
    _run(c, ("data-root",), cloud=cloud, check=check, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys, docker_min_free_gib=int(docker_min_free_gib))


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout"))
def compose(c: Any, check: bool = False, wait_timeout: int = 300,
            strict_host_keys: bool = False) -> None:
    """Make `docker compose` available (apt package, else the release binary)."""
    _run(c, ("compose",), check=check, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout", "image"))
def compat(c: Any, image: str = "", check: bool = False,
           wait_timeout: int = 300, strict_host_keys: bool = False) -> None:
    """Can the image run on this host's driver and GPU? (read-only; before any pull)"""
    _run(c, ("compat",), image=image, check=check, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False, iterable=["pip"],
      help=_help("check", "wait-timeout", "image", "name", "workspace", "pip",
                 "requirements", "jupyter-token"))
def container(c: Any, image: str = "", name: str = DEFAULT_NAME,
              workspace: str = DEFAULT_WORKSPACE, check: bool = False,
              wait_timeout: int = 300, pip: list[str] | None = None,
              requirements: str | None = None, jupyter_token: str | None = None,
              strict_host_keys: bool = False) -> None:
    """Start the workbench container (a preset's ports, else JupyterLab 8890 and AIAA 5000),
    after the compatibility check; then the extra packages, if any."""
    _run(c, ("compat", "container", "packages"), image=image, container_name=name,
         workspace=workspace, check=check, wait_timeout=float(wait_timeout), pip=pip,
         requirements=requirements, jupyter_token=jupyter_token,
         strict_host_keys=strict_host_keys)


@task(name="mlflow", post=[recap], auto_shortflags=False,
      help=_help("check", "wait-timeout", "workspace"))
def mlflow_server(c: Any, workspace: str = DEFAULT_WORKSPACE, check: bool = False,
                  wait_timeout: int = 300, strict_host_keys: bool = False) -> None:
    """Start the MLflow tracking server (localhost:5001 through the tunnel)."""
    _run(c, ("mlflow",), workspace=workspace, check=check, mlflow=True,
         wait_timeout=float(wait_timeout), strict_host_keys=strict_host_keys)


@task(name="data-volume", post=[recap], auto_shortflags=False,
      help=_help("check", "wait-timeout", "data-device", "data-mount", "data-volume-id"))
def data_volume(c: Any, data_device: str | None = None, data_mount: str = "/data",
                data_volume_id: str | None = None, check: bool = False,
                wait_timeout: int = 300, strict_host_keys: bool = False) -> None:
    """Mount the kept data disk at /data (formatted only when blank) with a workspace."""
    _run(c, ("data-volume",), data_device=data_device, data_mount=data_mount,
         data_volume_id=data_volume_id, check=check, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False,
      help=_help("check", "wait-timeout", "cloud", "autostop-minutes"))
def autostop(c: Any, autostop_minutes: int = 60, cloud: str | None = None,
             check: bool = False, wait_timeout: int = 300,
             strict_host_keys: bool = False) -> None:
    """Install the idle check and its systemd timer (stop after N idle minutes; 0 off)."""
    _run(c, ("autostop",), autostop_minutes=int(autostop_minutes), cloud=cloud, check=check,
         wait_timeout=float(wait_timeout), strict_host_keys=strict_host_keys)


@task(post=[recap], auto_shortflags=False, help=_help("check", "wait-timeout", "cloud"))
def interruptions(c: Any, cloud: str | None = None, check: bool = False,
                  wait_timeout: int = 300, strict_host_keys: bool = False) -> None:
    """Install the service that records the cloud's spot interruption and maintenance
    notices, so status tells them from an idle stop."""
    _run(c, ("interruptions",), cloud=cloud, check=check,
         wait_timeout=float(wait_timeout), strict_host_keys=strict_host_keys)


@task(name="check", post=[recap], auto_shortflags=False, help=_help("wait-timeout", "image"))
def gpu_check(c: Any, image: str = "", wait_timeout: int = 300,
              strict_host_keys: bool = False) -> None:
    """GPU visible on the host and in a container; a diagnosis when not."""
    _run(c, ("check",), image=image, wait_timeout=float(wait_timeout),
         strict_host_keys=strict_host_keys)


@task(auto_shortflags=False, help={
    "source": "what to read: " + "; ".join(f"{s.name}: {s.what}" for s in SOURCES.values())
              + " (default container)",
    "lines": f"how many lines back to start (default {DEFAULT_LINES})",
    "follow": "keep reading as new lines come (Ctrl-C to stop)",
    "name": f"the workbench container's name (default {DEFAULT_NAME})",
    "strict-host-keys": HELP["strict-host-keys"]})
def logs(c: Any, source: str = "container", lines: str = str(DEFAULT_LINES),
         follow: bool = False, name: str = DEFAULT_NAME, strict_host_keys: bool = False) -> None:
    """Show the workbench container's, AIAA's, MLflow's or the idle check's logs."""
    if not isinstance(c, Connection):
        raise Exit("no host given: use fab -H user@host logs", code=2)
    try:
        # A str flag, read here: Invoke's own int cast answers "lots" with a traceback.
        if not lines.strip().isdigit():
            raise LogsError(f"--lines must be a whole number, not {lines!r}")
        options = BootstrapOptions(container_name=name)
        script = log_command(source, int(lines), follow, options.container_name)
    except (ValueError, LogsError) as exc:
        raise Exit(f"logs: {exc}", code=2) from exc
    remote = Remote(c, strict_host_keys=strict_host_keys or strict_host_keys_configured(c.config),
                    on_new_host_key=lambda line: print(f"{c.user}@{c.host}  {line}", flush=True))
    try:
        remote.connect(30.0)
        code = show_logs(remote, script, follow=follow)
    except HostError as exc:
        raise Exit(f"{remote.label}  logs: {exc}", code=2) from exc
    finally:
        remote.close()
    if code not in (0, 130):
        raise Exit(code=1)


collection = Collection(bootstrap, wait, umask, nvidia_runtime, data_root, data_volume,
                        compose, compat, container, mlflow_server, autostop,
                        interruptions, gpu_check, logs)
