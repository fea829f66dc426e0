"""Spot interruptions on real hosts that boot systemd as PID 1 (tests/support/systemd_host.py).

The bootstrap (over real SSH, the runner with its facts command) installs the watcher
and the idle check; the host's own systemd runs them. Nothing is mocked between the
watcher and the record, nor between a poweroff and the next boot: the "cloud" stops the
machine with a clean `systemctl poweroff` inside (what the ACPI shutdown a cloud sends
makes systemd do) and starts it again on the same disks (boot_again). Stand-ins only for
the clouds' metadata services, each answering as its documents say:

- AWS IMDSv2, tests/support/aws_standin.py (awsdocs amazon-ec2-user-guide:
  configuring-instance-metadata-service.md, instancedata-data-retrieval.md,
  spot-instance-termination-notices.md);
- GCP metadata server, tests/support/gcp_standin.py (cloud.google.com/compute/docs:
  instances/create-use-spot, metadata/getting-live-migration-notice,
  metadata/querying-metadata);
- Azure Scheduled Events, tests/support/azure_standin.py (azure-compute-docs
  articles/virtual-machines/linux/scheduled-events.md).

The hosts run side by side, one thread each:

  aws       container + idle check + watcher; EC2's spot notice; the journal line and the
            record; the stop; the boot: the machine comes back as after an autostop, and
            scripts/status says it was interrupted.
  gcp       the watcher alone: preempted TRUE.
  azure     the watcher alone: a neighbour's Preempt (ignored), then this VM's.
  autostop  the idle check with a one-minute window powers the host off: recorded as
            autostop, not as an interruption.
  faults    metadata failing (500), then a full disk under the record, then the watcher
            killed: logged, never a failed unit, the record written once it can be.

Set WORKBENCH_INTERRUPTION_TRANSCRIPTS=DIR to keep each host's journal of the watcher.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bootstrap.logs import log_command
from bootstrap.steps import autostop, interruptions
from tests.stacktools.test_handoff import plain_names
from tests.stacktools.test_status import save, status
from tests.support import systemd_host as hosts
from tests.support.aws_standin import INSTANCE_ACTION, TOKEN_PATH, AwsImdsStandin
from tests.support.azure_standin import AzureStandin
from tests.support.bootstrap_run import Run, run_steps
from tests.support.gcp_standin import MAINTENANCE_EVENT, PREEMPTED, GcpMetadataStandin
from tests.support.systemd_host import SystemdHost, boot_again, wait_for

pytestmark = pytest.mark.slow

RECORD = interruptions.RECORD
UNIT = interruptions.UNIT
TIMER = "workbench-idle-check.timer"
STEPS = ("nvidia-runtime", "container", "autostop", "interruptions")
TRANSCRIPTS = os.environ.get("WORKBENCH_INTERRUPTION_TRANSCRIPTS")


@dataclass
class Scenario:
    name: str
    host: SystemdHost | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    journal: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def record_on(h: SystemdHost) -> dict[str, Any] | None:
    """The record as the host's disk holds it (read from the box: works while it is off)."""
    try:
        loaded = json.loads((h.root / RECORD.lstrip("/")).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def watcher_log(h: SystemdHost) -> str:
    """The watcher's journal lines of every boot so far (inside the running host)."""
    return h.out(f"journalctl -u {UNIT} --no-pager -o cat", check=False)


def bootstrap(h: SystemdHost, steps: tuple[str, ...], **options: Any) -> Run:
    with h.connection() as connection:
        return run_steps(h, steps, connection=connection,  # type: ignore[arg-type]
                         wait_timeout=60.0, **options)


def statuses(run: Run) -> dict[str, str]:
    return {r.step: r.status.value for r in run.report.steps}


def status_of(h: SystemdHost, stack: str, cloud: str) -> list[str]:
    """scripts/status as a user runs it: saved outputs in a HOME of its own."""
    with tempfile.TemporaryDirectory(prefix="wb-status-home-") as scratch:
        home = Path(scratch)
        plain_names(home)
        save(home, stack, {"cloud": cloud, "public_ip": h.ip, "ssh_user": h.user,
                           "ssh_command": f"ssh -i {h.key_path} {h.user}@{h.ip}",
                           "host_key": h.host_key_path.read_text().strip(),
                           "hourly_cost_usd": 0.4533, "data_mount": ""})
        proc = status(home, stack)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def container_running(h: SystemdHost) -> bool:
    return h.run_inside("docker inspect -f '{{.State.Running}}' workbench",
                        check=False).stdout.decode().strip() == "true"


def settle(h: SystemdHost) -> str:
    """systemd's own word once the boot is done: running, or degraded (a failed unit)."""
    return h.out("timeout 60 systemctl is-system-running --wait", check=False).strip()


# --- the scenarios, one thread each ---------------------------------------------------------------

def run_aws(s: Scenario, h: SystemdHost) -> None:
    with AwsImdsStandin(host=h.outside_ip) as aws:
        options = {"cloud": "aws", "aws_imds_url": aws.url, "autostop_minutes": 60}
        first = bootstrap(h, STEPS, **options)
        s.facts["first"] = (statuses(first), first.message("interruptions"))
        again = bootstrap(h, STEPS, **options)
        s.facts["again"] = (statuses(again), again.report.commands_sent)
        wait_for(lambda: len(aws.requests_to(INSTANCE_ACTION)) >= 1, what="the watcher's poll",
                 timeout=60, interval=0.1)

        polls = len(aws.requests_to(INSTANCE_ACTION))
        noticed = time.monotonic()
        s.facts["action"] = aws.interrupt("stop")
        wait_for(lambda: record_on(h) is not None, what="the record", timeout=60, interval=0.05)
        s.facts["notice_to_record_s"] = time.monotonic() - noticed
        s.facts["polls_to_record"] = len(aws.requests_to(INSTANCE_ACTION)) - polls
        s.facts["status_during"] = status_of(h, "aws-spot", "aws")

        # EC2 stops the instance: the guest gets the ACPI shutdown and powers off cleanly.
        h.run_inside("systemctl poweroff", check=False)
        s.facts["exit"] = h.wait_for_exit(120)[0]
        s.facts["record_after_stop"] = record_on(h)
        aws.clear()  # EC2 starts it again when capacity returns: no notice any more
        boot_again(h)
        wait_for(lambda: container_running(h), what="the container after the boot",
                 timeout=120, interval=0.1)
        s.facts["boot_to_container_s"] = time.monotonic() - h.boot_time
        s.facts["system"] = settle(h)
        s.facts["container"] = json.loads(h.out("docker inspect workbench"))[0]
        s.facts["active"] = h.out(f"systemctl is-active {TIMER} {UNIT}", check=False).split()
        s.facts["failed"] = h.failed_units()
        after = bootstrap(h, STEPS, **options)
        s.facts["after"] = (statuses(after), after.report.commands_sent)
        s.facts["status_after"] = status_of(h, "aws-spot", "aws")
        s.facts["record_after_boot"] = record_on(h)
        s.facts["log"] = watcher_log(h)
        # What `fab logs --source autostop` runs on the host.
        s.facts["fab_logs"] = h.out(str(log_command("autostop", 200, False)), check=False)
        s.facts["requests"] = [(r.method, r.path, r.headers) for r in aws.requests]
        s.facts["boot_id"] = h.out("cat /proc/sys/kernel/random/boot_id").strip()


def run_gcp(s: Scenario, h: SystemdHost) -> None:
    with GcpMetadataStandin(host=h.outside_ip) as gcp:
        run = bootstrap(h, ("interruptions",), cloud="gcp", gcp_metadata_url=gcp.url)
        s.facts["line"] = run.message("interruptions")
        wait_for(lambda: len(gcp.requests_to(MAINTENANCE_EVENT)) >= 1,
                 what="the watcher's poll", timeout=60, interval=0.1)
        polls = len(gcp.requests_to(PREEMPTED))
        noticed = time.monotonic()
        gcp.preempt()
        wait_for(lambda: record_on(h) is not None, what="the record", timeout=60, interval=0.05)
        s.facts["notice_to_record_s"] = time.monotonic() - noticed
        s.facts["polls_to_record"] = len(gcp.requests_to(PREEMPTED)) - polls
        s.facts["record"] = record_on(h)
        s.facts["status"] = status_of(h, "gcp-h100-spot", "gcp")
        s.facts["log"] = watcher_log(h)
        s.facts["requests"] = [(r.method, r.path, r.headers) for r in gcp.requests]
        s.facts["active"] = h.out(f"systemctl is-active {UNIT}", check=False).strip()


def run_azure(s: Scenario, h: SystemdHost) -> None:
    with AzureStandin(host=h.outside_ip) as azure:
        run = bootstrap(h, ("interruptions",), cloud="azure", azure_imds_url=azure.url)
        s.facts["line"] = run.message("interruptions")
        wait_for(lambda: any(r.path == "/metadata/scheduledevents" for r in azure.requests),
                 what="the watcher's poll", timeout=60, interval=0.1)
        neighbour = azure.schedule("Preempt", resources=["wb-other-vm"])
        wait_for(lambda: f"{neighbour['EventId']} is for" in watcher_log(h),
                 what="the neighbour's event", timeout=60, interval=0.2)
        s.facts["record_after_neighbour"] = record_on(h)
        def polls() -> int:
            return sum(r.path == "/metadata/scheduledevents" for r in list(azure.requests))

        before = polls()
        noticed = time.monotonic()
        s.facts["event"] = azure.schedule("Preempt")
        wait_for(lambda: record_on(h) is not None, what="the record", timeout=60, interval=0.05)
        s.facts["notice_to_record_s"] = time.monotonic() - noticed
        s.facts["polls_to_record"] = polls() - before
        s.facts["record"] = record_on(h)
        s.facts["status"] = status_of(h, "azure-spot", "azure")
        s.facts["log"] = watcher_log(h)
        s.facts["requests"] = [(r.method, r.path, r.query, r.headers) for r in azure.requests]
        s.facts["approved"] = list(azure.approved)


def run_autostop(s: Scenario, h: SystemdHost) -> None:
    with AwsImdsStandin(host=h.outside_ip) as aws:  # a spot VM that no one interrupts
        bootstrap(h, ("autostop", "interruptions"), cloud="aws", aws_imds_url=aws.url,
                  autostop_minutes=1)
        s.facts["exit"] = h.wait_for_exit(300)[0]
        s.facts["record"] = record_on(h)
        s.facts["idle_check"] = h.journal(autostop.UNIT)
        boot_again(h)
        # Read at once: the one-minute window powers this host off again soon.
        s.facts["status"] = status_of(h, "aws-spot", "aws")
        s.facts["log"] = watcher_log(h)


def run_faults(s: Scenario, h: SystemdHost) -> None:
    with AwsImdsStandin(host=h.outside_ip) as aws:
        bootstrap(h, ("interruptions",), cloud="aws", aws_imds_url=aws.url)
        wait_for(lambda: len(aws.requests_to(INSTANCE_ACTION)) >= 1, what="the watcher's poll",
                 timeout=60, interval=0.1)
        # 1. The metadata service fails (500) for three polls in a row, then mends.
        failing_from = len(aws.requests_to(INSTANCE_ACTION))
        aws.fault = "500"
        wait_for(lambda: len(aws.requests_to(INSTANCE_ACTION)) >= failing_from + 3,
                 what="three failed polls", timeout=120, interval=0.2)
        aws.fault = None
        wait_for(lambda: "answers again" in watcher_log(h), what="the recovery line",
                 timeout=120, interval=0.2)
        s.facts["outage_log"] = watcher_log(h)

        # 2. A notice while the disk under the record is full.
        h.run_inside("mkdir -p /var/lib/gpu-workbench && "
                     "mount -t tmpfs -o size=8k wb-full /var/lib/gpu-workbench && "
                     "{ dd if=/dev/zero of=/var/lib/gpu-workbench/filler bs=1k count=64 "
                     "2>/dev/null || test \"$(df --output=avail /var/lib/gpu-workbench "
                     "| tail -n 1)\" -eq 0; }")
        aws.interrupt("terminate")
        wait_for(lambda: "cannot write" in watcher_log(h), what="the write failure",
                 timeout=60, interval=0.1)
        s.facts["unit_while_full"] = h.out(f"systemctl show {UNIT} -p ActiveState -p NRestarts")
        h.run_inside("umount /var/lib/gpu-workbench")
        wait_for(lambda: record_on(h) is not None, what="the record once the disk has room",
                 timeout=60, interval=0.1)
        s.facts["record"] = record_on(h)

        # 3. The watcher is killed (SIGKILL): systemd starts it again; the notice, still
        # there, is not logged or written a second time.
        written = (h.root / RECORD.lstrip("/")).read_bytes()
        h.run_inside(f"systemctl kill -s KILL {UNIT}")
        wait_for(lambda: "NRestarts=1" in h.out(f"systemctl show {UNIT} -p NRestarts"),
                 what="the restart", timeout=60, interval=0.1)
        wait_for(lambda: watcher_log(h).count("watching aws metadata at ") == 2,
                 what="the second start", timeout=60, interval=0.1)
        polls = len(aws.requests_to(INSTANCE_ACTION))
        wait_for(lambda: len(aws.requests_to(INSTANCE_ACTION)) >= polls + 2,
                 what="two more polls", timeout=60, interval=0.1)
        s.facts["record_bytes_same"] = (h.root / RECORD.lstrip("/")).read_bytes() == written
        s.facts["unit_after_kill"] = h.out(f"systemctl show {UNIT} -p ActiveState -p NRestarts")
        s.facts["log"] = watcher_log(h)
        s.facts["failed"] = h.failed_units()
        s.facts["tokens"] = len(aws.requests_to(TOKEN_PATH))


RUNNERS: dict[str, Callable[[Scenario, SystemdHost], None]] = {
    "aws": run_aws, "gcp": run_gcp, "azure": run_azure, "autostop": run_autostop,
    "faults": run_faults,
}


def play(s: Scenario) -> None:
    try:
        s.host = hosts.start_systemd_host(import_image=s.name == "aws")
        RUNNERS[s.name](s, s.host)
    except BaseException:
        s.error = traceback.format_exc()
    finally:
        if s.host is not None:
            s.journal = s.host.journal(UNIT)
            if TRANSCRIPTS:
                Path(TRANSCRIPTS).mkdir(parents=True, exist_ok=True)
                figures = {k: v for k, v in s.facts.items() if k.endswith("_s")}
                status_lines = [line for key in ("status_during", "status_after", "status")
                                for line in s.facts.get(key, [])]
                (Path(TRANSCRIPTS) / f"{s.name}.txt").write_text(
                    f"# {s.name}: {json.dumps(figures)}\n"
                    + "".join(f"# status: {line}\n" for line in status_lines) + s.journal)
        s.done.set()


@pytest.fixture(scope="module")
def fleet(systemd_real_parts: None) -> Iterator[dict[str, Scenario]]:
    with hosts.side_by_side({name: Scenario(name) for name in RUNNERS}, play,
                            timeout=900) as scenarios:
        yield scenarios


def finished(fleet: dict[str, Scenario], name: str) -> Scenario:
    return hosts.finished(fleet, name, timeout=900)


def block(lines: list[str], stack: str) -> list[str]:
    start = lines.index(next(line for line in lines if line.startswith(f"wb-{stack}  ")))
    return [lines[start]] + [line for line in lines[start + 1:] if line.startswith("  ")]


# --- AWS: the whole cycle -------------------------------------------------------------------------

def test_aws_a_spot_notice_is_logged_once_and_recorded(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "aws")
    assert s.facts["first"][0] == {"wait": "ok", "nvidia-runtime": "changed",
                                   "container": "changed", "autostop": "changed",
                                   "interruptions": "changed"}
    assert s.facts["first"][1].startswith(
        "watching aws metadata for interruption and maintenance notices (every 5 s): wrote "
        f"{interruptions.SCRIPT}; wrote {interruptions.CONFIG}; wrote {interruptions.SERVICE}; "
        f"enabled {UNIT} and started it")
    # A second bootstrap changes nothing and is the one facts command.
    assert set(s.facts["again"][0].values()) == {"ok"} and s.facts["again"][1] == 1
    action = s.facts["action"]
    log = s.facts["log"]
    assert log.count("interruption notice from aws") == 1, log
    assert (f"WARNING: interruption notice from aws: spot instance-action: stop at "
            f"{action['time']}; recording it in {RECORD}") in log
    record = s.facts["record_after_stop"]
    assert record is not None
    assert (record["by"], record["kind"], record["reason"], record["stop_at"]) == (
        "aws", "interruption", "spot instance-action: stop", action["time"])
    # The first poll after the notice records it (the next may have begun meanwhile).
    assert 1 <= s.facts["polls_to_record"] <= 2
    print(f"aws: notice to record {s.facts['notice_to_record_s']:.2f} s")
    # IMDSv2 as documented: a token by PUT with its TTL, then GETs that carry it.
    methods = {(m, p) for m, p, _ in s.facts["requests"]}
    assert methods == {("PUT", TOKEN_PATH), ("GET", INSTANCE_ACTION)}
    for method, _path, headers in s.facts["requests"]:
        if method == "PUT":
            assert headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
        else:
            assert headers["x-aws-ec2-metadata-token"].startswith("AQAEA")
        assert "x-forwarded-for" not in headers


def test_aws_after_the_stop_and_a_start_it_is_back_as_after_an_autostop(
        fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "aws")
    assert s.facts["exit"] == hosts.NSPAWN_EXIT_POWEROFF
    container = s.facts["container"]
    assert container["State"]["Running"] is True
    assert container["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert s.facts["active"] == ["active", "active"]  # the idle check's timer, the watcher
    assert s.facts["failed"] == [] and s.facts["system"] == "running"
    # Nothing to mend: every step ok, one SSH command.
    assert set(s.facts["after"][0].values()) == {"ok"} and s.facts["after"][1] == 1
    # The new boot's watcher found no notice: the record is the interruption's, untouched.
    assert s.facts["record_after_boot"] == s.facts["record_after_stop"]
    assert s.facts["record_after_boot"]["boot_id"] != s.facts["boot_id"]
    print(f"aws: boot to container running {s.facts['boot_to_container_s']:.2f} s")


def test_aws_fab_logs_autostop_shows_the_notice_beside_the_idle_check(
        fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "aws")
    lines = s.facts["fab_logs"].splitlines()
    assert any("workbench-interruption-watch" in line
               and "interruption notice from aws: spot instance-action: stop" in line
               for line in lines), lines


def test_aws_status_says_the_machine_was_interrupted(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "aws")
    at = s.facts["record_after_stop"]["at"][11:16]
    due = s.facts["action"]["time"][11:16]
    during = block(s.facts["status_during"], "aws-spot")
    assert (f"  last stop  interrupted by AWS at {at} UTC (spot instance-action: stop); this "
            f"boot, the machine has not stopped yet (due {due} UTC)") in during, during
    after = block(s.facts["status_after"], "aws-spot")
    assert f"  last stop  interrupted by AWS at {at} UTC (spot instance-action: stop)" in after
    assert any(line.startswith("  container  workbench running since ") for line in after)
    assert any(line.startswith("  autostop   window 60 min") for line in after), after
    print("\n".join(["aws: status after the boot:", *after]))


# --- GCP and Azure: the watcher under systemd -----------------------------------------------------

def test_gcp_a_preemption_is_recorded(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "gcp")
    assert s.facts["line"].startswith("watching gcp metadata for interruption and maintenance "
                                      "notices (every 5 s): wrote ")
    assert (s.facts["record"]["by"], s.facts["record"]["reason"]) == ("gcp", "preempted: TRUE")
    assert s.facts["log"].count("interruption notice from gcp: preempted: TRUE") == 1
    assert s.facts["active"] == "active"
    assert 1 <= s.facts["polls_to_record"] <= 2
    assert {(m, p) for m, p, _ in s.facts["requests"]} == {("GET", PREEMPTED),
                                                          ("GET", MAINTENANCE_EVENT)}
    assert all(h.get("metadata-flavor") == "Google" for _, _, h in s.facts["requests"])
    at = s.facts["record"]["at"][11:16]
    assert (f"  last stop  interrupted by GCP at {at} UTC (preempted: TRUE); this boot, the "
            "machine has not stopped yet") in s.facts["status"]
    print(f"gcp: notice to record {s.facts['notice_to_record_s']:.2f} s")


def test_azure_a_preempt_for_this_vm_is_recorded_a_neighbours_is_not(
        fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "azure")
    assert s.facts["line"].startswith("watching azure metadata for interruption and "
                                      "maintenance notices (every 1 s): wrote ")
    assert s.facts["record_after_neighbour"] is None
    record = s.facts["record"]
    assert (record["by"], record["kind"], record["reason"]) == (
        "azure", "interruption", "scheduled event Preempt")
    assert record["key"] == f"azure:{s.facts['event']['EventId']}"
    assert s.facts["log"].count("interruption notice from azure") == 1
    assert 1 <= s.facts["polls_to_record"] <= 2
    paths = {(m, p, tuple(q.get("api-version", []))) for m, p, q, _ in s.facts["requests"]}
    assert paths == {("GET", "/metadata/instance", ("2021-02-01",)),
                     ("GET", "/metadata/scheduledevents", ("2020-07-01",))}
    assert all(h.get("metadata") == "true" for *_, h in s.facts["requests"])
    assert s.facts["approved"] == []
    at = record["at"][11:16]
    assert any(line.startswith(f"  last stop  interrupted by Azure at {at} UTC (scheduled "
                               "event Preempt); this boot") for line in s.facts["status"])
    print(f"azure: notice to record {s.facts['notice_to_record_s']:.2f} s")


# --- the idle check's own stop --------------------------------------------------------------------

def test_an_idle_stop_is_recorded_as_autostop(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "autostop")
    assert s.facts["exit"] == hosts.NSPAWN_EXIT_POWEROFF
    record = s.facts["record"]
    assert record is not None and (record["by"], record["kind"], record["reason"]) == (
        "autostop", "autostop", "idle 1 min")
    assert record["detail"]["how"] == "poweroff"
    assert "stopping now: poweroff" in s.facts["idle_check"]
    assert "interruption notice" not in s.facts["log"]
    at = record["at"][11:16]
    assert f"  last stop  autostop at {at} UTC (idle 1 min)" in s.facts["status"]


# --- faults under systemd -------------------------------------------------------------------------

def test_faults_are_logged_and_never_fail_the_unit(fleet: dict[str, Scenario]) -> None:
    s = finished(fleet, "faults")
    outage = s.facts["outage_log"]
    assert outage.count("gives no answer: instance-action: HTTP 500") == 1, outage
    assert "aws metadata answers again (after 3 failed poll(s))" in outage
    assert "ActiveState=active" in s.facts["unit_while_full"]
    assert "NRestarts=0" in s.facts["unit_while_full"]
    log = s.facts["log"]
    assert log.count(f"ERROR: cannot write {RECORD} (No space left on device)") == 1, log
    assert f"wrote {RECORD} at last" in log
    assert s.facts["record"]["reason"] == "spot instance-action: terminate"
    # Killed: restarted by systemd, the notice neither logged nor written again.
    assert "ActiveState=active" in s.facts["unit_after_kill"]
    assert "NRestarts=1" in s.facts["unit_after_kill"]
    assert log.count("interruption notice from aws") == 1, log
    assert s.facts["record_bytes_same"]
    assert s.facts["failed"] == []
