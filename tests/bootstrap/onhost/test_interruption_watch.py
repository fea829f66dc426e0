"""The interruption watcher (bootstrap/onhost/workbench_interruption_watch.py) against
stand-ins for the three metadata services, over real HTTP on loopback, each answering as
its cloud documents it (the documents are named in each stand-in's module doc):

- AWS IMDSv2, tests/support/aws_standin.py: awsdocs amazon-ec2-user-guide
  configuring-instance-metadata-service.md, instancedata-data-retrieval.md,
  spot-instance-termination-notices.md;
- GCP metadata server, tests/support/gcp_standin.py: cloud.google.com/compute/docs
  instances/create-use-spot, metadata/getting-live-migration-notice,
  metadata/querying-metadata;
- Azure Scheduled Events, tests/support/azure_standin.py: azure-compute-docs
  articles/virtual-machines/linux/scheduled-events.md.

Every request the watcher makes is asserted (method, path, headers). The hostile cases
come first: a metadata service that is down, answers 500, garbage or 10 MiB; a record
that cannot be written; a writer killed mid-write. The same program under systemd, with
a poweroff and a boot, is in tests/bootstrap/test_interruption_on_systemd_host.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrap.onhost import workbench_interruption_watch as w
from tests.bootstrap.onhost.test_idle_check import PY38
from tests.support.aws_standin import INSTANCE_ACTION, TOKEN_PATH, AwsImdsStandin
from tests.support.azure_standin import AzureStandin
from tests.support.gcp_standin import MAINTENANCE_EVENT, PREEMPTED, GcpMetadataStandin

REPO = Path(__file__).resolve().parents[3]
SEEN = dt.datetime(2026, 11, 23, 12, 3, 7, tzinfo=dt.timezone.utc)
BOOT = "5e1f0c2a-0000-4000-8000-0000000b0071"


def settings(cloud: str, url: str, record: Path, poll_s: float = 5.0) -> w.Settings:
    return w.Settings(cloud=cloud, metadata_url=url, poll_s=poll_s, record=str(record))


def watcher(s: w.Settings, out: io.StringIO) -> w.Watcher:
    return w.Watcher(s, w.source_for(s, BOOT), w.Log(out), now=lambda: SEEN, boot=BOOT)


def notices(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if "interruption notice" in line]


@pytest.fixture
def aws() -> Iterator[AwsImdsStandin]:
    with AwsImdsStandin() as standin:
        yield standin


# --- AWS ----------------------------------------------------------------------------------------

def test_aws_a_spot_notice_is_logged_once_and_recorded(aws: AwsImdsStandin,
                                                       tmp_path: Path) -> None:
    record = tmp_path / "last-stop.json"
    out = io.StringIO()
    watch = watcher(settings("aws", aws.url, record), out)
    assert watch.poll() == 5.0  # nothing planned: 404, next poll in 5 s
    assert not record.exists() and notices(out) == []

    action = aws.interrupt("stop")
    assert watch.poll() == 5.0
    assert notices(out) == [
        f"WARNING: interruption notice from aws: spot instance-action: stop at "
        f"{action['time']}; recording it in {record}"]
    saved = json.loads(record.read_text())
    assert saved == {"version": 1, "by": "aws", "kind": "interruption",
                     "at": "2026-11-23T12:03:07+00:00", "stop_at": action["time"],
                     "reason": "spot instance-action: stop",
                     "key": f"aws:stop:{action['time']}", "detail": action, "boot_id": BOOT}
    assert stat.S_IMODE(record.stat().st_mode) == 0o644
    inode = record.stat().st_ino
    # The notice stays until EC2 acts: read again, neither logged nor written again.
    watch.poll()
    watch.poll()
    assert len(notices(out)) == 1 and record.stat().st_ino == inode

    # IMDSv2 as documented: one session token (PUT, TTL header), reused by every GET.
    puts = aws.requests_to(TOKEN_PATH)
    assert [(r.method, r.headers["x-aws-ec2-metadata-token-ttl-seconds"]) for r in puts] == [
        ("PUT", "21600")]
    gets = aws.requests_to(INSTANCE_ACTION)
    assert len(gets) == 4 and {r.method for r in gets} == {"GET"}
    assert len({r.headers["x-aws-ec2-metadata-token"] for r in gets}) == 1
    assert all("x-forwarded-for" not in r.headers for r in aws.requests)
    assert len(aws.requests) == 5  # nothing else asked


def test_aws_a_refused_token_is_replaced_within_the_poll(aws: AwsImdsStandin,
                                                         tmp_path: Path) -> None:
    out = io.StringIO()
    watch = watcher(settings("aws", aws.url, tmp_path / "r.json"), out)
    watch.poll()
    aws.expire_tokens()  # "The recommended action is to generate a new token"
    aws.interrupt("terminate")
    assert watch.poll() == 5.0
    assert "spot instance-action: terminate" in notices(out)[0]
    assert "WARNING" not in out.getvalue().replace("WARNING: interruption notice", "")
    assert [r.method for r in aws.requests] == ["PUT", "GET", "GET", "PUT", "GET"]
    statuses = [r.headers.get("x-aws-ec2-metadata-token") for r in aws.requests
                if r.method == "GET"]
    assert statuses[0] == statuses[1] != statuses[2]


# --- GCP ----------------------------------------------------------------------------------------

def test_gcp_preemption_and_a_host_maintenance_that_stops_the_vm(tmp_path: Path) -> None:
    record = tmp_path / "last-stop.json"
    out = io.StringIO()
    with GcpMetadataStandin() as gcp:
        watch = watcher(settings("gcp", gcp.url, record), out)
        watch.poll()
        gcp.maintenance_event = "MIGRATE_ON_HOST_MAINTENANCE"  # live migration: no stop
        watch.poll()
        assert not record.exists() and notices(out) == []

        gcp.maintenance_event = "TERMINATE_ON_HOST_MAINTENANCE"  # a VM with GPUs
        watch.poll()
        saved = json.loads(record.read_text())
        assert (saved["by"], saved["kind"], saved["reason"]) == (
            "gcp", "maintenance", "maintenance-event: TERMINATE_ON_HOST_MAINTENANCE")

        gcp.preempt()
        watch.poll()
        saved = json.loads(record.read_text())
        assert (saved["by"], saved["kind"], saved["reason"], saved["stop_at"]) == (
            "gcp", "interruption", "preempted: TRUE", None)
        assert notices(out) == [
            "WARNING: interruption notice from gcp: maintenance-event: "
            f"TERMINATE_ON_HOST_MAINTENANCE; recording it in {record}",
            f"WARNING: interruption notice from gcp: preempted: TRUE; recording it in {record}"]
        # Two GETs a poll, each with the flavor header; nothing else.
        assert [(r.method, r.path) for r in gcp.requests] == [
            ("GET", PREEMPTED), ("GET", MAINTENANCE_EVENT)] * 4
        assert all(r.headers.get("metadata-flavor") == "Google"
                   and "x-forwarded-for" not in r.headers for r in gcp.requests)


def test_gcp_an_answer_outside_the_documented_values_is_no_notice(tmp_path: Path) -> None:
    out = io.StringIO()
    with GcpMetadataStandin(maintenance_event="SOON_MAYBE") as gcp:
        watch = watcher(settings("gcp", gcp.url, tmp_path / "r.json"), out)
        assert watch.poll() == 10.0  # backoff
        assert "unknown value 'SOON_MAYBE'" in out.getvalue()
        assert not (tmp_path / "r.json").exists()


# --- Azure --------------------------------------------------------------------------------------

def test_azure_a_preempt_for_this_vm_is_recorded_a_neighbours_is_not(tmp_path: Path) -> None:
    record = tmp_path / "last-stop.json"
    out = io.StringIO()
    with AzureStandin() as azure:
        watch = watcher(settings("azure", azure.url, record, poll_s=1.0), out)
        assert watch.poll() == 1.0
        # An availability set hears its neighbours' events: not ours, not recorded.
        other = azure.schedule("Preempt", resources=["wb-other-vm"])
        azure.schedule("Freeze", description="Host server is undergoing maintenance.")
        watch.poll()
        watch.poll()
        assert not record.exists() and notices(out) == []
        assert out.getvalue().count(f"scheduled event Preempt {other['EventId']} is for "
                                    "['wb-other-vm'], not this VM (wb-azure-vm): ignored") == 1

        ours = azure.schedule("Preempt")
        watch.poll()
        saved = json.loads(record.read_text())
        not_before = dt.datetime.strptime(ours["NotBefore"], "%a, %d %b %Y %H:%M:%S GMT")
        assert saved["by"] == "azure" and saved["kind"] == "interruption"
        assert saved["reason"] == "scheduled event Preempt"
        assert saved["stop_at"] == not_before.replace(tzinfo=dt.timezone.utc).isoformat()
        assert saved["key"] == f"azure:{ours['EventId']}"
        assert saved["detail"]["EventStatus"] == "Scheduled"
        assert len(notices(out)) == 1

        # The VM's name is read once; every request carries Metadata: true; no approval
        # (POST) is ever sent: the watcher records, it does not hurry Azure.
        paths = [(r.method, r.path, r.query.get("api-version")) for r in azure.requests]
        assert paths[0] == ("GET", "/metadata/instance", ["2021-02-01"])
        assert paths[1:] == [("GET", "/metadata/scheduledevents", ["2020-07-01"])] * 4
        assert all(r.headers.get("metadata") == "true" for r in azure.requests)
        assert azure.approved == []


def test_azure_a_redeploy_or_reboot_is_maintenance_a_terminate_a_termination(
        tmp_path: Path) -> None:
    record = tmp_path / "r.json"
    out = io.StringIO()
    with AzureStandin() as azure:
        watch = watcher(settings("azure", azure.url, record, poll_s=1.0), out)
        azure.schedule("Redeploy", notice_s=600,
                       description="Virtual machine has encountered a failure.")
        watch.poll()
        saved = json.loads(record.read_text())
        assert (saved["kind"], saved["reason"]) == (
            "maintenance", "scheduled event Redeploy: Virtual machine has encountered a "
                           "failure.")
        azure.schedule("Terminate", notice_s=300)
        watch.poll()
        assert json.loads(record.read_text())["kind"] == "termination"


# --- hostile: the metadata service fails ---------------------------------------------------------

@pytest.mark.parametrize(("fault", "said"), [
    ("down", "cannot reach"),
    ("500", "instance-action: HTTP 500"),
    ("garbage", "not the documented JSON"),
    ("huge", "answered more than 64 KiB"),
])
def test_a_failing_metadata_service_is_logged_once_and_asked_with_backoff(
        aws: AwsImdsStandin, tmp_path: Path, fault: str, said: str) -> None:
    record = tmp_path / "r.json"
    out = io.StringIO()
    watch = watcher(settings("aws", aws.url, record), out)
    watch.poll()  # the token while all is well (a 500 would fail the PUT first)
    aws.interrupt()
    if fault == "down":
        aws.down()
    else:
        aws.fault = fault
    asked_before = len(aws.requests)
    delays = [watch.poll() for _ in range(7)]
    # Never a busy loop: doubling from the interval, then at most a minute apart.
    assert delays == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0]
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, out.getvalue()
    assert warnings[0].startswith(f"WARNING: aws metadata at {aws.url} gives no answer: ")
    assert said in warnings[0]
    assert warnings[0].endswith("asking again with backoff (up to 60 s), logged once until "
                                "it answers")
    assert not record.exists()
    if fault != "down":  # one request a poll, no retry storm
        assert len(aws.requests) - asked_before == 7

    aws.fault = None
    aws.up()
    assert watch.poll() == 5.0
    assert "aws metadata answers again (after 7 failed poll(s))" in out.getvalue()
    assert json.loads(record.read_text())["reason"] == "spot instance-action: stop"


def test_the_watch_loop_sleeps_what_each_poll_says(tmp_path: Path) -> None:
    with AwsImdsStandin() as aws:
        aws.down()
        slept: list[float] = []
        out = io.StringIO()
        w.watch(settings("aws", aws.url, tmp_path / "r.json"), w.Log(out), sleep=slept.append,
                polls=4)
    assert slept == [10.0, 20.0, 40.0]
    assert out.getvalue().startswith(
        f"watching aws metadata at {aws.url} every 5 s for interruption and maintenance "
        f"notices; record: {tmp_path / 'r.json'}\n")


# --- hostile: the record cannot be written -------------------------------------------------------

def test_a_record_that_cannot_be_written_is_logged_and_written_once_it_can(
        aws: AwsImdsStandin, tmp_path: Path) -> None:
    blocker = tmp_path / "lib"
    blocker.write_text("a file where the record's directory should be\n")
    record = blocker / "gpu-workbench" / "last-stop.json"
    out = io.StringIO()
    watch = watcher(settings("aws", aws.url, record), out)
    aws.interrupt()
    delays = [watch.poll() for _ in range(3)]
    assert delays == [5.0, 5.0, 5.0]  # the watch goes on at its pace
    errors = [line for line in out.getvalue().splitlines() if line.startswith("ERROR")]
    assert errors == [f"ERROR: cannot write {record} (Not a directory); the notice is in this "
                      "journal; trying again at each poll"]
    assert len(notices(out)) == 1

    blocker.unlink()
    watch.poll()
    assert f"wrote {record} at last" in out.getvalue()
    assert json.loads(record.read_text())["by"] == "aws"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "disk"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "wb-full", str(point)],
                   check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "--lazy", str(point)], check=False)


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_a_full_or_read_only_disk_keeps_the_old_record(aws: AwsImdsStandin, small_disk: Path,
                                                       how: str) -> None:
    record = small_disk / "last-stop.json"
    old = {"by": "autostop", "kind": "autostop", "at": "2026-11-22T08:00:00+00:00",
           "reason": "idle 60 min"}
    w.write_record(str(record), old)
    if how == "full":
        with open(small_disk / "filler", "wb") as fh, pytest.raises(OSError):
            fh.write(b"\0" * 128 * 1024)
            fh.flush()
            os.fsync(fh.fileno())
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    out = io.StringIO()
    watch = watcher(settings("aws", aws.url, record), out)
    aws.interrupt()
    assert watch.poll() == 5.0
    reason = "No space left on device" if how == "full" else "Read-only file system"
    assert f"ERROR: cannot write {record} ({reason})" in out.getvalue()
    assert json.loads(record.read_text()) == old  # byte for byte the last good record
    assert [p.name for p in small_disk.iterdir() if p.name.startswith(".")] == []


def test_a_writer_killed_mid_write_leaves_a_valid_record(tmp_path: Path) -> None:
    record = tmp_path / "last-stop.json"
    old = {"by": "autostop", "at": "2026-11-22T08:00:00+00:00", "reason": "idle 60 min"}
    w.write_record(str(record), old)
    # A real SIGKILL, at the worst moment: the new record is complete in its temp file,
    # the rename has not happened.
    code = ("import os, signal\n"
            "from bootstrap.onhost import workbench_interruption_watch as w\n"
            f"w.write_record({str(record)!r}, {{'by': 'aws', 'reason': 'new'}},\n"
            "               after_temp=lambda: os.kill(os.getpid(), signal.SIGKILL))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(record.read_text()) == old
    left = [p.name for p in tmp_path.iterdir() if p.name != "last-stop.json"]
    assert len(left) == 1 and left[0].startswith(".last-stop.json.")

    # The next start of the watcher removes what the killed writer left, nothing else.
    out = io.StringIO()
    with AwsImdsStandin() as aws:
        w.watch(settings("aws", aws.url, record), w.Log(out), polls=1)
    assert f"removed {left[0]}, left by a writer that was stopped mid-write" in out.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-stop.json"]
    assert json.loads(record.read_text()) == old


def test_a_restarted_watcher_does_not_log_or_write_a_recorded_notice_again(
        aws: AwsImdsStandin, tmp_path: Path) -> None:
    record = tmp_path / "r.json"
    aws.interrupt()
    first = io.StringIO()
    watcher(settings("aws", aws.url, record), first).poll()
    written = record.read_bytes()
    again = io.StringIO()  # systemd's Restart=always: a new process, the same notice
    watcher(settings("aws", aws.url, record), again).poll()
    assert len(notices(first)) == 1 and notices(again) == []
    assert record.read_bytes() == written


# --- config and the command line -------------------------------------------------------------

def test_the_config_as_the_bootstrap_writes_it(tmp_path: Path) -> None:
    config = tmp_path / "c.conf"
    config.write_text("[watch]\ncloud = azure\nmetadata_url = http://10.0.0.1:8080/\n")
    s = w.read_settings(config)
    assert (s.cloud, s.metadata_url, s.poll_s, s.record) == (
        "azure", "http://10.0.0.1:8080", 1.0, "/var/lib/gpu-workbench/last-stop.json")
    config.write_text("[watch]\ncloud = gcp\npoll_seconds = 0.001\n")
    assert w.read_settings(config).poll_s == 1.0  # never a busy loop
    assert w.read_settings(config).metadata_url == "http://metadata.google.internal"
    config.write_text("[watch]\ncloud = oracle\n")
    with pytest.raises(ValueError, match="cloud must be aws, gcp or azure, not 'oracle'"):
        w.read_settings(config)
    with pytest.raises(ValueError, match="no \\[watch\\] section"):
        w.read_settings(tmp_path / "missing.conf")


def run_once(python: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, str(Path(w.__file__)), "--config", str(config), "--once"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})


def test_once_from_the_command_line(aws: AwsImdsStandin, tmp_path: Path) -> None:
    config = tmp_path / "c.conf"
    config.write_text(f"[watch]\ncloud = aws\nmetadata_url = {aws.url}\n"
                      f"record = {tmp_path / 'r.json'}\n")
    aws.interrupt("hibernate")
    proc = run_once(sys.executable, config)
    assert proc.returncode == 0, proc.stderr
    assert "interruption notice from aws: spot instance-action: hibernate" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["boot_id"] == w.boot_id()
    config.write_text("[watch]\n")
    bad = run_once(sys.executable, config)
    assert bad.returncode == 2 and "cloud must be aws, gcp or azure" in bad.stdout


@pytest.mark.skipif(not PY38, reason="no python3.8 here")
def test_runs_on_python_3_8(tmp_path: Path) -> None:
    """The VM's python3 may be 3.8: a poll of each cloud's stand-in, as the service does."""
    stand_ins: list[Any] = [AwsImdsStandin(), GcpMetadataStandin(), AzureStandin()]
    for cloud, standin in zip(("aws", "gcp", "azure"), stand_ins, strict=True):
        with standin:
            if cloud == "aws":
                standin.interrupt()
            elif cloud == "gcp":
                standin.preempt()
            else:
                standin.schedule("Preempt")
            config = tmp_path / f"{cloud}.conf"
            record = tmp_path / f"{cloud}.json"
            config.write_text(f"[watch]\ncloud = {cloud}\nmetadata_url = {standin.url}\n"
                              f"record = {record}\n")
            proc = run_once(PY38, config)
            assert proc.returncode == 0, proc.stderr
            assert f"interruption notice from {cloud}: " in proc.stdout
            assert json.loads(record.read_text())["by"] == cloud
