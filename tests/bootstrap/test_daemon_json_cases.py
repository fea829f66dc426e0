"""Every daemon.json case, on a real host with a real dockerd behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bootstrap_run import fab, run_steps
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow

DAEMON_JSON = "/etc/docker/daemon.json"
OURS = {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}


def docker_files(host: TestHost) -> list[str]:
    """daemon.json and anything named after it: catches backups and stray temp files
    (dockerd's own key.json is not ours)."""
    return sorted(f for f in host.out("ls -A /etc/docker 2>/dev/null").split()
                  if "daemon.json" in f)


def runtimes(host: TestHost) -> list[str]:
    return sorted(host.docker_info()["Runtimes"])


def reload_dockerd(host: TestHost) -> None:
    host.exec("kill -HUP $(cat /var/run/docker.pid) && sleep 0.5")


def test_missing_file_is_created_with_the_runtime(host: TestHost) -> None:
    assert host.read_file(DAEMON_JSON) is None
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "changed", run.lines
    assert json.loads(host.read_file(DAEMON_JSON) or b"") == {"runtimes": {"nvidia": OURS}}
    assert docker_files(host) == ["daemon.json"], "nothing to back up, no temp file left"
    assert "nvidia" in runtimes(host)
    assert host.out(f"stat -c %a {DAEMON_JSON}").strip() == "644"


@pytest.mark.parametrize("content", [b"", b"\n  \n"], ids=["empty", "whitespace"])
def test_empty_file_counts_as_no_settings(host: TestHost, content: bytes) -> None:
    host.write_file(DAEMON_JSON, content)
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "changed", run.lines
    assert json.loads(host.read_file(DAEMON_JSON) or b"") == {"runtimes": {"nvidia": OURS}}
    backups = [f for f in docker_files(host) if f.startswith("daemon.json.bak-")]
    assert len(backups) == 1
    assert host.read_file(f"/etc/docker/{backups[0]}") == content
    assert "nvidia" in runtimes(host)


def test_malformed_file_is_left_byte_for_byte_and_the_run_stops(host: TestHost,
                                                                 tmp_path: Path) -> None:
    broken = b'{\n  "log-driver": "json-file",\n  "log-opts": {"max-size": "10m"\n}\n'
    host.write_file(DAEMON_JSON, broken, mode="600")
    before = host.out(f"stat -c '%a %Y %i' {DAEMON_JSON}")
    proc = fab("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", "--skip-check",
               "--image", "local/clara-standin:1", home=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    line = next(ln for ln in proc.stdout.splitlines() if " nvidia-runtime " in ln)
    assert "failed" in line
    assert ("/etc/docker/daemon.json: invalid JSON: Expecting ',' delimiter at line 5 column 1"
            in line), line
    assert host.read_file(DAEMON_JSON) == broken
    assert host.out(f"stat -c '%a %Y %i' {DAEMON_JSON}") == before
    assert docker_files(host) == ["daemon.json"]
    # The run stopped there: later steps did not run.
    for step in ("data-root", "compose", "container"):
        assert f" {step} " in out and "not run: an earlier step failed" in out
    assert host.exec("docker inspect workbench", check=False).returncode != 0
    assert "nvidia" not in runtimes(host)


def test_other_keys_are_kept(host: TestHost) -> None:
    original = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "runtimes": {"custom": {"path": "/usr/sbin/runc"}},
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 65536, "Soft": 65536}},
    }
    raw = json.dumps(original).encode()
    host.write_file(DAEMON_JSON, raw, mode="640")
    reload_dockerd(host)
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "changed", run.lines
    merged = json.loads(host.read_file(DAEMON_JSON) or b"")
    assert merged == {**original, "runtimes": {"custom": {"path": "/usr/sbin/runc"},
                                               "nvidia": OURS}}
    assert list(merged) == list(original)
    assert host.out(f"stat -c %a {DAEMON_JSON}").strip() == "640", "mode kept"
    backups = [f for f in docker_files(host) if f.startswith("daemon.json.bak-")]
    assert [host.read_file(f"/etc/docker/{b}") for b in backups] == [raw]
    assert {"custom", "nvidia", "runc"} <= set(runtimes(host))
    assert host.docker_info()["LoggingDriver"] == "json-file"


@pytest.mark.parametrize("entry", [
    OURS,
    {"args": [], "path": "nvidia-container-runtime"},  # what `nvidia-ctk runtime configure` writes
], ids=["ours", "nvidia-ctk"])
def test_entry_already_present_is_ok_and_untouched(host: TestHost, entry: dict) -> None:
    raw = json.dumps({"runtimes": {"nvidia": entry}}, indent=4).encode()
    host.write_file(DAEMON_JSON, raw)
    reload_dockerd(host)
    before = host.out(f"stat -c '%Y %i' {DAEMON_JSON}")
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "ok", run.lines
    assert run.report.commands_sent == 1, "facts only, no change command"
    assert host.read_file(DAEMON_JSON) == raw
    assert host.out(f"stat -c '%Y %i' {DAEMON_JSON}") == before
    assert docker_files(host) == ["daemon.json"]


def test_entry_in_file_but_dockerd_not_reloaded_is_reloaded_only(host: TestHost) -> None:
    raw = json.dumps({"runtimes": {"nvidia": OURS}}).encode()
    host.write_file(DAEMON_JSON, raw)  # dockerd not told
    assert "nvidia" not in runtimes(host)
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "changed"
    assert "reloaded dockerd" in run.message("nvidia-runtime")
    assert host.read_file(DAEMON_JSON) == raw and docker_files(host) == ["daemon.json"]
    assert "nvidia" in runtimes(host)


def test_missing_runtime_binary_fails_clearly_and_writes_nothing(host: TestHost) -> None:
    host.remove("/usr/bin/nvidia-container-runtime")
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "failed"
    assert run.message("nvidia-runtime").startswith(
        "nvidia-container-runtime not found on the host's PATH: install the NVIDIA Container "
        "Toolkit")
    assert host.read_file(DAEMON_JSON) is None


def test_file_changed_between_read_and_write_is_not_overwritten(host: TestHost) -> None:
    """The writer compares the file with what the facts saw; a change in between wins."""
    from bootstrap.shell import atomic_write, sha256_hex

    host.write_file(DAEMON_JSON, b'{"debug": true}\n')
    seen = sha256_hex(b'{"debug": false}\n')  # what we "read" earlier
    script = atomic_write(DAEMON_JSON, b"{}\n", expected_sha256=seen)
    proc = host.exec(script.text, check=False)
    assert proc.returncode == 3
    assert b"changed since it was read" in proc.stdout
    assert host.read_file(DAEMON_JSON) == b'{"debug": true}\n'
    assert docker_files(host) == ["daemon.json"]


def test_a_new_file_that_fails_validation_never_replaces_the_old(host: TestHost) -> None:
    """The validation gate of the writer, on the host: dockerd 20.10 has no --validate,
    so the bytes on disk are parsed with python3 before the rename."""
    from bootstrap.shell import VALIDATE_DAEMON_JSON, atomic_write, sha256_hex

    old = b'{"debug": true}\n'
    host.write_file(DAEMON_JSON, old)
    script = atomic_write(DAEMON_JSON, b'{"debug": tru', expected_sha256=sha256_hex(old),
                          validate=VALIDATE_DAEMON_JSON)
    proc = host.exec(script.text, check=False)
    assert proc.returncode == 4
    assert b"ERROR: new /etc/docker/daemon.json failed validation, old file kept" in proc.stdout
    assert host.read_file(DAEMON_JSON) == old
    assert docker_files(host) == ["daemon.json"], "no backup, no temp file"
