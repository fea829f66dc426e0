"""One counted SSH connection per host.

Every remote command goes through `Remote.run`, which counts it: round trips
are what a bootstrap costs far from the cloud region (150-250 ms each), so the
benchmark reports them. Scripts run as root through `sudo` unless the login
user is root; they never read stdin, which leaves stdin free for the sudo
password when one was given (`--prompt-for-sudo-password`).
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from bootstrap.shell import Sh, sh

# Sections in a script's output start with a line "@@name" (see parse_sections).
SECTION_MARK = "@@"


class HostError(Exception):
    """A host-level failure: one line that says what went wrong and what to do."""


@dataclass(frozen=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def sections(self) -> dict[str, str]:
        return parse_sections(self.stdout)

    def error_line(self) -> str:
        """The script's own ERROR line if it printed one, else the last stderr line."""
        for line in reversed((self.stderr + "\n" + self.stdout).splitlines()):
            if line.startswith("ERROR: "):
                return line[len("ERROR: "):]
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {self.exit_code}"


def parse_sections(text: str) -> dict[str, str]:
    """Split "@@name" sectioned output into {name: body without trailing newline}."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(SECTION_MARK):
            current = sections.setdefault(line[len(SECTION_MARK):].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}


# Errors worth retrying while a VM boots: nothing listens yet, the route is
# not up yet, sshd is up but not yet talking.
RETRYABLE = (socket.timeout, ConnectionError, OSError, EOFError, paramiko.SSHException)
NOT_RETRYABLE = (paramiko.AuthenticationException, paramiko.BadHostKeyException)


class Remote:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.commands_sent = 0
        password = connection.config.get("sudo", {}).get("password")
        self.sudo_password: str | None = password or None
        self.as_root_directly = connection.user == "root"

    @property
    def label(self) -> str:
        port = "" if self.connection.port == 22 else f":{self.connection.port}"
        return f"{self.connection.user}@{self.connection.host}{port}"

    def connect(self, timeout_s: float,
                on_retry: Callable[[int, float, str], None] | None = None) -> int:
        """Open the SSH connection, retrying with backoff until timeout_s; return tries."""
        deadline = time.monotonic() + timeout_s
        delay = 0.5
        tries = 0
        while True:
            tries += 1
            try:
                self.connection.open()
                return tries
            except NOT_RETRYABLE as exc:
                raise HostError(self._auth_message(exc)) from exc
            except FileNotFoundError as exc:  # an -i key that is not there: no use retrying
                raise HostError(f"cannot read SSH key for {self.label}: {exc}") from exc
            except RETRYABLE as exc:
                reason = _describe(exc)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HostError(
                        f"cannot reach {self.label} over SSH after {tries} tries in "
                        f"{timeout_s:g}s: {reason}"
                    ) from exc
                if on_retry is not None:
                    on_retry(tries, min(delay, remaining), reason)
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 10.0)

    def _auth_message(self, exc: Exception) -> str:
        if isinstance(exc, paramiko.BadHostKeyException):
            return (f"host key of {self.connection.host} does not match known_hosts "
                    "(a rebuilt VM at the same address? remove the old entry)")
        keys = self.connection.connect_kwargs.get("key_filename")
        if isinstance(keys, list | tuple):
            keys = ", ".join(str(k) for k in keys)
        hint = f" with key {keys}" if keys else " (no key given: pass -i PATH)"
        return f"SSH authentication failed for {self.label}{hint}: {exc}"

    def run(self, script: Sh, *, as_root: bool = True, timeout: float | None = None
            ) -> CommandResult:
        """Run a POSIX sh script on the host in one round trip.

        Only an Sh (bootstrap.shell) goes to a host: its values were quoted when
        it was built. A str is refused, so an f-string cannot reach a shell.
        """
        if not isinstance(script, Sh):
            raise TypeError(f"Remote.run takes an Sh built with bootstrap.shell.sh(), not "
                            f"{type(script).__name__}")
        # A script, once sent, runs to its end even if we go away (Ctrl-C, lost
        # link): ignoring SIGPIPE/SIGHUP keeps a step from stopping between
        # "dockerd stopped" and "dockerd started" because its output has nowhere
        # to go. A rerun then finds the step done, not half done.
        command = sh("sh -c {script}", script="trap '' PIPE HUP\n" + script.text)
        in_stream: io.StringIO | bool = False
        if as_root and not self.as_root_directly:
            if self.sudo_password is not None:
                # -S reads the password from stdin; -p '' keeps the prompt out of stderr.
                command = sh("sudo -S -p '' -- {command}", command=command)
                in_stream = io.StringIO(self.sudo_password + "\n")
            else:
                # -n: fail at once instead of waiting for a password nobody will type.
                command = sh("sudo -n -- {command}", command=command)
        self.commands_sent += 1
        try:
            result = self.connection.run(command.text, hide=True, warn=True,
                                         in_stream=in_stream, timeout=timeout)
        except CommandTimedOut as exc:
            raise HostError(f"remote command timed out after {timeout}s on {self.label}") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostError(f"lost the SSH connection to {self.label}: {_describe(exc)}") from exc
        out = CommandResult(result.stdout, result.stderr, result.exited)
        if as_root and not self.as_root_directly and out.exit_code != 0:
            self._raise_for_sudo(out)
        return out

    def put_private(self, data: bytes, path: str) -> None:
        """Write a secret to `path` (as the login user, mode 600) over SFTP.

        One round trip on the open connection, counted like a command. The bytes
        travel inside the SSH channel, never on a command line the host's `ps`
        could show. The file is made 600 before anything is written to it.
        """
        self.commands_sent += 1
        try:
            sftp = self.connection.sftp()
            with sftp.open(path, "w") as fh:
                sftp.chmod(path, 0o600)
                fh.write(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostError(f"cannot write {path} on {self.label} over SFTP: "
                            f"{_describe(exc)}") from exc

    def _raise_for_sudo(self, result: CommandResult) -> None:
        err = result.stderr
        user = self.connection.user
        if "a password is required" in err or "a terminal is required" in err:
            raise HostError(f"sudo on {self.label} needs a password for {user}: "
                            "rerun with --prompt-for-sudo-password")
        if "incorrect password attempt" in err or "Sorry, try again" in err:
            raise HostError(f"sudo on {self.label} rejected the password for {user}")
        if result.exit_code == 127 and "sudo" in err and "not found" in err:
            raise HostError(f"sudo is not installed on {self.label}: log in as root, or "
                            "install sudo")
        if "is not in the sudoers file" in err or "not allowed to execute" in err:
            raise HostError(f"{user} may not use sudo on {self.label}")

    def close(self) -> None:
        self.connection.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        text = "; ".join(sorted({str(e) for e in exc.errors.values()})) or text
    return text.splitlines()[0]
