"""Fixtures for the bootstrap tests: real sshd + dockerd hosts, fab runs, recap parsing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bootstrap` and `tests.support` import from the repo root
    sys.path.insert(0, str(REPO))

from fabric import Config, Connection  # noqa: E402

from bootstrap.options import BootstrapOptions  # noqa: E402
from bootstrap.recap import HostReport  # noqa: E402
from bootstrap.runner import ALL_STEPS, bootstrap_host  # noqa: E402
from tests.support import testhosts  # noqa: E402
from tests.support.testhosts import STANDIN_IMAGE, TestHost  # noqa: E402

FAB = str(Path(sys.executable).parent / "fab")


@pytest.fixture(scope="session")
def real_parts() -> None:
    why = testhosts.missing_real_parts()
    if why:
        if os.environ.get("WORKBENCH_REQUIRE_REAL_PARTS") == "1":
            pytest.fail(f"WORKBENCH_REQUIRE_REAL_PARTS=1 but {why}")
        pytest.skip(why)
    testhosts.cleanup_stale()


@pytest.fixture
def host(real_parts: None) -> Iterator[TestHost]:
    """A fresh host per test (about a second to start), so no test sees another's changes."""
    h = testhosts.start_host()
    try:
        yield h
    finally:
        testhosts.stop_host(h)


@pytest.fixture(scope="module")
def two_hosts(real_parts: None) -> Iterator[list[TestHost]]:
    hosts = testhosts.start_hosts(2)
    try:
        yield hosts
    finally:
        for h in hosts:
            testhosts.stop_host(h)


def connect(host: TestHost, *, user: str | None = None, key: Path | None = None,
            sudo_password: str | None = None, port: int = 22) -> Connection:
    config = Config(overrides={"sudo": {"password": sudo_password}})
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

    def message(self, step: str) -> str:
        result = self.report.result(step)
        assert result is not None
        return result.message


def run_steps(host: TestHost, steps: tuple[str, ...] = ALL_STEPS, *,
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
    if home is not None:
        full_env["HOME"] = str(home)  # no ~/.ssh/config or keys of the box leak in
    full_env.update(env or {})
    return subprocess.run([FAB, *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


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
