"""An OpenSSH client config entry per workstation, so `ssh wb-<stack>` logs in and
`ssh -N wb-<stack>-tunnel` opens every port the container serves.

The entries live in their own file, ~/.ssh/gpu-workbench/config (mode 600), one
block per stack between markers; the user's ~/.ssh/config gets one `Include` line,
added once and only with consent, before its first Host or Match block (an Include
inside a block is conditional: ssh_config(5)). Values come from a stack's outputs
and are checked before they are written: a value that could add a directive (a
newline, a quote) is refused, never escaped by hand.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path("~/.ssh/gpu-workbench")
CONFIG_NAME = "config"
INCLUDE_LINE = "Include gpu-workbench/config"
HOST_PREFIX = "wb-"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SshConfigError(ValueError):
    """A value that cannot go into an ssh_config safely; the message names it."""


@dataclass(frozen=True)
class Workstation:
    stack: str
    host: str  # the public IP (or DNS name)
    user: str
    identity_file: str | None = None  # as the user gave it (~ allowed)
    port: int = 22
    forwards: tuple[int, ...] = ()  # local port = remote port on the workstation

    def __post_init__(self) -> None:
        if not _STACK.match(self.stack):
            raise SshConfigError(f"stack name {self.stack!r} cannot name an ssh Host")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if not _HOSTNAME.match(self.host):
                raise SshConfigError(f"public_ip {self.host!r} is not an address or host "
                                     "name") from None
        if not _USER.match(self.user):
            raise SshConfigError(f"ssh_user {self.user!r} is not a login name")
        if self.identity_file is not None and re.search(r'["\n\r\0]', self.identity_file):
            raise SshConfigError(f"identity file {self.identity_file!r} holds a quote or a "
                                 "newline, which ssh_config cannot express")
        for port in (self.port, *self.forwards):
            if not 1 <= port <= 65535:
                raise SshConfigError(f"port {port} is not a TCP port")

    @property
    def alias(self) -> str:
        return HOST_PREFIX + self.stack

    def block(self) -> str:
        """The Host entries for this workstation, between markers."""
        common = [f"    HostName {self.host}", f"    User {self.user}"]
        if self.port != 22:
            common.append(f"    Port {self.port}")
        if self.identity_file:
            common += [f'    IdentityFile "{self.identity_file}"', "    IdentitiesOnly yes"]
        lines = [_begin(self.stack),
                 f"# {self.alias}: log in; {self.alias}-tunnel: `ssh -N {self.alias}-tunnel` "
                 "forwards every port the container serves",
                 f"Host {self.alias}", *common,
                 f"Host {self.alias}-tunnel", *common,
                 *(f"    LocalForward {p} localhost:{p}" for p in self.forwards),
                 "    ExitOnForwardFailure yes",
                 _end(self.stack)]
        return "\n".join(lines) + "\n"


def _begin(stack: str) -> str:
    return f"# >>> gpu-workbench {stack} (scripts/up writes it, scripts/down removes it)"


def _end(stack: str) -> str:
    return f"# <<< gpu-workbench {stack}"


def without_block(text: str, stack: str) -> str:
    """The config text with this stack's block removed (nothing else touched)."""
    begin, end = _begin(stack), _end(stack)
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == begin:
            inside = True
            continue
        if inside:
            if line.rstrip("\n") == end:
                inside = False
            continue
        out.append(line)
    return "".join(out)


def stacks_in(text: str) -> list[str]:
    prefix = "# >>> gpu-workbench "
    return [line[len(prefix):].split(" ", 1)[0] for line in text.splitlines()
            if line.startswith(prefix)]


def with_include(user_config: str) -> str | None:
    """~/.ssh/config with the Include line before its first Host or Match block, or None
    when it is there already (anywhere outside a block)."""
    lines = user_config.splitlines(keepends=True)
    first_block = next((i for i, line in enumerate(lines)
                        if re.match(r"^\s*(Host|Match)\b", line, re.I)), len(lines))
    if any(line.strip() == INCLUDE_LINE for line in lines[:first_block]):
        return None
    header = ["# gpu-workbench workstations (ssh wb-<stack>); scripts/down removes entries\n",
              INCLUDE_LINE + "\n", "\n"]
    return "".join(lines[:first_block] + header + lines[first_block:])


def _write_private(path: Path, text: str) -> None:
    """Replace path atomically, in a directory only the user can read: a new file gets
    mode 600, an existing one keeps its mode (ssh refuses a group-writable config)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class SshConfig:
    """The user's ~/.ssh (home given for tests) and our included file in it."""

    home: Path

    @property
    def ours(self) -> Path:
        return self.home / ".ssh" / CONFIG_DIR.name / CONFIG_NAME

    @property
    def users(self) -> Path:
        return self.home / ".ssh" / "config"

    def entries(self) -> str:
        return self.ours.read_text() if self.ours.exists() else ""

    def add(self, workstation: Workstation) -> None:
        text = without_block(self.entries(), workstation.stack)
        _write_private(self.ours, text + workstation.block())

    def remove(self, stack: str) -> bool:
        text = self.entries()
        if stack not in stacks_in(text):
            return False
        _write_private(self.ours, without_block(text, stack))
        return True

    def include_missing(self) -> bool:
        current = self.users.read_text() if self.users.exists() else ""
        return with_include(current) is not None

    def add_include(self, consent: Callable[[str], bool]) -> str:
        """Add the Include line to ~/.ssh/config if the user agrees; say what happened."""
        current = self.users.read_text() if self.users.exists() else ""
        wanted = with_include(current)
        if wanted is None:
            return f"{self.users} already includes {CONFIG_DIR}/{CONFIG_NAME}"
        if not consent(f"Add '{INCLUDE_LINE}' to {self.users} (so `ssh wb-<stack>` works)?"):
            return (f"{self.users} left as it is: add '{INCLUDE_LINE}' at its top yourself, "
                    f"or use ssh -F {self.ours}")
        if self.users.exists():
            backup = self.users.with_name("config.gpu-workbench.bak")
            backup.write_text(current)
            os.chmod(backup, self.users.stat().st_mode & 0o777)
        _write_private(self.users, wanted)
        return f"added '{INCLUDE_LINE}' to {self.users}"


def forwards_from_tunnel(tunnel_command: str) -> tuple[int, ...]:
    """The ports a stack's tunnel_command forwards (-L P:localhost:P)."""
    return tuple(int(p) for p in re.findall(r"-L (\d+):localhost:\1\b", tunnel_command))


def workstation_from_outputs(stack: str, outputs: Mapping[str, object],
                             identity_file: str | None) -> Workstation:
    """The entry for a stack from its outputs (`pulumi stack output --json`)."""
    host, user = outputs.get("public_ip"), outputs.get("ssh_user")
    if not isinstance(host, str) or not host or not isinstance(user, str) or not user:
        raise SshConfigError(f"stack {stack}'s outputs lack public_ip or ssh_user")
    tunnel = outputs.get("tunnel_command")
    return Workstation(stack, host, user, identity_file,
                       forwards=forwards_from_tunnel(tunnel) if isinstance(tunnel, str) else ())

