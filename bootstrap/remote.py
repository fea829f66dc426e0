"""One counted SSH connection per host.

Every remote command goes through `Remote.run`, which counts it: round trips
are what a bootstrap costs far from the cloud region (150-250 ms each), so the
benchmark reports them. Scripts run as root through `sudo` unless the login
user is root; they never read stdin, which leaves stdin free for the sudo
password when one was given (`--prompt-for-sudo-password`).

The connection checks the host key against known_hosts before it logs in
(HostKeyCheck, below): a host that offers another key than the one recorded
is refused before any key, password or token is sent.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import getpass
import hmac
import io
import os
import pwd
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


class Remote:
    def __init__(self, connection: Connection, *, strict_host_keys: bool = False,
                 host_key_fingerprint: str | None = None,
                 on_new_host_key: Callable[[str], None] | None = None) -> None:
        self.connection = connection
        self.strict_host_keys = strict_host_keys
        self.host_key_fingerprint = host_key_fingerprint
        self.on_new_host_key = on_new_host_key
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
        checks = HostKeyChecks(self.connection, strict=self.strict_host_keys,
                               pinned_fingerprint=self.host_key_fingerprint,
                               on_new=self.on_new_host_key)
        while True:
            tries += 1
            try:
                self.connection.open()
                return tries
            except HostKeyRefused as exc:  # before authentication: nothing was sent
                raise HostError(str(exc)) from exc
            except paramiko.BadHostKeyException as exc:
                raise HostError(checks.mismatch_message(exc)) from exc
            except paramiko.AuthenticationException as exc:
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
        keys = self.connection.connect_kwargs.get("key_filename")
        if isinstance(keys, list | tuple):
            keys = ", ".join(str(k) for k in keys)
        hint = f" with key {keys}" if keys else " (no key given: pass -i PATH)"
        return f"SSH authentication failed for {self.label}{hint}: {exc}"

    def run(self, script: Sh, *, as_root: bool = True, timeout: float | None = None,
            on_stdout: Callable[[str], None] | None = None) -> CommandResult:
        """Run a POSIX sh script on the host in one round trip.

        Only an Sh (bootstrap.shell) goes to a host: its values were quoted when
        it was built. A str is refused, so an f-string cannot reach a shell.
        on_stdout gets stdout as it arrives (a pull's progress), in chunks of any
        size, from another thread; it is in the result all the same.
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
            result = self.connection.run(
                command.text, hide=True, warn=True, in_stream=in_stream, timeout=timeout,
                # Invoke writes stdout to an explicit out_stream even with hide=True.
                out_stream=_Chunks(on_stdout) if on_stdout is not None else None)
        except CommandTimedOut as exc:
            raise HostError(f"remote command timed out after {timeout}s on {self.label}") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostError(f"lost the SSH connection to {self.label}: {_describe(exc)}") from exc
        out = CommandResult(result.stdout, result.stderr, result.exited)
        if as_root and not self.as_root_directly and out.exit_code != 0:
            self._raise_for_sudo(out)
        return out

    def stream(self, script: Sh, out: Any, err: Any, *, pty: bool = False) -> int:
        """Run a read-only sh script as root, its stdout written to `out` and its stderr
        to `err` as they arrive; return its exit status.

        Unlike run(), SIGPIPE/SIGHUP are not ignored: a reader that follows a log must
        end when we go away. pty=True gives it a terminal, so Ctrl-C here reaches it
        as SIGINT there (sudo -n needs no password prompt on it).
        """
        if not isinstance(script, Sh):
            raise TypeError(f"Remote.stream takes an Sh built with bootstrap.shell.sh(), not "
                            f"{type(script).__name__}")
        command = sh("sh -c {script}", script=script.text)  # the script, as one quoted word
        if not self.as_root_directly:
            if self.sudo_password is not None:
                raise HostError(f"sudo on {self.label} needs a password; logs need "
                                "passwordless sudo (as the clouds' images have)")
            command = sh("sudo -n -- {command}", command=command)
        self.commands_sent += 1
        try:
            result = self.connection.run(command.text, hide=False, warn=True, pty=pty,
                                         in_stream=False, out_stream=out, err_stream=err)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostError(f"lost the SSH connection to {self.label}: {_describe(exc)}") from exc
        return int(result.exited)

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


class _Chunks(io.TextIOBase):
    """A write-only stream that hands every chunk written to it to a callable."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._sink(text)
        return len(text)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        text = "; ".join(sorted({str(e) for e in exc.errors.values()})) or text
    return text.splitlines()[0]


# --- host keys ---------------------------------------------------------------------------
#
# Fabric's Connection trusts any host key (paramiko's AutoAddPolicy) and never
# reads known_hosts. Every connection the bootstrap and the Slurm tasks open
# goes through HostKeyCheck instead, which does what OpenSSH does with
# StrictHostKeyChecking=accept-new (or =yes): read the user's and the system's
# known_hosts files (UserKnownHostsFile / GlobalKnownHostsFile from ssh_config
# when set), refuse a host whose key differs BEFORE authentication (paramiko
# compares host keys right after the key exchange, before any key, password or
# token is sent), and record a new host in the user's first file, hashed or not
# as that file already is.

DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
_RECORD_LOCK = threading.Lock()  # hosts run in threads (bootstrap/parallel.py)


class HostKeyRefused(Exception):
    """The host key is not the one known_hosts (or the stack) vouches for; nothing was sent."""


@dataclass(frozen=True)
class KnownHost:
    """One usable line of a known_hosts file."""

    path: str
    lineno: int
    marker: str  # "" or "@revoked" ("@cert-authority" lines are not kept: see below)
    patterns: str
    key: paramiko.PKey

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def key_label(key: paramiko.PKey) -> str:
    """'ED25519 SHA256:...', the fingerprint as `ssh-keygen -lf` prints it."""
    return f"{key.algorithm_name} {key.fingerprint}"


def read_known_hosts(path: str) -> list[KnownHost]:
    """The host lines of one known_hosts file; unreadable or unknown lines are skipped.

    @cert-authority lines are skipped too: paramiko cannot check host
    certificates, so such a host counts as unknown (strict mode refuses it).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    found = []
    for lineno, raw in enumerate(lines, 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = ""
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
            if marker != "@revoked":
                continue
        if len(fields) < 3:
            continue
        try:
            key = paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2]))
        except (ValueError, binascii.Error, paramiko.SSHException):
            continue
        found.append(KnownHost(path, lineno, marker, fields[0], key))
    return found


