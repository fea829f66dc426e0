#!/usr/bin/env python3
"""Record who stops this workstation when it is the cloud: spot interruptions and host
maintenance, read from the cloud's own notice in its metadata service.

Installed by the bootstrap as /usr/local/lib/gpu-workbench/workbench_interruption_watch.py
and run by workbench-interruption-watch.service (Restart=always). Python 3.8+ standard
library only: it runs on the host's python3, outside any virtual environment.

Every few seconds it asks the metadata service of the cloud in its config, as the cloud
documents it (docs/autostop.md has the sources and dates):

  aws    IMDSv2: PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds), then
         GET /latest/meta-data/spot/instance-action (X-aws-ec2-metadata-token):
         404 while nothing is planned, {"action": "stop"|"terminate"|"hibernate",
         "time": ...} two minutes before EC2 acts. AWS recommends a check every 5 s.
  gcp    GET /computeMetadata/v1/instance/preempted and .../instance/maintenance-event
         (Metadata-Flavor: Google): "TRUE" once a Spot VM is preempted (30 s before it
         stops); TERMINATE_ON_HOST_MAINTENANCE before a host maintenance stops a VM with
         GPUs (they cannot live-migrate).
  azure  Scheduled Events: GET /metadata/scheduledevents?api-version=2020-07-01
         (Metadata: true): Preempt (a Spot eviction, at least 30 s ahead), Terminate,
         Redeploy and Reboot events whose Resources name this VM (an availability set
         hears its neighbours' events too). Azure recommends polling once a second.

On a notice it logs one journal line ("interruption notice from aws: ...") and writes
/var/lib/gpu-workbench/last-stop.json (mode 644, replaced atomically), which the idle
check also writes when it stops the machine itself: scripts/status reads it to tell an
interruption from an idle stop. A metadata service that does not answer (another cloud,
a test host, an outage) or answers nonsense is logged once and asked again with backoff,
up to a minute apart; nothing here ends the service.

    workbench_interruption_watch.py [--config FILE]     watch (what the service runs)
    workbench_interruption_watch.py --once              one poll, print what it saw
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

CONFIG_PATH = Path("/etc/gpu-workbench/interruption-watch.conf")
RECORD_PATH = Path("/var/lib/gpu-workbench/last-stop.json")
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
DEFAULT_URLS = {"aws": "http://169.254.169.254", "gcp": "http://metadata.google.internal",
                "azure": "http://169.254.169.254"}
# AWS: "We recommend that you check for these interruption notices every 5 seconds";
# Azure: "we recommend that you poll the service once per second"; GCP gives 30 s.
DEFAULT_POLL_S = {"aws": 5.0, "gcp": 5.0, "azure": 1.0}
MAX_BACKOFF_S = 60.0  # a spot notice comes 30 s to 2 min ahead: never wait much longer
MAX_BODY = 64 * 1024  # every documented answer is a few hundred bytes
REQUEST_TIMEOUT_S = 5.0
# Azure: "expect a delayed response in your first call of up to two minutes" (the first
# call enables Scheduled Events for the VM).
AZURE_FIRST_TIMEOUT_S = 130.0
RECORD_VERSION = 1
UTC = dt.timezone.utc


def iso(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat()


def boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# --- settings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    cloud: str
    metadata_url: str
    poll_s: float
    record: str = str(RECORD_PATH)


def read_settings(path: Path) -> Settings:
    parser = configparser.ConfigParser()
    try:
        found = parser.read(path)
    except configparser.Error as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not found or "watch" not in parser:
        raise ValueError(f"no [watch] section in {path}")
    s = parser["watch"]
    cloud = s.get("cloud", "").strip()
    if cloud not in DEFAULT_URLS:
        raise ValueError(f"{path}: cloud must be aws, gcp or azure, not {cloud!r}")
    try:
        poll = s.getfloat("poll_seconds", DEFAULT_POLL_S[cloud])
    except ValueError as exc:
        raise ValueError(f"{path}: poll_seconds: {exc}") from exc
    return Settings(cloud=cloud,
                    metadata_url=s.get("metadata_url", DEFAULT_URLS[cloud]).rstrip("/"),
                    poll_s=min(60.0, max(1.0, poll)),  # never a busy loop, never deaf
                    record=s.get("record", str(RECORD_PATH)))


# --- talking to a metadata service ------------------------------------------------------------

class MetadataError(Exception):
    """The metadata service did not answer, or not as documented: try again later."""


@dataclass
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace").strip()


# Metadata services are link-local: never through a proxy (HTTP_PROXY in the environment).
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(method: str, url: str, headers: dict[str, str], timeout: float) -> Answer:
    data = b"" if method in ("PUT", "POST") else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with NO_PROXY.open(req, timeout=timeout) as response:
            return Answer(response.status, _bounded(response, url))
    except urllib.error.HTTPError as exc:
        try:
            body = _bounded(exc, url)
        except MetadataError:
            body = b""
        return Answer(exc.code, body)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetadataError(f"cannot reach {url.split('?')[0]} ({reason})") from exc


def _bounded(response: Any, url: str) -> bytes:
    body = response.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise MetadataError(f"{url.split('?')[0]} answered more than {MAX_BODY // 1024} KiB "
                            "(a notice is a few hundred bytes): not the metadata service?")
    return bytes(body)


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Notice:
    """The cloud's word that it will stop (or restart) this machine."""

    cloud: str
    kind: str  # "interruption", "maintenance" or "termination"
    key: str  # the same notice read again has the same key
    reason: str  # one line, in the cloud's own terms: "spot instance-action: stop"
    stop_at: str | None = None  # when the cloud said it acts (ISO 8601), if it said
    detail: dict[str, str] = field(default_factory=dict)  # what it answered, bounded


