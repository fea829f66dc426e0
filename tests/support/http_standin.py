"""The HTTP part of the cloud metadata stand-ins (aws_standin.py, gcp_standin.py): a
server on a local port that records every request and asks its owner for the answer.

A stand-in answers as its cloud documents it; `fault` makes it answer as no cloud does,
for the hostile tests: "500" (every request), "garbage" (200 with a body that is no
documented answer), "huge" (200 with 10 MiB). `down()` closes the port: nothing listens.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

HUGE = 10 * 1024 * 1024
S = TypeVar("S", bound="HttpStandin")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpStandin:
    """Subclasses implement `answer`; the server, the record and the faults are here."""

    host: str = "127.0.0.1"
    fault: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def answer(self, request: Recorded) -> Reply:
        raise NotImplementedError

    def requests_to(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self: S) -> S:
        self._start(0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def down(self) -> None:
        """Close the port: a client now gets "connection refused", as from a host
        where no metadata service runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def up(self) -> None:
        """Listen again on the same port (after `down`)."""
        if self._server is None:
            self._start(self._port)

    def _start(self, port: int) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                recorded = Recorded(self.command, parsed.path,
                                    urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                                    {k.lower(): v for k, v in self.headers.items()}, body)
                with standin.lock:
                    standin.requests.append(recorded)
                    reply = standin._faulty() or standin.answer(recorded)
                # A client that hung up (a watcher killed, a host powered off mid-poll)
                # is part of the scenarios: its request is recorded, the reply dropped.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(reply.body)

            do_GET = do_PUT = do_POST = do_HEAD = _handle

        server = ThreadingHTTPServer((self.host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self._port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def _faulty(self) -> Reply | None:
        if self.fault == "500":
            return Reply(500, b"Internal Server Error", {"Content-Type": "text/plain"})
        if self.fault == "garbage":
            return Reply(200, b"<html><body>Welcome to the captive portal{", {
                "Content-Type": "text/html"})
        if self.fault == "huge":
            return Reply(200, b"{" + b" " * HUGE, {"Content-Type": "application/json"})
        return None
