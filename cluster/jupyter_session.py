"""`slurm.jupyter` from the login node's side: wait for the job's server, then the tunnel.

After the submit, the task polls the login node (one SSH round trip each,
cluster.remote_scripts.jupyter_poll_snippet) until the job runs and its
server answers /api/status with its token, saying Slurm's reason while the
job waits, for at most --wait seconds. Then it prints two lines on stdout:
the ssh command that tunnels a local port through the login node to the
server, and the URL with the token. The token leaves the cluster only on
the SSH channel, into that URL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fabric import Connection
from invoke.exceptions import Exit

from bootstrap.shell import words
from cluster import login_node
from cluster.login_node import PRECONDITION, connection, fail
from cluster.remote_scripts import jupyter_poll_snippet

# The job ended, or Jupyter did not answer within --wait.
NOT_SERVED = 5
POLL_SECONDS = 2.0
# States after which the job can still serve (squeue's long names).
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
           "SUSPENDED"}
RUNNING = "RUNNING"

# A host name or IPv4 address, or an IPv6 address; never an option-like "-x".
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*|[0-9A-Fa-f:][0-9A-Fa-f:.]*")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")


@dataclass(frozen=True)
class Endpoint:
    """Where the job's server listens, as the job wrote it."""

    address: str
    port: int
    path: str  # "/lab" for JupyterLab, "/" for a plain jupyter_server
    node: str


@dataclass(frozen=True)
class Poll:
    state: str
    reason: str
    nodes: str
    time_limit: str
    endpoint: Endpoint | None = None
    answer: str = ""
    token: str = ""


def parse_poll(text: str) -> Poll:
    """The lines of jupyter_poll_snippet; ValueError where the job wrote what we cannot use."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    state, reason, nodes, time_limit = [*fields.get("state", "").split("|"), "", "", ""][:4]
    endpoint = None
    if "endpoint" in fields:
        parts = fields["endpoint"].split()
        if len(parts) != 4 or not _ADDRESS.fullmatch(parts[0]) or not parts[1].isdigit() \
                or not 0 < int(parts[1]) < 65536 or parts[2] not in ("/lab", "/") \
                or not _ADDRESS.fullmatch(parts[3]):
            raise ValueError(f"the job's endpoint file holds {fields['endpoint']!r}")
        endpoint = Endpoint(parts[0], int(parts[1]), parts[2], parts[3])
    token = fields.get("token", "")
    if token and not _TOKEN.fullmatch(token):
        raise ValueError("the job's token file holds something other than a token")
    return Poll(state.split(" ")[0], reason, nodes, time_limit, endpoint,
                fields.get("answer", ""), token)


def tunnel_command(c: Connection, local_port: int, endpoint: Endpoint) -> str:
    """The ssh line that forwards localhost:local_port through the login node to the server,
    with what fab itself used to reach the login node (its -S config, -i key, port)."""
    target = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    argv = ["ssh"]
    # fab -S FILE: Fabric keeps it as the runtime ssh config path (no public accessor).
    ssh_config = getattr(c.config, "_runtime_ssh_path", None)
    if ssh_config:
        argv += ["-F", str(ssh_config)]
    keys: Any = (c.connect_kwargs or {}).get("key_filename") or []
    for key in [keys] if isinstance(keys, str) else keys:
        argv += ["-i", str(key)]
    if c.port and int(c.port) != 22:
        argv += ["-p", str(c.port)]
    argv += ["-N", "-L", f"{local_port}:{target}:{endpoint.port}",
             f"{c.user}@{c.original_host or c.host}"]
    return words(argv).text


def jupyter_url(local_port: int, endpoint: Endpoint, token: str) -> str:
    return f"http://localhost:{local_port}{endpoint.path}?token={token}"


def one_line_tail(log: str, lines: int = 3) -> str:
    kept = [line.strip() for line in log.splitlines() if line.strip()][-lines:]
    return " / ".join(kept) if kept else "(empty)"


def wait_for_server(
    c: Connection,
    job_id: str,
    jobs_dir: str,
    wait_seconds: int,
    log_tail: Callable[[], str],
    say: Callable[[str], None],
) -> Poll:
    """Poll until the job's server answers with its token (that Poll is returned);
    exit NOT_SERVED when the job ends first or --wait runs out, with Slurm's reason
    or the log's last lines."""
    conn = connection(c, "jupyter")
    deadline = time.monotonic() + wait_seconds
    said = ""
    while True:
        result = login_node.run(conn, jupyter_poll_snippet(job_id, jobs_dir))
        if result.exited != 0:
            raise fail("jupyter", result.stderr.strip() or f"exit {result.exited}",
                       result.exited)
        try:
            poll = parse_poll(result.stdout)
        except ValueError as error:
            raise fail("jupyter", f"job {job_id}: {error}", NOT_SERVED) from None
        if poll.answer == "200" and poll.token and poll.endpoint:
            return poll
        if poll.answer == "none":
            raise fail("jupyter", "the login node has neither curl nor python3 to ask the"
                       f" server whether it answers; job {job_id} keeps running", PRECONDITION)
        if poll.answer in ("401", "403"):
            node = poll.endpoint.node if poll.endpoint else poll.nodes
            raise fail("jupyter", f"job {job_id}: the server on {node} refuses the token its"
                       f" job wrote (HTTP {poll.answer})", NOT_SERVED)
        if poll.state not in WAITING and poll.state != RUNNING:
            raise fail("jupyter", f"job {job_id} ended ({poll.state or 'unknown'}) before"
                       f" Jupyter answered; its log ends: {tail(log_tail)}", NOT_SERVED)
        # Slurm's reason says why a job waits; "None" (just released, or about to
        # start) says nothing.
        why = f" ({poll.reason})" if poll.reason and poll.reason != "None" else ""
        now = (f"job {job_id} is {poll.state}{why}; waiting up to {wait_seconds} s"
               if poll.state in WAITING else
               f"job {job_id} is RUNNING on {poll.nodes}; waiting for Jupyter to answer")
        if now != said:
            say(now)
            said = now
        if time.monotonic() >= deadline:
            if poll.state in WAITING:
                raise fail("jupyter", f"job {job_id} is still {poll.state}{why} after"
                           f" {wait_seconds} s; it stays queued: slurm.jupyter --attach {job_id}"
                           f" waits again, slurm.cancel {job_id} drops it", NOT_SERVED)
            raise fail("jupyter", f"job {job_id} is RUNNING on {poll.nodes} but Jupyter did not"
                       f" answer within {wait_seconds} s; its log ends: {tail(log_tail)}; it"
                       f" keeps running: slurm.cancel {job_id} ends it", NOT_SERVED)
        time.sleep(POLL_SECONDS)


def tail(log_tail: Callable[[], str]) -> str:
    """The log's last lines on one line, or why there are none."""
    try:
        return one_line_tail(log_tail())
    except Exit as error:  # the log is a courtesy: its absence must not hide the cause
        return f"(no log: {error.message})"
