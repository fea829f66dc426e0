"""Stand-in for the two Azure endpoints the idle check talks to, on a local HTTP port.

There is no Azure here; this answers as Azure documents it, and records every
request so a test can assert method, path, query and headers. Sources (read
2026-11-23):

- Managed identity token, IMDS: `GET /metadata/identity/oauth2/token?api-version=
  2018-02-01&resource=https://management.azure.com/` with `Metadata: true`;
  200 {access_token, refresh_token "", expires_in, expires_on, not_before,
  resource, token_type "Bearer"} (strings); 400 bad_request_102 "Required metadata
  header not specified" without the header; 404/410/429/5xx are to be retried.
  MicrosoftDocs/entra-docs docs/identity/managed-identities-azure-resources/
  how-to-use-vm-token.md (ms.date 2025-02-27).
- A VM without identity: 400 {"error": "invalid_request", "error_description":
  "Identity not found"}: observed, MicrosoftDocs/azure-docs#21322.
- Instance metadata, IMDS: `GET /metadata/instance?api-version=2021-02-01` with
  `Metadata: true`: {"compute": {"subscriptionId", "resourceGroupName", "name",
  "resourceId", ...}, "network": {...}}; azure-compute-docs
  articles/virtual-machines/instance-metadata-service.md.
- Deallocate, ARM: `POST /subscriptions/{sub}/resourceGroups/{rg}/providers/
  Microsoft.Compute/virtualMachines/{vm}/deallocate?api-version=2024-11-01`;
  200, or 202 with a Location header (azure-rest-api-specs specification/compute/
  resource-manager/Microsoft.Compute/ComputeRP/stable/2024-11-01/virtualMachine.json,
  example VirtualMachine_Deallocate_MaximumSet_Gen.json); without the action:
  403 {"error": {"code": "AuthorizationFailed", "message": "The client '...' with
  object id '...' does not have authorization to perform action
  'Microsoft.Compute/virtualMachines/deallocate/action' over scope '...' or the
  scope is invalid. ..."}}; errors as {"error": {"code", "message"}} (ARM's
  common ErrorResponse).
- Permissions - List For Resource, ARM: `GET {vm}/providers/Microsoft.Authorization/
  permissions?api-version=2022-04-01`: 200 {"value": [{"actions", "notActions",
  "dataActions", "notDataActions"}], "nextLink"?} (authorization-RoleDefinitionsCalls
  .json, stable/2022-04-01, Permissions_ListForResource). What it answers for an
  identity with no role on the VM is not documented; here: 200 with an empty list.

- Scheduled Events, IMDS: `GET /metadata/scheduledevents?api-version=2020-07-01` with
  `Metadata: true` ("Bad Request" without it): {"DocumentIncarnation": n, "Events":
  [{"EventId", "EventType" (Reboot, Redeploy, Freeze, Preempt, Terminate),
  "ResourceType": "VirtualMachine", "Resources": [names], "EventStatus" (Scheduled,
  Started), "NotBefore" ("Mon, 19 Sep 2016 18:29:47 GMT"), "Description",
  "EventSource" (Platform, User), "DurationInSeconds"}]}; the incarnation grows when the
  events change; a Preempt comes at least 30 s ahead; an availability set's VMs all get
  each other's events ("check the Resources field"). POST with {"StartRequests":
  [{"EventId"}]} approves one: 200. azure-compute-docs articles/virtual-machines/linux/
  scheduled-events.md (ms.date 2023-01-25; read 2026-11-23).

The Virtual Machine Contributor actions below are a subset of the built-in role
9980e02c-c2be-4d73-94e8-173b1dc7cf3c as Azure lists it (docs: built-in roles).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.http_standin import Recorded

VM_CONTRIBUTOR_ACTIONS = [
    "Microsoft.Authorization/*/read",
    "Microsoft.Compute/availabilitySets/*",
    "Microsoft.Compute/locations/*",
    "Microsoft.Compute/virtualMachines/*",
    "Microsoft.Compute/virtualMachineScaleSets/*",
    "Microsoft.Network/networkInterfaces/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
]
ARM_RESOURCE = "https://management.azure.com/"


@dataclass
class AzureStandin:
    """Both endpoints on one server: /metadata/... is IMDS, /subscriptions/... is ARM."""

    host: str = "127.0.0.1"
    subscription: str = "5e1f0c2a-0000-4000-8000-00000000beef"
    group: str = "wb-azure-rg"
    vm: str = "wb-azure-vm"
    identity: bool = True
    permissions: list[dict[str, Any]] | None = None  # None: Virtual Machine Contributor
    deallocate_allowed: bool = True
    arm_failures: int = 0  # deallocate answers 500 this many times first
    imds_failures: int = 0  # the token endpoint answers 429 this many times first
    token: str = field(default_factory=lambda: "eyJ0eXAiOiJKV1QiLCJhbGciOi.standin."
                                               + secrets.token_urlsafe(24))
    principal: str = "0f9d5a2e-1111-4000-8000-000000000001"
    requests: list[Recorded] = field(default_factory=list)
    deallocated: threading.Event = field(default_factory=threading.Event)
    scheduled_events: list[dict[str, Any]] = field(default_factory=list)
    incarnation: int = 1
    approved: list[str] = field(default_factory=list)  # EventIds POSTed as StartRequests
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def vm_id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.group}/providers/"
                f"Microsoft.Compute/virtualMachines/{self.vm}")

    def __enter__(self) -> AzureStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any = None,
                        headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
                standin.requests.append(Recorded(
                    self.command, parsed.path, query,
                    {k.lower(): v for k, v in self.headers.items()}, body))
                status, answer, headers = standin.answer(self.command, parsed.path, query,
                                                         self.headers, body)
                self._answer(status, answer, headers)

            do_GET = _handle
            do_POST = _handle

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def schedule(self, event_type: str = "Preempt", resources: list[str] | None = None,
                 notice_s: int = 30, description: str = "") -> dict[str, Any]:
        """Azure schedules an event (a Spot eviction by default: 30 s ahead, this VM)."""
        not_before = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=notice_s)
        event = {"EventId": str(secrets.token_hex(16)).upper(), "EventStatus": "Scheduled",
                 "EventType": event_type, "ResourceType": "VirtualMachine",
                 "Resources": [self.vm] if resources is None else resources,
                 "NotBefore": not_before.strftime("%a, %d %b %Y %H:%M:%S GMT"),
                 "Description": description, "EventSource": "Platform",
                 "DurationInSeconds": -1}
        self.scheduled_events = [*self.scheduled_events, event]
        self.incarnation += 1
        return event

    # -- the answers, as documented

    def answer(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
               body: bytes) -> tuple[int, Any, dict[str, str]]:
        if path.startswith("/metadata/"):
            return self._imds(method, path, query, headers, body)
        return self._arm(method, path, query, headers)

    def _imds(self, method: str, path: str, query: dict[str, list[str]],
              headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        if headers.get("Metadata") != "true":
            return 400, {"error": "bad_request_102",
                         "error_description": "Required metadata header not specified"}, {}
        if path == "/metadata/scheduledevents":
            return self._scheduled_events(method, query, body)
        if method != "GET":
            return 405, {"error": "method_not_allowed"}, {}
        if path == "/metadata/identity/oauth2/token":
            if query.get("api-version") != ["2018-02-01"] or \
                    query.get("resource") != [ARM_RESOURCE]:
                return 400, {"error": "invalid_request",
                             "error_description": "unexpected api-version or resource"}, {}
            if self.imds_failures > 0:
                self.imds_failures -= 1
                return 429, {"error": "too_many_requests",
                             "error_description": "IMDS throttle limit reached"}, {}
            if not self.identity:
                return 400, {"error": "invalid_request",
                             "error_description": "Identity not found"}, {}
            now = int(time.time())
            return 200, {"access_token": self.token, "refresh_token": "",
                         "expires_in": "3599", "expires_on": str(now + 3599),
                         "not_before": str(now - 300), "resource": ARM_RESOURCE,
                         "token_type": "Bearer"}, {}
        if path == "/metadata/instance":
            if query.get("api-version") != ["2021-02-01"]:
                return 400, {"error": "Bad request. api-version is invalid"}, {}
            return 200, {"compute": {
                "azEnvironment": "AzurePublicCloud", "location": "westeurope",
                "name": self.vm, "resourceGroupName": self.group,
                "subscriptionId": self.subscription, "resourceId": self.vm_id,
                "vmSize": "Standard_NC4as_T4_v3", "osType": "Linux"},
                "network": {"interface": []}}, {}
        return 404, {"error": "Not found"}, {}

    def _scheduled_events(self, method: str, query: dict[str, list[str]],
                          body: bytes) -> tuple[int, Any, dict[str, str]]:
        if query.get("api-version") not in (["2020-07-01"], ["2019-08-01"], ["2019-04-01"],
                                            ["2019-01-01"], ["2017-11-01"], ["2017-08-01"]):
            return 400, {"error": "Bad request. api-version is invalid"}, {}
        if method == "GET":
            return 200, {"DocumentIncarnation": self.incarnation,
                         "Events": self.scheduled_events}, {}
        if method == "POST":
            try:
                starts = json.loads(body)["StartRequests"]
                self.approved += [str(s["EventId"]) for s in starts]
            except (ValueError, KeyError, TypeError):
                return 400, {"error": "Bad request"}, {}
            return 200, None, {}
        return 405, {"error": "method_not_allowed"}, {}

    def _arm(self, method: str, path: str, query: dict[str, list[str]],
             headers: Any) -> tuple[int, Any, dict[str, str]]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": {"code": "InvalidAuthenticationToken",
                                   "message": "The access token is invalid."}}, {}
        if method == "POST" and path == f"{self.vm_id}/deallocate":
            if query.get("api-version") != ["2024-11-01"]:
                return 400, {"error": {"code": "InvalidApiVersionParameter",
                                       "message": "unsupported api-version"}}, {}
            if not self.deallocate_allowed:
                return 403, {"error": {"code": "AuthorizationFailed", "message": (
                    f"The client '{self.principal}' with object id '{self.principal}' does "
                    "not have authorization to perform action "
                    "'Microsoft.Compute/virtualMachines/deallocate/action' over scope "
                    f"'{self.vm_id}' or the scope is invalid. If access was recently "
                    "granted, please refresh your credentials.")}}, {}
            if self.arm_failures > 0:
                self.arm_failures -= 1
                return 500, {"error": {"code": "InternalServerError",
                                       "message": "An internal execution error occurred."}}, {}
            self.deallocated.set()
            operation = secrets.token_hex(8)
            location = (f"{self.url}/subscriptions/{self.subscription}/providers/"
                        f"Microsoft.Compute/locations/westeurope/operations/{operation}"
                        "?api-version=2024-11-01")
            return 202, None, {"Location": location, "Azure-AsyncOperation": location,
                               "Retry-After": "10"}
        permissions_path = f"{self.vm_id}/providers/Microsoft.Authorization/permissions"
        if method == "GET" and path == permissions_path:
            if query.get("api-version") != ["2022-04-01"]:
                return 400, {"error": {"code": "InvalidApiVersionParameter",
                                       "message": "unsupported api-version"}}, {}
            value = self.permissions
            if value is None:
                value = [{"actions": VM_CONTRIBUTOR_ACTIONS, "notActions": [],
                          "dataActions": [], "notDataActions": []}] \
                    if self.deallocate_allowed else []
            return 200, {"value": value}, {}
        return 404, {"error": {"code": "ResourceNotFound", "message": f"{path} not found"}}, {}
