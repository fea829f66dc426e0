"""The autostop step's side of the facts command: what it reads back (unit, state, probe)
and the line it makes of them. The real runs are in test_autostop_on_systemd_host.py and
test_lifecycle_steps_on_hosts.py; this pins the cases they cannot reach cheaply."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping

import pytest

from bootstrap.options import BootstrapOptions
from bootstrap.steps import autostop

STATE = {"idle_since": "2026-11-23T02:00:00+00:00",
         "last": {"at": "2026-11-23T03:05:00+00:00", "decision": "stop-failed",
                  "summary": "could not deallocate: ..."},
         "stop": {"at": "2026-11-23T03:05:00+00:00", "ok": False, "kind": "role-missing",
                  "error": "the VM's identity may not deallocate it (ARM 403 AuthorizationFailed)"}}


def section(unit: str = "failed", state: Mapping[str, object] | None = None,
            probe: Mapping[str, object] | None = None) -> str:
    lines = [f"{autostop.SCRIPT} {autostop.SCRIPT_SHA} 755", f"{autostop.TIMER} absent",
             f"link {autostop.TIMER}", "systemd yes",
             "unit Result=exit-code" if unit == "failed" else "unit Result=success",
             f"unit ActiveState={unit}", "unit ExecMainStatus=1"]
    if state is not None:
        lines.append("state " + base64.b64encode(json.dumps(state).encode()).decode())
    if probe is not None:
        lines.append("probe " + json.dumps(probe))
    return "\n".join(lines)


def test_the_facts_parse_back() -> None:
    f = autostop.parse(section(state=STATE, probe={"ok": True, "kind": "", "message": "m"}))
    assert f.files[autostop.SCRIPT] == (autostop.SCRIPT_SHA, "755")
    assert f.files[autostop.TIMER] is None and f.link == autostop.TIMER and f.systemd
    assert f.unit == {"Result": "exit-code", "ActiveState": "failed", "ExecMainStatus": "1"}
    assert f.state == STATE and f.probe == autostop.Probe(True, "", "m")
    assert autostop.parse("probe \n").probe is None
    assert autostop.parse("probe garbage").probe == autostop.Probe(
        False, "error", "the probe printed no answer ('garbage')")
    assert autostop.parse("state !!!").state == {}


def test_a_failed_stop_is_the_line() -> None:
    f = autostop.parse(section(state=STATE))
    why, note = autostop.failure(f, "deallocate", None)
    assert why == ("last check could not deallocate (at 03:05:00 UTC): the VM's identity may "
                   "not deallocate it (ARM 403 AuthorizationFailed)") and note == ""
    # The role was granted since: the probe says so, the old failure becomes a note.
    why, note = autostop.failure(f, "deallocate", autostop.Probe(True, "", "may"))
    assert why is None and note.startswith("earlier: last check could not deallocate")


def test_a_failed_unit_without_a_failed_stop_is_the_line() -> None:
    crashed = {"last": {"at": "2026-11-23T03:05:00+00:00", "decision": "error",
                        "summary": "the check crashed: KeyError: 'compute'"}}
    why, _ = autostop.failure(autostop.parse(section(state=crashed)), "poweroff", None)
    assert why == ("workbench-idle-check.service failed (exit-code, exit 1): last check "
                   "03:05:00 UTC: the check crashed: KeyError: 'compute'; "
                   "journalctl -u workbench-idle-check.service")
    assert autostop.failure(autostop.parse(section(unit="inactive")), "poweroff", None) == (
        None, "")


@pytest.mark.parametrize(("cloud", "probes"), [("azure", True), (None, True), ("aws", False)])
def test_the_facts_snippet_is_sh_and_probes_only_on_azure(cloud: str | None,
                                                          probes: bool) -> None:
    snippet = autostop.facts_snippet(BootstrapOptions(cloud=cloud)).text
    assert subprocess.run(["sh", "-n"], input=snippet, text=True).returncode == 0
    assert ("probe --json" in snippet) is probes
    if cloud is None:
        assert "[ -d /var/lib/waagent ]" in snippet
    assert "probe" not in autostop.facts_snippet(BootstrapOptions(cloud="azure",
                                                                  autostop_minutes=0)).text


def test_timer_and_config_follow_the_window() -> None:
    assert b"OnStartupSec=30s\nOnUnitActiveSec=30s\n" in autostop.timer_unit(1)
    assert b"look for idleness every 5 min" in autostop.timer_unit(60)
    assert b"OnUnitActiveSec=265s 714ms" in autostop.timer_unit(31)
    config = autostop.config_text("azure", 10, "/home/wb", BootstrapOptions(
        workspace="~/ws", azure_imds_url="http://10.0.0.1:8080"))
    assert b"minutes = 10\ninterval_seconds = 150\n" in config
    assert b"gpu_sample_gap_seconds = 2\n" in config
    assert b"postpone_file = /home/wb/ws/.gpu-workbench/autostop-postpone\n" in config
    assert b"imds_url = http://10.0.0.1:8080\narm_url = https://management.azure.com\n" in config
