"""Helpers for the bootstrap tests: run steps through the API or the real `fab` CLI,
read the recap, fetch URLs. Fixtures live in tests/bootstrap/conftest.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fabric import Config, Connection
from paramiko import SSHConfig

from bootstrap.options import BootstrapOptions
from bootstrap.recap import HostReport
from bootstrap.runner import DEFAULT_STEPS, bootstrap_host
from tests.support.testhosts import STANDIN_IMAGE, TestHost

REPO = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")

__all__ = ["FAB", "REPO", "STANDIN_IMAGE", "Run", "connect", "fab", "host_ssh_config",
           "http_get", "recap_counts", "run_steps"]


def host_ssh_config(host: TestHost) -> SSHConfig:
    """ssh_config that checks the host's key against its own known_hosts file only
    (strictly), so a test neither reads nor writes the box's ~/.ssh."""
    return SSHConfig.from_text(
        f"Host *\n  UserKnownHostsFile {host.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        f"  StrictHostKeyChecking yes\n  HostKeyAlias {host.ip}\n")


def connect(host: TestHost, *, user: str | None = None, key: Path | None = None,
            sudo_password: str | None = None, port: int = 22) -> Connection:
    config = Config(overrides={"sudo": {"password": sudo_password}},
                    ssh_config=host_ssh_config(host))
    return Connection(host.ip, user=user or host.user, port=port, config=config,
                      connect_kwargs={"key_filename": str(key or host.key_path),
                                      "look_for_keys": False, "allow_agent": False},
                      connect_timeout=5)


@dataclass
class Run:
    report: HostReport
    lines: list[str]

    def status(self, step: str) -> str:
        result = self.report.result(step)
        assert result is not None, f"no {step} in {self.report.steps}"
        return result.status.value

    def seconds(self, step: str) -> float:
        result = self.report.result(step)
        assert result is not None
        return result.seconds

    def message(self, step: str) -> str:
        result = self.report.result(step)
        assert result is not None
        return result.message


def run_steps(host: TestHost, steps: tuple[str, ...] = DEFAULT_STEPS, *,
              connection: Connection | None = None, **options: object) -> Run:
    """Run steps through the Python API (what the fab tasks call)."""
    options.setdefault("image", STANDIN_IMAGE)
    options.setdefault("skip_check", True)
    options.setdefault("wait_timeout", 20.0)
    lines: list[str] = []
    report = bootstrap_host(connection or connect(host), BootstrapOptions(**options),  # type: ignore[arg-type]
                            steps, emit=lines.append)
    return Run(report, lines)


def fab(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
        home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `fab` CLI from the repo root, as a user runs it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "SSH_AUTH"))}
    with tempfile.TemporaryDirectory(prefix="wb-fab-home-") as scratch:
        # A HOME of the test's own, always: no ~/.ssh/config or keys of the box leak in,
        # and the host keys fab records (accept-new) land in it, not in the box's
        # ~/.ssh/known_hosts (test hosts reuse addresses with new keys).
        full_env["HOME"] = str(home if home is not None else scratch)
        full_env.update(env or {})
        return subprocess.run([FAB, *args], cwd=REPO, env=full_env, capture_output=True,
                              text=True, timeout=timeout)


RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+failed=(?P<failed>\d+)\s+"
    r"skipped=(?P<skipped>\d+)\s+[\d.]+s\s+(?P<commands>\d+) ssh commands$", re.M)


def recap_counts(output: str) -> dict[str, dict[str, int]]:
    """{host: {ok, changed, failed, skipped, commands}} from a fab run's PLAY RECAP."""
    found = {}
    for m in RECAP_LINE.finditer(output):
        found[m["host"]] = {k: int(m[k]) for k in ("ok", "changed", "failed", "skipped",
                                                   "commands")}
    return found


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