class AwsSpot:
    """IMDSv2 (awsdocs amazon-ec2-user-guide configuring-instance-metadata-service.md,
    spot-instance-termination-notices.md): a session token, then instance-action."""

    TOKEN_TTL_S = 21600  # the documented maximum; renewed well before it ends
    ACTIONS = ("stop", "terminate", "hibernate")

    def __init__(self, base: str, timeout: float = REQUEST_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.timeout = timeout
        self.clock = clock
        self._token: str | None = None
        self._token_at = 0.0

    def _token_now(self) -> str:
        if self._token is None or self.clock() - self._token_at > self.TOKEN_TTL_S - 600:
            answer = request("PUT", f"{self.base}/latest/api/token",
                             {"X-aws-ec2-metadata-token-ttl-seconds": str(self.TOKEN_TTL_S)},
                             self.timeout)
            if answer.status != 200 or not answer.text or len(answer.text) > 4096:
                raise MetadataError(f"IMDSv2 token: HTTP {answer.status} "
                                    f"{_short(answer.text, 80)!r}")
            self._token, self._token_at = answer.text, self.clock()
        return self._token

    def poll(self) -> list[Notice]:
        url = f"{self.base}/latest/meta-data/spot/instance-action"
        answer = request("GET", url, {"X-aws-ec2-metadata-token": self._token_now()},
                         self.timeout)
        if answer.status == 401:  # "generate a new token": the session ended early
            self._token = None
            answer = request("GET", url, {"X-aws-ec2-metadata-token": self._token_now()},
                             self.timeout)
        if answer.status == 401:
            self._token = None
            raise MetadataError("instance-action: HTTP 401 with a new token")
        if answer.status == 404:
            return []  # "not present": EC2 is not preparing to stop this instance
        if answer.status != 200:
            raise MetadataError(f"instance-action: HTTP {answer.status}")
        try:
            data = json.loads(answer.text)
            action, when = str(data["action"]), str(data["time"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataError(f"instance-action: not the documented JSON "
                                f"({_short(answer.text, 80)!r})") from exc
        if action not in self.ACTIONS:
            raise MetadataError(f"instance-action: unknown action {_short(action, 40)!r}")
        return [Notice("aws", "interruption", f"aws:{action}:{when}",
                       f"spot instance-action: {action}", _short(when, 40),
                       {"action": action, "time": _short(when, 40)})]


class GcpPreemption:
    """The metadata server (cloud.google.com/compute/docs/instances/create-use-spot and
    .../metadata/getting-live-migration-notice): preempted, then maintenance-event."""

    HEADERS: ClassVar[dict[str, str]] = {"Metadata-Flavor": "Google"}

    def __init__(self, base: str, boot: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.base = base
        self.boot = boot  # a preemption is a state of this run of the VM, not an event id
        self.timeout = timeout

    def _get(self, key: str) -> Answer:
        answer = request("GET", f"{self.base}/computeMetadata/v1/instance/{key}",
                         self.HEADERS, self.timeout)
        if answer.status not in (200, 404):
            raise MetadataError(f"instance/{key}: HTTP {answer.status}")
        return answer

    def poll(self) -> list[Notice]:
        notices = []
        preempted = self._get("preempted")
        if preempted.status == 200 and preempted.text not in ("TRUE", "FALSE"):
            raise MetadataError(f"instance/preempted: not TRUE or FALSE "
                                f"({_short(preempted.text, 40)!r})")
        if preempted.status == 200 and preempted.text == "TRUE":
            notices.append(Notice("gcp", "interruption", f"gcp:preempted:{self.boot}",
                                  "preempted: TRUE", None, {"preempted": "TRUE"}))
        # Read every poll: Compute Engine gives its 60 s warning only to a VM that has
        # read maintenance-event since the last event.
        event = self._get("maintenance-event")
        value = event.text if event.status == 200 else "NONE"
        known = ("NONE", "MIGRATE_ON_HOST_MAINTENANCE", "TERMINATE_ON_HOST_MAINTENANCE")
        if value not in known:
            raise MetadataError(f"instance/maintenance-event: unknown value "
                                f"{_short(value, 60)!r}")
        if value == "TERMINATE_ON_HOST_MAINTENANCE":  # a migration does not stop the VM
            notices.append(Notice("gcp", "maintenance", f"gcp:maintenance:{self.boot}",
                                  f"maintenance-event: {value}", None,
                                  {"maintenance-event": value}))
        return notices


class AzureScheduledEvents:
    """Scheduled Events (azure-compute-docs articles/virtual-machines/linux/
    scheduled-events.md): the events whose Resources name this VM (compute.name from
    instance metadata, azure-compute-docs instance-metadata-service.md)."""

    API = "2020-07-01"
    INSTANCE_API = "2021-02-01"
    HEADERS: ClassVar[dict[str, str]] = {"Metadata": "true"}
    # Freeze pauses the VM for a few seconds: not a stop.
    KINDS: ClassVar[dict[str, str]] = {"Preempt": "interruption", "Terminate": "termination",
                                       "Redeploy": "maintenance", "Reboot": "maintenance"}

    def __init__(self, base: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.base = base
        self.timeout = timeout
        self.enabled = False  # the first answer can take two minutes
        self.name: str | None = None
        self.ignored: set[str] = set()  # event ids for other VMs, noted once
        self.notes: list[str] = []  # for the journal, taken by the watcher

    def _json(self, path: str, api: str, timeout: float) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode({'api-version': api})}"
        answer = request("GET", url, self.HEADERS, timeout)
        if answer.status != 200:
            raise MetadataError(f"{path}: HTTP {answer.status}")
        try:
            return json.loads(answer.text)
        except ValueError as exc:
            raise MetadataError(f"{path}: not JSON ({_short(answer.text, 80)!r})") from exc

    def poll(self) -> list[Notice]:
        if self.name is None:
            compute = self._json("/metadata/instance", self.INSTANCE_API,
                                 self.timeout).get("compute")
            name = compute.get("name") if isinstance(compute, dict) else None
            if not isinstance(name, str) or not name:
                raise MetadataError("/metadata/instance: no compute.name")
            self.name = name
        body = self._json("/metadata/scheduledevents", self.API,
                          self.timeout if self.enabled else AZURE_FIRST_TIMEOUT_S)
        events = body.get("Events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise MetadataError("/metadata/scheduledevents: no Events list")
        self.enabled = True
        notices = []
        for event in events:
            if not isinstance(event, dict):
                continue
            kind = self.KINDS.get(str(event.get("EventType")))
            event_id = _short(event.get("EventId", ""), 80)
            if kind is None or not event_id:
                continue
            resources = event.get("Resources")
            if not isinstance(resources, list) or self.name not in resources:
                if event_id not in self.ignored:
                    self.ignored.add(event_id)
                    self.notes.append(f"scheduled event {_short(event.get('EventType'), 20)} "
                                      f"{event_id} is for {_short(resources, 120)}, not this "
                                      f"VM ({self.name}): ignored")
                continue
            what = str(event["EventType"])
            description = _short(event.get("Description") or "", 120)
            detail = {k: _short(event.get(k, ""), 200) for k in (
                "EventId", "EventType", "EventStatus", "NotBefore", "EventSource",
                "Description")}
            notices.append(Notice("azure", kind, f"azure:{event_id}",
                                  f"scheduled event {what}"
                                  + (f": {description}" if description else ""),
                                  _not_before(event.get("NotBefore")), detail))
        return notices


def _not_before(value: Any) -> str | None:
    """NotBefore ("Mon, 19 Sep 2016 18:29:47 GMT"; blank once started) as ISO 8601."""
    try:
        parsed = dt.datetime.strptime(str(value).strip(), "%a, %d %b %Y %H:%M:%S GMT")
    except ValueError:
        return None
    return iso(parsed.replace(tzinfo=UTC))


def source_for(settings: Settings, boot: str) -> Any:
    if settings.cloud == "aws":
        return AwsSpot(settings.metadata_url)
    if settings.cloud == "gcp":
        return GcpPreemption(settings.metadata_url, boot)
    return AzureScheduledEvents(settings.metadata_url)


# --- the record -------------------------------------------------------------------------------

def record_of(notice: Notice, seen: dt.datetime, boot: str) -> dict[str, Any]:
    return {"version": RECORD_VERSION, "by": notice.cloud, "kind": notice.kind,
            "at": iso(seen), "stop_at": notice.stop_at, "reason": notice.reason,
            "key": notice.key, "detail": notice.detail, "boot_id": boot}


def read_record(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read(MAX_BODY).decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path: str, record: dict[str, Any],
                 after_temp: Callable[[], None] | None = None) -> None:
    """Replace `path` with `record`: a temp file beside it, written and fsynced, then
    renamed over it. A reader, or a process killed at any point, sees the old record
    or the new one, never a part (after_temp: tests stop here, between the two)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: status reads it as the login user
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if after_temp is not None:
            after_temp()
        os.replace(str(tmp), str(target))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(str(tmp))
        raise
    try:  # the rename itself survives a power cut only once the directory is on disk
        dir_fd = os.open(str(target.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def remove_stale_temps(path: str) -> list[str]:
    """Temp files a killed writer left beside the record (never the record itself)."""
    target = Path(path)
    removed = []
    try:
        entries = list(target.parent.glob(f".{target.name}.*"))
    except OSError:
        return []
    for entry in entries:
        try:
            entry.unlink()
            removed.append(entry.name)
        except OSError:
            pass
    return removed


# --- the journal ------------------------------------------------------------------------------

class Log:
    """Lines for the journal, with the priority prefix systemd reads on stdout."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))
        self.lines: list[str] = []

    def _emit(self, priority: int, text: str) -> None:
        self.lines.append(text)
        prefix = f"<{priority}>" if self.journal else ""
        self.out.write(prefix + text + "\n")
        self.out.flush()

    def info(self, text: str) -> None:
        self._emit(6, text)

    def warning(self, text: str) -> None:
        self._emit(4, "WARNING: " + text)

    def error(self, text: str) -> None:
        self._emit(3, "ERROR: " + text)


# --- the watch --------------------------------------------------------------------------------

class Watcher:
    """One poll at a time: ask, log a new notice once, keep the record; say how long to
    wait before the next poll (the interval, or a backoff while the service fails)."""

    def __init__(self, settings: Settings, source: Any, log: Log,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
                 boot: str = "") -> None:
        self.settings = settings
        self.source = source
        self.log = log
        self.now = now
        self.boot = boot
        self.failures = 0  # polls in a row that got no usable answer
        self.seen: set[str] = set()  # notice keys logged in this process
        self.unwritten: dict[str, Any] | None = None  # a record still to be written
        self.write_failed = False
        existing = read_record(settings.record)
        if existing.get("key"):  # a restart of this service: that notice is logged already
            self.seen.add(str(existing["key"]))

    def poll(self) -> float:
        try:
            notices = self.source.poll()
        except MetadataError as exc:
            return self._failed(str(exc))
        except Exception as exc:  # a bug must not end the watch: say so, go on
            return self._failed(f"{exc.__class__.__name__}: {exc}")
        for note in getattr(self.source, "notes", [])[:]:
            self.log.info(note)
        if hasattr(self.source, "notes"):
            self.source.notes.clear()
        if self.failures:
            self.log.info(f"{self.settings.cloud} metadata answers again (after "
                          f"{self.failures} failed poll(s))")
            self.failures = 0
        for notice in notices:
            if notice.key in self.seen:
                continue
            self.seen.add(notice.key)
            self.unwritten = record_of(notice, self.now(), self.boot)
            when = f" at {notice.stop_at}" if notice.stop_at else ""
            self.log.warning(f"interruption notice from {notice.cloud}: {notice.reason}"
                             f"{when}; recording it in {self.settings.record}")
        self._write()
        return self.settings.poll_s

    def _failed(self, why: str) -> float:
        self.failures += 1
        if self.failures == 1:
            self.log.warning(f"{self.settings.cloud} metadata at {self.settings.metadata_url} "
                             f"gives no answer: {why}; asking again with backoff (up to "
                             f"{MAX_BACKOFF_S:g} s), logged once until it answers")
        self._write()  # a notice seen before the outage is still owed to the record
        return min(MAX_BACKOFF_S, self.settings.poll_s * 2 ** min(self.failures, 10))

    def _write(self) -> None:
        if self.unwritten is None:
            return
        try:
            write_record(self.settings.record, self.unwritten)
        except OSError as exc:
            if not self.write_failed:
                self.log.error(f"cannot write {self.settings.record} ({exc.strerror or exc}); "
                               "the notice is in this journal; trying again at each poll")
            self.write_failed = True
            return
        if self.write_failed:
            self.log.info(f"wrote {self.settings.record} at last")
        self.write_failed = False
        self.unwritten = None


def watch(settings: Settings, log: Log, sleep: Callable[[float], None] = time.sleep,
          polls: int | None = None) -> None:
    boot = boot_id()
    for name in remove_stale_temps(settings.record):
        log.info(f"removed {name}, left by a writer that was stopped mid-write")
    watcher = Watcher(settings, source_for(settings, boot), log, boot=boot)
    log.info(f"watching {settings.cloud} metadata at {settings.metadata_url} every "
             f"{settings.poll_s:g} s for interruption and maintenance notices; record: "
             f"{settings.record}")
    done = 0
    while polls is None or done < polls:
        delay = watcher.poll()
        done += 1
        if polls is None or done < polls:
            sleep(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench-interruption-watch",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_PATH)
    parser.add_argument("--once", action="store_true", help="one poll, then exit")
    args = parser.parse_args(argv)
    log = Log()
    # systemd stops the service with SIGTERM (shutdown, restart): a clean exit, not a kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    complained = False
    while True:
        try:
            settings = read_settings(args.config)
            break
        except ValueError as exc:
            if args.once:
                log.error(str(exc))
                return 2
            # Exiting would only have systemd start it again: wait for a usable config
            # (the bootstrap rewrites it and restarts the service) without spinning.
            if not complained:
                log.error(f"{exc}; reading it again every minute (rerun the bootstrap)")
                complained = True
            time.sleep(60)
    watch(settings, log, polls=1 if args.once else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