def _glob(pattern: str, name: str) -> bool:
    """OpenSSH's host pattern: * and ? are wildcards, everything else (brackets too) literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.I) is not None


def host_matches(patterns: str, name: str) -> bool:
    """Does a known_hosts host field (comma list; hashed, wildcard or !negated) name `name`?"""
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("|1|"):
            try:
                if hmac.compare_digest(paramiko.HostKeys.hash_host(name, pattern), pattern):
                    matched = True
            except (ValueError, binascii.Error, AssertionError):
                continue
            continue
        negated = pattern.startswith("!")
        if _glob(pattern[1:] if negated else pattern, name):
            if negated:
                return False  # a negated match wins over any other (OpenSSH)
            matched = True
    return matched


def known_host_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, `[host]:port` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def remove_command(name: str, path: str) -> str:
    """The exact `ssh-keygen -R` that removes `name` from `path`."""
    # Always in quotes, as people paste it ([host]:port is a glob otherwise); a name
    # with a quote of its own (none we make) goes through the builder.
    quoted = f"'{name}'" if re.fullmatch(r"[\w.:\[\]-]+", name) else str(sh("{n}", n=name))
    # ssh-keygen's default file is under the home in the passwd database, not $HOME.
    default = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "known_hosts")
    same = os.path.abspath(path) == os.path.abspath(default)
    in_file = "" if same else str(sh(" -f {path}", path=path))
    return f"ssh-keygen -R {quoted}{in_file}"


def _expand_path(path: str, connection: Connection) -> str:
    """~ and the %-tokens OpenSSH allows in UserKnownHostsFile."""
    home = os.path.expanduser("~")
    tokens = {"%%": "%", "%d": home, "%u": getpass.getuser(), "%h": connection.host,
              "%p": str(connection.port), "%r": connection.user or "",
              "%n": getattr(connection, "original_host", connection.host),
              "%k": str(connection.ssh_config.get("hostkeyalias") or connection.host)}
    expanded = re.sub(r"%.", lambda m: tokens.get(m.group(0), m.group(0)), path)
    return os.path.expanduser(expanded)


def _hashed_style(path: str) -> bool | None:
    """True when the file's entries are hashed (any of them), False when all are plain,
    None when it has none."""
    entries = read_known_hosts(path)
    if not entries:
        return None
    return any(e.patterns.startswith("|1|") for e in entries)


class HostKeyCheck(paramiko.MissingHostKeyPolicy):
    """known_hosts for one connection: installed on its paramiko client before open().

    A host paramiko finds among the keys loaded here is compared by paramiko
    itself (a different key raises BadHostKeyException: see mismatch_message);
    a host it does not find comes to missing_host_key, which refuses it
    (strict mode, a revoked key, a key that is not the stack's pinned
    fingerprint) or records it (accept-new).
    """

    def __init__(self, connection: Connection, *, strict: bool = False,
                 pinned_fingerprint: str | None = None,
                 on_new: Callable[[str], None] | None = None) -> None:
        ssh = connection.ssh_config
        self.host = connection.host
        self.port = int(connection.port)
        alias = ssh.get("hostkeyalias")
        # With HostKeyAlias OpenSSH looks the alias up as it is, port or not.
        self.name = str(alias) if alias else known_host_name(self.host, self.port)
        user = str(ssh.get("userknownhostsfile") or DEFAULT_USER_KNOWN_HOSTS)
        system = str(ssh.get("globalknownhostsfile") or DEFAULT_GLOBAL_KNOWN_HOSTS)
        self.user_files = [_expand_path(p, connection) for p in user.split()]
        self.global_files = [_expand_path(p, connection) for p in system.split()]
        setting = str(ssh.get("stricthostkeychecking", "")).lower()
        self.strict = strict or setting == "yes"
        hashing = str(ssh.get("hashknownhosts", "")).lower()
        self.hash_setting = True if hashing == "yes" else False if hashing == "no" else None
        self.pinned = pinned_fingerprint
        self.on_new = on_new
        entries = [e for path in (*self.user_files, *self.global_files)
                   for e in read_known_hosts(path) if host_matches(e.patterns, self.name)]
        self.revoked = [e for e in entries if e.marker == "@revoked"]
        revoked_keys = {e.key.asbytes() for e in self.revoked}
        self.known = [e for e in entries if not e.marker and e.key.asbytes() not in revoked_keys]

    @property
    def record_file(self) -> str:
        """Where a new host goes: the first user file (OpenSSH's rule)."""
        return self.user_files[0]

    def install(self, client: paramiko.SSHClient) -> None:
        """Load this host's known keys into the client and make self its policy."""
        keys = client.get_host_keys()
        keys.clear()
        # paramiko looks a host up as [host]:port (or host on 22), whatever the alias.
        lookup = known_host_name(self.host, self.port)
        for entry in self.known:
            keys.add(lookup, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(self)

    def _revoked_entry(self, key: paramiko.PKey) -> KnownHost | None:
        return next((e for e in self.revoked if e.key == key), None)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        revoked = self._revoked_entry(key)
        if revoked is not None:
            raise HostKeyRefused(
                f"host key of {self.name} ({key_label(key)}) is marked @revoked in "
                f"{revoked.where}; stopped before logging in (nothing sent)")
        if self.pinned is not None:
            if key.fingerprint != self.pinned:
                raise HostKeyRefused(
                    f"host key of {self.name} is not the stack's: the stack's outputs say "
                    f"{self.pinned}, the host offers {key_label(key)}; stopped before logging "
                    "in (nothing sent)")
            self.record(key, "matches the stack's host_key_fingerprint")
            return
        if self.strict:
            raise HostKeyRefused(
                f"{self.name} is not in known_hosts ({self.record_file}) and strict host key "
                f"checking is on: it offers {key_label(key)}; stopped before logging in "
                "(nothing sent)")
        self.record(key, "accept-new")

    def record(self, key: paramiko.PKey, why: str) -> None:
        """Append `key` for this host to the user's known_hosts (see record_file)."""
        path = self.record_file
        with _RECORD_LOCK:
            hashed = _hashed_style(path)
            if hashed is None:
                hashed = bool(self.hash_setting)
            name = paramiko.HostKeys.hash_host(self.name) if hashed else self.name
            line = f"{name} {key.get_name()} {key.get_base64()}\n"
            try:
                os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # another fab process may append too
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        line = "\n" + line
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise HostKeyRefused(
                    f"cannot record the host key of {self.name} in {path}: {exc.strerror}; "
                    "stopped before logging in (nothing sent)") from exc
        if self.on_new is not None:
            style = "hashed" if hashed else "plain"
            self.on_new(f"new host {self.name}: {key_label(key)} added to {path} "
                        f"({style}; {why})")

    def mismatch_message(self, offered: paramiko.PKey) -> str:
        """The one line for a known host that offered another key (paramiko's
        BadHostKeyException), with the command that removes the stale entry."""
        revoked = self._revoked_entry(offered)
        if revoked is not None:
            return (f"host key of {self.name} ({key_label(offered)}) is marked @revoked in "
                    f"{revoked.where}; stopped before logging in (nothing sent)")
        same_type = [e for e in self.known if e.key.get_name() == offered.get_name()]
        expected = (same_type or self.known)[0]
        return (f"host key mismatch for {self.name}: known_hosts has "
                f"{key_label(expected.key)} ({expected.where}), the host offers "
                f"{key_label(offered)}; stopped before logging in (no key, password or token "
                "sent); if the machine was rebuilt, remove the stale entry: "
                f"{remove_command(self.name, expected.path)}")


def strict_host_keys_configured(config: Any) -> bool:
    """`workbench.strict_host_keys` in Fabric's config (fabric.yaml, or the environment:
    FABRIC_WORKBENCH_STRICT_HOST_KEYS=1)."""
    section = config.get("workbench") or {}
    value = section.get("strict_host_keys", False) if hasattr(section, "get") else False
    if isinstance(value, str):
        return value.strip().lower() in ("1", "yes", "true", "on")
    return bool(value)


class HostKeyChecks:
    """The checks of one connection and of its gateway (a ProxyJump host), if any."""

    def __init__(self, connection: Connection, *, strict: bool = False,
                 pinned_fingerprint: str | None = None,
                 on_new: Callable[[str], None] | None = None) -> None:
        self.checks = [HostKeyCheck(connection, strict=strict,
                                    pinned_fingerprint=pinned_fingerprint, on_new=on_new)]
        self.checks[0].install(connection.client)
        gateway = connection.gateway
        while isinstance(gateway, Connection) and not gateway.is_connected:
            # The stack's pin is for the workstation, not for a jump host.
            check = HostKeyCheck(gateway, strict=strict, on_new=on_new)
            check.install(gateway.client)
            self.checks.append(check)
            gateway = gateway.gateway

    def mismatch_message(self, exc: paramiko.BadHostKeyException) -> str:
        check = next((c for c in self.checks if c.host == exc.hostname), self.checks[0])
        return check.mismatch_message(exc.key)


def open_checked(connection: Connection, **kwargs: Any) -> None:
    """connection.open() with known_hosts honoured; HostKeyRefused (one line) when refused.

    kwargs: strict, pinned_fingerprint, on_new (see HostKeyCheck).
    """
    if connection.is_connected:
        return
    checks = HostKeyChecks(connection, **kwargs)
    try:
        connection.open()
    except paramiko.BadHostKeyException as exc:
        connection.close()
        raise HostKeyRefused(checks.mismatch_message(exc)) from exc
    except HostKeyRefused:
        connection.close()
        raise
