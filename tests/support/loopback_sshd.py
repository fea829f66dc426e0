"""A real OpenSSH sshd on a loopback port, standing in for a cluster's login node.

The server has its own config, host key, port and log under a temp dir, so it
never touches the machine's own sshd. It logs in one non-root user by key
only (``UsePAM no``; the user's password field is ``*`` so sshd does not treat
the account as locked). ``session_env`` lands in every session through
sshd's ``SetEnv``: the Slurm fixture uses it to point the login node's Slurm
commands at the test cluster's slurm.conf, the way /etc/slurm does on a real
login node.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s\n{tail}")


def ensure_login_user(name: str, home: Path) -> tuple[int, int, bool]:
    """Create (or re-home) a non-root login user; returns (uid, gid, created)."""
    try:
        pwd.getpwnam(name)
        created = False
        subprocess.run(["usermod", "-d", str(home), name], check=True, capture_output=True)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "-d", str(home), "-s", "/bin/bash", name],
            check=True,
            capture_output=True,
        )
        created = True
    # A new account is locked ("!") and sshd with UsePAM no refuses locked
    # accounts even for key logins; "*" means "no password, not locked".
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o755)
    return entry.pw_uid, entry.pw_gid, created


@dataclass
class LoopbackSshd:
    """One sshd process on 127.0.0.1:port that lets `user` in with `client_key`."""

    root: Path
    user: str
    home: Path
    session_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    client_key: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    created_user: bool = field(default=False, init=False)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.port = self.port or free_loopback_port()
        host_key = self.root / "host_ed25519"
        self.client_key = self.root / "client_ed25519"
        for key in (host_key, self.client_key):
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                    check=True,
                )
        _uid, _gid, self.created_user = ensure_login_user(self.user, self.home)
        # authorized_keys lives outside the home dir in a root-owned directory,
        # which satisfies StrictModes without touching the user's files.
        keys_dir = self.root / "authorized_keys"
        keys_dir.mkdir(mode=0o755, exist_ok=True)
        (keys_dir / self.user).write_text((self.root / "client_ed25519.pub").read_text())
        (keys_dir / self.user).chmod(0o644)
        env_line = " ".join(f"{k}={v}" for k, v in self.session_env.items())
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {keys_dir}/%u",
                    f"AllowUsers {self.user}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UsePAM no",
                    # The keys file is root's, in a root-owned 0755 dir, but it
                    # sits under /tmp, whose mode (1777) StrictModes refuses
                    # whatever the sticky bit.
                    "StrictModes no",
                    "PermitRootLogin no",
                    f"Subsystem sftp {SFTP_SERVER}",
                    *([f"SetEnv {env_line}"] if env_line else []),
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation dir sshd insists on
        log = self.root / "sshd.log"
        # The client side: this server's key pinned for [127.0.0.1]:port, and an
        # ssh_config (fab -S, or a Fabric Config) that checks against it strictly,
        # so tests never read or write the box's ~/.ssh/known_hosts.
        key_type, key_b64 = (self.root / "host_ed25519.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n")
        self.ssh_config.write_text(f"Host *\n  UserKnownHostsFile {self.known_hosts}\n"
                                   "  GlobalKnownHostsFile /dev/null\n"
                                   "  StrictHostKeyChecking yes\n")
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        # -D keeps sshd in the foreground so we own its pid and can end it.
        self.process = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(log)], start_new_session=True
        )
        wait_for_port(self.port, 10, "sshd", log)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.created_user:
            subprocess.run(["userdel", self.user], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def host_key_pub(self) -> Path:
        return self.root / "host_ed25519.pub"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def host_string(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"
