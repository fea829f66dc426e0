"""Talking to the login node: one sh snippet per call over the SSH connection Fabric holds.

Every remote command is a POSIX sh snippet run with `sh -c`, whatever the
user's login shell; data for it (a batch script, registry credentials) goes
in on stdin, so secrets never appear in a command line, a file or a log.
The snippets exit 3 when the login node lacks something (a runtime, an
image) and 4 when Slurm or the pull tool refused; their stderr is the one
line the task reports.

The connection checks the login node's host key against known_hosts before
it logs in (bootstrap.remote.open_checked): a node that offers another key
is refused with one line and exit 2, before any key or NGC credential is sent.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from fabric import Connection
from invoke.context import Context
from invoke.exceptions import Exit

from bootstrap.remote import HostKeyRefused, open_checked, strict_host_keys_configured
from bootstrap.shell import Sh, sh

EXIT_BAD_INPUT = 2
PRECONDITION = 3  # the login node lacks something
REFUSED = 4  # Slurm or the pull tool said no

_FOUND_RUNTIMES = Sh(
    'found=""; for b in apptainer singularity ch-run; do '
    'command -v "$b" >/dev/null 2>&1 && found="$found $b"; done; '
    '[ -n "$found" ] || found=" none"; '
)


def fail(task_name: str, message: str, code: int = 1) -> Exit:
    """The one-line error a task ends with (fab prints it to stderr)."""
    first = " ".join(message.split())
    return Exit(f"slurm.{task_name}: {first}", code=code)


def connection(c: Context, task_name: str) -> Connection:
    """The login node's connection, open, its host key checked (exit 2 when refused)."""
    if not isinstance(c, Connection):
        raise fail(
            task_name, f"needs the login node: fab -H user@login-node slurm.{task_name} ...",
            EXIT_BAD_INPUT,
        )  # fmt: skip
    open_login_node(c, task_name)
    return c


def require_known_host(c: Context) -> None:
    """--strict-host-keys: refuse a login node that is not in known_hosts yet."""
    section = dict(c.config.get("workbench") or {})
    section["strict_host_keys"] = True
    c.config["workbench"] = section  # type: ignore[assignment]


def open_login_node(c: Connection, task_name: str) -> None:
    """Open the SSH connection with known_hosts honoured (accept-new, or strict)."""
    try:
        open_checked(
            c, strict=strict_host_keys_configured(c.config),
            on_new=lambda line: print(f"{c.user}@{c.host}: {line}", file=sys.stderr, flush=True),
        )
    except HostKeyRefused as exc:
        raise fail(task_name, str(exc), EXIT_BAD_INPUT) from None


@dataclass(frozen=True)
class RemoteResult:
    exited: int
    stdout: str
    stderr: str


def run(c: Connection, snippet: Sh, stdin: str = "") -> RemoteResult:
    """Run a sh snippet on the login node with `stdin` as its input; never raises on exit code.

    Only an Sh (bootstrap.shell) is run: its values were quoted when it was
    built. A str is refused, so an f-string cannot reach the login node.

    This drives the SSH channel itself rather than `c.run(in_stream=...)`:
    invoke feeds in_stream one character per 10 ms poll (a 3 kB script took
    30 s) and can close the channel's stdin before the last byte is sent.
    Here the whole input goes in one write, then EOF, on the connection
    Fabric already holds (its gateway and ssh_config settings included).
    Every snippet reads all of stdin before it writes anything, so the write
    cannot stall behind output nobody is reading yet.
    """
    if not isinstance(snippet, Sh):
        raise TypeError(f"login_node.run takes an Sh built with bootstrap.shell.sh(), not "
                        f"{type(snippet).__name__}")
    open_login_node(c, "remote")
    transport = c.client.get_transport()
    if transport is None:  # open() failed without raising
        raise fail("remote", f"no SSH transport to {c.host}")
    channel = transport.open_session()
    try:
        channel.exec_command(sh("sh -c {snippet}", snippet=snippet.text).text)
        if stdin:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            idle = True
            if channel.recv_ready():
                out += channel.recv(65536)
                idle = False
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                idle = False
            if idle and channel.exit_status_ready():
                # Exit status can arrive before the last output; drain it.
                if not (channel.recv_ready() or channel.recv_stderr_ready()):
                    break
            elif idle:
                time.sleep(0.005)
        return RemoteResult(
            channel.recv_exit_status(),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
    finally:
        channel.close()


def require_command(executable: str, purpose: str, list_runtimes: bool = False) -> Sh:
    """sh that stops (exit 3) with a one-line reason when `executable` is not on PATH."""
    found = _FOUND_RUNTIMES if list_runtimes else Sh("")
    tail = Sh("; found:$found") if list_runtimes else Sh("")
    return sh(
        "command -v {executable} >/dev/null 2>&1 || {{ {found}"
        'echo {executable} "not found on the login node ("{purpose}"){tail}" >&2; '
        "exit {code}; }}\n",
        executable=executable, found=found, purpose=purpose, tail=tail, code=PRECONDITION,
    )
