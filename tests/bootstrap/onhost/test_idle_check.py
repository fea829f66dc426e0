"""The idle detector's decision, from recorded outputs of nvidia-smi, ss and Jupyter's API."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.onhost import workbench_idle_check as idle

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)
SETTINGS = idle.Settings(cloud="aws", minutes=60)

# Recorded: `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits`
SMI_IDLE_2GPU = "0\n3\n"
SMI_BUSY = "87\n"
# Recorded: `ss -Htn state established` on a workstation (IPv4 and IPv6 peers).
SS_TUNNEL = (
    "0      0          10.42.1.17:22        203.0.113.7:53122\n"
    "0      0          10.42.1.17:41882     104.18.34.1:443\n"
)
SS_V6_LOGIN = "0      0      [2001:db8::5]:22      [2001:db8::99]:60022\n"
SS_OUTBOUND_ONLY = "0      0          10.42.1.17:41882     104.18.34.1:443\n"
# Recorded: Jupyter Server /api/status and /api/kernels.
STATUS_OLD = ('{"connections": 0, "kernels": 1, "last_activity": "2026-11-23T06:40:11.512345Z",'
              ' "started": "2026-11-23T06:00:02.000000Z"}')
KERNELS_IDLE = ('[{"id": "5e1c", "name": "python3", "last_activity": '
                '"2026-11-23T06:40:11.500000Z", "execution_state": "idle", "connections": 0}]')
KERNELS_BUSY = ('[{"id": "5e1c", "name": "python3", "last_activity": '
                '"2026-11-23T06:40:11.500000Z", "execution_state": "busy", "connections": 1}]')
STATUS_RECENT = ('{"connections": 1, "kernels": 0, "last_activity": "2026-11-23T07:59:30Z",'
                 ' "started": "2026-11-23T06:00:02Z"}')


def activity(smi: str = SMI_IDLE_2GPU, ss: str = SS_OUTBOUND_ONLY, status: str = STATUS_OLD,
             kernels: str = KERNELS_IDLE) -> idle.Activity:
    last, busy = idle.parse_jupyter(status, kernels)
    return idle.Activity(idle.parse_gpu_utilisation(smi), idle.parse_ssh_connections(ss),
                         last, busy)


def test_parsers() -> None:
    assert idle.parse_gpu_utilisation(SMI_IDLE_2GPU) == (0, 3)
    assert idle.parse_gpu_utilisation("") == ()
    assert idle.parse_ssh_connections(SS_TUNNEL) == 1
    assert idle.parse_ssh_connections(SS_V6_LOGIN) == 1
    assert idle.parse_ssh_connections(SS_OUTBOUND_ONLY) == 0
    last, busy = idle.parse_jupyter(STATUS_OLD, KERNELS_BUSY)
    assert last == dt.datetime(2026, 11, 23, 6, 40, 11, 512345, tzinfo=dt.timezone.utc)
    assert busy == 1


def test_first_idle_check_starts_the_window() -> None:
    decision = idle.decide(activity(), SETTINGS, NOW, idle_since=None)
    assert decision.idle and not decision.stop and decision.idle_since == NOW


def test_stops_once_idle_for_the_whole_window() -> None:
    since = NOW - dt.timedelta(minutes=59)
    assert not idle.decide(activity(), SETTINGS, NOW, since).stop
    since = NOW - dt.timedelta(minutes=60)
    decision = idle.decide(activity(), SETTINGS, NOW, since)
    assert decision.stop and decision.idle_since == since


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"smi": SMI_BUSY}, "GPU busy (87% >= 10%)"),
    ({"smi": ""}, "GPU utilisation unknown"),
    ({"ss": SS_TUNNEL}, "1 SSH connection(s)"),
    ({"ss": SS_V6_LOGIN}, "1 SSH connection(s)"),
    ({"kernels": KERNELS_BUSY}, "1 Jupyter kernel(s) busy"),
    ({"status": STATUS_RECENT}, "Jupyter active at 07:59:30 UTC"),
])
def test_any_activity_resets_the_window(kwargs: dict[str, str], reason: str) -> None:
    decision = idle.decide(activity(**kwargs), SETTINGS, NOW,
                           idle_since=NOW - dt.timedelta(hours=5))
    assert not decision.idle and not decision.stop and decision.idle_since is None
    assert any(reason in r for r in decision.reasons), decision.reasons


def test_threshold_is_configurable() -> None:
    lenient = idle.Settings(cloud="gcp", minutes=30, gpu_threshold=90)
    decision = idle.decide(activity(smi=SMI_BUSY), lenient, NOW,
                           idle_since=NOW - dt.timedelta(minutes=30))
    assert decision.stop


def test_dry_run_end_to_end_with_real_commands(tmp_path: Path) -> None:
    """The program as the timer runs it: config file, state file, real ss; no GPU here, so
    nvidia-smi gives no reading and the machine must count as busy."""
    config = tmp_path / "autostop.conf"
    config.write_text("[autostop]\ncloud = aws\nminutes = 1\njupyter_url = http://127.0.0.1:9\n")
    state = tmp_path / "idle-since"
    state.write_text((NOW - dt.timedelta(days=1)).isoformat())
    script = Path(idle.__file__)
    result = subprocess.run([sys.executable, str(script), "--config", str(config),
                             "--state", str(state), "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("busy: GPU utilisation unknown")
    assert "would not stop" in result.stdout
