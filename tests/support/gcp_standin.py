"""Stand-in for the Compute Engine metadata server on a local port: the two keys the
interruption watcher reads, answered as Google documents them, every request recorded.
Sources (read 2026-11-23):

- cloud.google.com/compute/docs/metadata/querying-metadata: every request carries
  `Metadata-Flavor: Google`; the server denies one without it, or with
  `X-Forwarded-For`; answers carry `Metadata-Flavor: Google`.
- cloud.google.com/compute/docs/troubleshooting/troubleshoot-metadata-server ("server
  codes"): 403 Forbidden for a request that "fails security checks", 404 for a path
  that does not exist.
- cloud.google.com/compute/docs/instances/create-use-spot ("Detect preemption"):
  `GET /computeMetadata/v1/instance/preempted` answers `TRUE` once Compute Engine
  preempts the Spot VM (30 s before the stop), `FALSE` before.
- cloud.google.com/compute/docs/metadata/getting-live-migration-notice:
  `GET /computeMetadata/v1/instance/maintenance-event` answers `NONE`, and 60 s
  before a maintenance event `MIGRATE_ON_HOST_MAINTENANCE` or, for a VM that cannot
  live-migrate (GPUs attached), `TERMINATE_ON_HOST_MAINTENANCE` (the values as
  tensorflow/python/distribute/failure_handling/gce_util.py reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.http_standin import HttpStandin, Recorded, Reply

PREEMPTED = "/computeMetadata/v1/instance/preempted"
MAINTENANCE_EVENT = "/computeMetadata/v1/instance/maintenance-event"
FLAVOR = {"Metadata-Flavor": "Google", "Content-Type": "application/text"}


@dataclass
class GcpMetadataStandin(HttpStandin):
    preempted: bool = False
    maintenance_event: str = "NONE"

    def preempt(self) -> None:
        with self.lock:
            self.preempted = True

    def answer(self, request: Recorded) -> Reply:
        if (request.headers.get("metadata-flavor") != "Google"
                or "x-forwarded-for" in request.headers):
            return Reply(403, b"Missing Metadata-Flavor:Google header.", FLAVOR)
        if request.method != "GET":
            return Reply(405, b"", FLAVOR)
        if request.path == PREEMPTED:
            return Reply(200, b"TRUE" if self.preempted else b"FALSE", FLAVOR)
        if request.path == MAINTENANCE_EVENT:
            return Reply(200, self.maintenance_event.encode(), FLAVOR)
        return Reply(404, b"", FLAVOR)
