"""Stand-in for the EC2 instance metadata service (IMDSv2) on a local port: the two
requests the interruption watcher makes, answered as AWS documents them, every request
recorded. Sources (awsdocs/amazon-ec2-user-guide, doc_source/, read 2026-11-23):

- configuring-instance-metadata-service.md ("Use IMDSv2"): a session token from
  `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1 s to 21600 s);
  every GET carries it in `X-aws-ec2-metadata-token`; "When token usage is set to
  required, requests without a valid token or with an expired token receive a 401 -
  Unauthorized" (the stack requires IMDSv2); "PUT requests are rejected if they contain
  an X-Forwarded-For header".
- instancedata-data-retrieval.md: "400 - Missing or Invalid Parameters - The PUT request
  is not valid", "401 - Unauthorized - The GET request uses an invalid token", a
  resource that is not available is "404 - Not Found"; metadata is `text/plain`.
- spot-instance-termination-notices.md: `GET /latest/meta-data/spot/instance-action`
  is "not present ... and you receive an HTTP 404 error" until EC2 plans to stop or
  terminate the instance, then `{"action": "stop", "time": "2017-09-18T08:22:00Z"}`
  (action "hibernate", "stop" or "terminate"), two minutes ahead.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field

from tests.support.http_standin import HttpStandin, Recorded, Reply

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"
TEXT = {"Content-Type": "text/plain"}


@dataclass
class AwsImdsStandin(HttpStandin):
    instance_action: dict[str, str] | None = None  # None: no interruption planned
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)

    def interrupt(self, action: str = "stop", in_s: int = 120) -> dict[str, str]:
        """EC2 marks the instance: the notice, two minutes ahead as documented."""
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=in_s)
        with self.lock:
            self.instance_action = {"action": action,
                                    "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
            return dict(self.instance_action)

    def clear(self) -> None:
        with self.lock:
            self.instance_action = None

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def answer(self, request: Recorded) -> Reply:
        if request.path == TOKEN_PATH:
            if request.method != "PUT":
                return Reply(405, b"", TEXT)  # not documented; the watcher only PUTs here
            if "x-forwarded-for" in request.headers:
                return Reply(403, b"", TEXT)
            try:
                ttl = int(request.headers.get(TTL_HEADER, ""))
            except ValueError:
                ttl = 0
            if not 1 <= ttl <= 21600:
                return Reply(400, b"", TEXT)
            token = "AQAEA" + secrets.token_urlsafe(40)
            self.tokens[token] = time.monotonic() + ttl
            return Reply(200, token.encode(), {**TEXT, "X-aws-ec2-metadata-token-ttl-seconds":
                                               str(ttl)})
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"", TEXT)
        expiry = self.tokens.get(request.headers.get(TOKEN_HEADER, ""))
        if expiry is None or expiry < time.monotonic():
            return Reply(401, b"", TEXT)
        if request.path == INSTANCE_ACTION and self.instance_action is not None:
            return Reply(200, json.dumps(self.instance_action).encode(), TEXT)
        return Reply(404, b"", TEXT)
