"""The Azure stop: the idle check's real HTTP calls against a local server that answers as
Azure documents it (tests/support/azure_standin.py names the documents), recording every
request. The program runs as the timer runs it (a subprocess, its config pointing the IMDS
and ARM base URLs at the stand-in), with the machine already idle for the whole window."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.onhost import workbench_idle_check as idle
from tests.support.azure_standin import ARM_RESOURCE, AzureStandin, Recorded

SCRIPT = str(Path(idle.__file__))


@pytest.fixture
def azure() -> Iterator[AzureStandin]:
    with AzureStandin() as standin:
        yield standin


def write_config(tmp_path: Path, azure: AzureStandin) -> Path:
    config = tmp_path / "autostop.conf"
    # Nothing on this box may count as activity: no ports, no Jupyter, no nvidia-smi.
    config.write_text(
        "[autostop]\ncloud = azure\nminutes = 60\nssh_ports =\napp_ports =\n"
        "jupyter_urls =\nnvidia_smi = /nonexistent/nvidia-smi\nwall = no\n"
        f"imds_url = {azure.url}\narm_url = {azure.url}\n")
    return config


def idle_for_the_window(state: Path, minutes: int = 61) -> str:
    since = idle.iso(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes))
    state.write_text(json.dumps({"idle_since": since, "warned_for": since}))
    return since


def check(config: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, "--config", str(config), "--state",
                           str(state), *args], capture_output=True, text=True, timeout=120)


def assert_imds(r: Recorded, path: str, query: dict[str, list[str]]) -> None:
    assert (r.method, r.path, r.query) == ("GET", path, query)
    assert r.headers["metadata"] == "true" and "authorization" not in r.headers


def assert_deallocate(r: Recorded, azure: AzureStandin) -> None:
    assert (r.method, r.path, r.query) == ("POST", f"{azure.vm_id}/deallocate",
                                           {"api-version": ["2024-11-01"]})
    assert r.headers["authorization"] == f"Bearer {azure.token}"
    assert r.headers["content-length"] == "0" and "metadata" not in r.headers


def assert_calls(azure: AzureStandin) -> None:
    """token, instance metadata, deallocate: each as documented."""
    token, instance, deallocate = azure.requests
    assert_imds(token, "/metadata/identity/oauth2/token",
                {"api-version": ["2018-02-01"], "resource": [ARM_RESOURCE]})
    assert_imds(instance, "/metadata/instance", {"api-version": ["2021-02-01"]})
    assert_deallocate(deallocate, azure)


def no_token_anywhere(azure: AzureStandin, *texts: str) -> None:
    for text in texts:
        assert azure.token not in text


def test_an_idle_vm_deallocates_itself(tmp_path: Path, azure: AzureStandin) -> None:
    config, state = write_config(tmp_path, azure), tmp_path / "state.json"
    since = idle_for_the_window(state)
    result = check(config, state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_calls(azure)
    assert f"deallocate accepted (202) for {azure.vm}" in result.stdout
    saved = json.loads(state.read_text())
    assert saved["stop"]["ok"] is True and saved["idle_since"] == since
    no_token_anywhere(azure, result.stdout, result.stderr, state.read_text())


def test_no_managed_identity(tmp_path: Path, azure: AzureStandin) -> None:
    azure.identity = False
    config, state = write_config(tmp_path, azure), tmp_path / "state.json"
    since = idle_for_the_window(state)
    result = check(config, state)
    assert result.returncode == 1
    assert [r.path for r in azure.requests] == ["/metadata/identity/oauth2/token"]  # 4xx: no retry
    assert ("ERROR: could not deallocate: this VM has no managed identity (IMDS 400 "
            "invalid_request: Identity not found)") in result.stdout
    saved = json.loads(state.read_text())
    assert saved["idle_since"] == since  # the window is not restarted by a failed stop
    assert saved["stop"] == {"at": saved["stop"]["at"], "ok": False, "kind": "no-identity",
                             "error": saved["stop"]["error"]}


def test_role_missing(tmp_path: Path, azure: AzureStandin) -> None:
    azure.deallocate_allowed = False
    config, state = write_config(tmp_path, azure), tmp_path / "state.json"
    since = idle_for_the_window(state)
    result = check(config, state)
    assert result.returncode == 1
    assert_calls(azure)
    assert ("ERROR: could not deallocate: the VM's identity may not deallocate it (ARM 403 "
            "AuthorizationFailed: The client '") in result.stdout
    assert "grant it Virtual Machine Contributor on the VM" in result.stdout
    saved = json.loads(state.read_text())
    assert saved["idle_since"] == since and saved["stop"]["kind"] == "role-missing"
    no_token_anywhere(azure, result.stdout, result.stderr, state.read_text())


def test_arm_5xx_then_success_at_the_next_check(tmp_path: Path, azure: AzureStandin) -> None:
    azure.arm_failures = 1
    config, state = write_config(tmp_path, azure), tmp_path / "state.json"
    since = idle_for_the_window(state)
    first = check(config, state)
    assert first.returncode == 1
    assert "ERROR: could not deallocate: deallocate: ARM 500 InternalServerError: An internal " \
        "execution error occurred.; idle since kept, trying again at the next check" in first.stdout
    assert json.loads(state.read_text())["idle_since"] == since
    assert not azure.deallocated.is_set()
    second = check(config, state)
    assert second.returncode == 0, second.stdout
    assert azure.deallocated.is_set()
    deallocations = [r for r in azure.requests if r.method == "POST"]
    assert len(deallocations) == 2
    for r in deallocations:
        assert_deallocate(r, azure)
    saved = json.loads(state.read_text())
    assert saved["stop"]["ok"] is True and saved["idle_since"] == since
    no_token_anywhere(azure, first.stdout, second.stdout, state.read_text())


def test_imds_throttling_is_retried_within_the_check(azure: AzureStandin) -> None:
    """429 from IMDS: retry with backoff (documented); two refusals, then a token. In
    process, with real HTTP, so the test need not sleep through the backoff."""
    azure.imds_failures = 2
    slept: list[float] = []
    result = idle.Azure(azure.url, azure.url, sleep=slept.append).deallocate()
    assert result.startswith("deallocate accepted (202)")
    assert slept == [2.0, 6.0]
    paths = [r.path for r in azure.requests]
    assert paths == ["/metadata/identity/oauth2/token"] * 3 + [
        "/metadata/instance", f"{azure.vm_id}/deallocate"]
    azure.imds_failures = 3
    with pytest.raises(idle.StopFailed, match="IMDS 429 too_many_requests: IMDS throttle limit "
                                              "reached after 3 tries") as failed:
        idle.Azure(azure.url, azure.url, sleep=slept.append).deallocate()
    assert failed.value.kind == "transient"


@pytest.mark.parametrize(("setup", "ok", "kind", "text"), [
    ({}, True, "", "the VM's identity may Microsoft.Compute/virtualMachines/deallocate/action"),
    ({"identity": False}, False, "no-identity", "this VM has no managed identity"),
    ({"deallocate_allowed": False}, False, "role-missing",
     "the VM's identity lacks Microsoft.Compute/virtualMachines/deallocate/action"),
    ({"permissions": [{"actions": ["*"], "notActions": ["Microsoft.Compute/*/action"],
                       "dataActions": [], "notDataActions": []}]}, False, "role-missing",
     "lacks"),
])
def test_the_install_time_probe(tmp_path: Path, azure: AzureStandin, setup: dict[str, object],
                                ok: bool, kind: str, text: str) -> None:
    for key, value in setup.items():
        setattr(azure, key, value)
    config = write_config(tmp_path, azure)
    result = check(config, tmp_path / "state.json", "probe", "--json")
    assert result.returncode == (0 if ok else 1), result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is ok and answer["kind"] == kind and text in answer["message"]
    if azure.identity:
        *_, permissions = azure.requests
        assert (permissions.method, permissions.path, permissions.query) == (
            "GET", f"{azure.vm_id}/providers/Microsoft.Authorization/permissions",
            {"api-version": ["2022-04-01"]})
        assert permissions.headers["authorization"] == f"Bearer {azure.token}"
        assert not [r for r in azure.requests if r.method == "POST"]  # a probe never stops
    no_token_anywhere(azure, result.stdout, result.stderr)


def test_an_unreachable_imds_says_so(tmp_path: Path) -> None:
    config = tmp_path / "autostop.conf"
    config.write_text("[autostop]\ncloud = azure\nminutes = 60\n"
                      "imds_url = http://127.0.0.1:9\narm_url = http://127.0.0.1:9\n")
    result = check(config, tmp_path / "state.json", "probe", "--json")
    answer = json.loads(result.stdout)
    assert result.returncode == 1 and answer["kind"] == "unreachable"
    assert "managed identity token: cannot reach http://127.0.0.1:9/metadata/identity/oauth2/" \
        "token" in answer["message"]
