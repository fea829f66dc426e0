"""`fab -H host logs`: what the workstation's services print, read over one SSH command.

    fab -H ubuntu@203.0.113.7 logs                      # the workbench container, last 100 lines
    fab -H ubuntu@203.0.113.7 logs --source aiaa --follow
    fab -H ubuntu@203.0.113.7 logs --source autostop --lines 20

Sources: `container` (docker logs: JupyterLab, or the MONAI Label server, which is
that container's main process), `aiaa` (Clara's AIAA server, which the container
starts in the background and which logs to /workspace/.aiaa.log), `mlflow` (the
MLflow container) and `autostop` (the idle check's and the
interruption watcher's journal). Every line carries
the host, so `-H a,b --follow` interleaves whole lines. --follow runs on a
pseudo-terminal, so Ctrl-C reaches the remote reader and nothing is left
running on the host.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from bootstrap.container_spec import DEFAULT_NAME
from bootstrap.remote import Remote
from bootstrap.shell import Sh, sh
from bootstrap.steps.autostop import UNIT as IDLE_CHECK_UNIT
from bootstrap.steps.interruptions import UNIT as WATCH_UNIT
from bootstrap.steps.mlflow import MLFLOW_CONTAINER

AIAA_LOG = "/workspace/.aiaa.log"
DEFAULT_LINES = 100
MAX_LINES = 1_000_000


@dataclass(frozen=True)
class LogSource:
    name: str
    what: str
    command: Callable[[str, int, bool], Sh]  # (container name, lines, follow) -> sh


def _docker_logs(container: str, lines: int, follow: bool) -> Sh:
    return sh("if ! docker inspect --type container {name} >/dev/null 2>&1; then\n"
              "  echo 'no container '{name}' on this host (scripts/bootstrap starts it)' >&2\n"
              "  exit 3\nfi\n"
              "exec docker logs --tail {lines} {follow} {name} 2>&1",
              name=container, lines=lines, follow=Sh("-f") if follow else Sh(""))


def _aiaa_log(container: str, lines: int, follow: bool) -> Sh:
    return sh("if ! docker exec {name} test -e {log} 2>/dev/null; then\n"
              "  echo 'no AIAA log ('{log}' in container '{name}'): this image runs no AIAA "
              "server, or the container is not running' >&2\n"
              "  exit 3\nfi\n"
              "exec docker exec {name} tail -n {lines} {follow} {log}",
              name=container, log=AIAA_LOG, lines=lines,
              follow=Sh("-F") if follow else Sh(""))


def _mlflow_logs(_container: str, lines: int, follow: bool) -> Sh:
    return _docker_logs(MLFLOW_CONTAINER, lines, follow)


def _idle_check_journal(_container: str, lines: int, follow: bool) -> Sh:
    return sh("if ! command -v journalctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then\n"
              "  echo 'no systemd journal on this host: the idle check runs under systemd' >&2\n"
              "  exit 3\nfi\n"
              # Both units, interleaved by time: an idle stop and the cloud's interruption
              # notice read in one place, telling one from the other.
              "exec journalctl --no-pager -o short-iso -u {unit} -u {watch} -n {lines} {follow}",
              unit=IDLE_CHECK_UNIT, watch=WATCH_UNIT, lines=lines,
              follow=Sh("-f") if follow else Sh(""))


SOURCES = {s.name: s for s in (
    LogSource("container", "the workbench container (JupyterLab, or MONAI Label's server)",
              _docker_logs),
    LogSource("aiaa", f"Clara's AIAA server ({AIAA_LOG} in the container)", _aiaa_log),
    LogSource("mlflow", f"the MLflow container ({MLFLOW_CONTAINER})", _mlflow_logs),
    LogSource("autostop", f"the idle check's and the interruption watcher's journal "
                          f"({IDLE_CHECK_UNIT}, {WATCH_UNIT})", _idle_check_journal),
)}


class LogsError(ValueError):
    """Bad input; the message is one line for the user."""


def log_command(source: str, lines: int, follow: bool, container: str = DEFAULT_NAME) -> Sh:
    if source not in SOURCES:
        raise LogsError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not 0 <= lines <= MAX_LINES:
        raise LogsError(f"--lines must be 0 to {MAX_LINES}, not {lines}")
    return SOURCES[source].command(container, lines, follow)


class PrefixedLines:
    """A stream that writes whole lines, each after the host's label.

    Fabric hands over output in chunks as they arrive; a line split across two
    chunks waits here for its end, so lines from hosts in parallel never mix.
    """

    def __init__(self, label: str, target: TextIO, lock: threading.Lock) -> None:
        self.label = label
        self.target = target
        self.lock = lock
        self.pending = ""
        self.lines = 0

    def write(self, text: str) -> int:
        # A pty turns \n into \r\n; the line is the same.
        self.pending += text.replace("\r\n", "\n")
        *done, self.pending = self.pending.split("\n")
        if done:
            with self.lock:
                for line in done:
                    self.target.write(f"{self.label}  {line}\n")
                self.target.flush()
            self.lines += len(done)
        return len(text)

    def flush(self) -> None:
        # Invoke flushes after every chunk; a line cut by a chunk boundary must wait for
        # its end, so nothing is written here (finish() writes a last unterminated line).
        pass

    def finish(self) -> None:
        if self.pending:
            self.write("\n")


_PRINT_LOCK = threading.Lock()


def show_logs(remote: Remote, script: Sh, *, follow: bool,
              out: TextIO | None = None) -> int:
    """Run `script` as root and stream what it prints, line by line; its exit status."""
    target = out or sys.stdout
    # One line buffer per stream: Invoke reads stdout and stderr in two threads.
    streams = (PrefixedLines(remote.label, target, _PRINT_LOCK),
               PrefixedLines(remote.label, target, _PRINT_LOCK))
    try:
        code = remote.stream(script, *streams, pty=follow)
    except KeyboardInterrupt:
        code = 130
    finally:
        for stream in streams:
            stream.finish()
    return code
