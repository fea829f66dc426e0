"""scripts/status: every workstation you have outputs for, and what it is doing.

    scripts/status                 # all saved stacks (~/.config/gpu-workbench/outputs)
    scripts/status aws gcp-l4      # only these
    scripts/status -i ~/.ssh/id_ed25519 --timeout 5

Each workstation is read with one SSH command (its facts: bootstrap/facts.py),
all of them at once. A machine that does not answer is shown as such: a
stopped machine is the good case, since only its disks are billed. For one
that answers: uptime and what this boot has cost at the catalog price the
stack was planned with, GPU use now, the container's state and image, idle
minutes against the autostop window, who stopped it last (the cloud, from its
interruption or maintenance notice, or the idle autostop), and the data volume's
mount.

Host keys are checked as the bootstrap checks them (known_hosts, and the
stack's own host key from its outputs); nothing is changed on the host.
Exit status: 0 when every workstation was read or does not answer, 1 when
one answered but could not be read (authentication, host key, sudo), 2 for
bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric import Config, Connection

from bootstrap.facts import FactsIncomplete, facts_command, parse_facts
from bootstrap.options import BootstrapOptions
from bootstrap.remote import HostError, Remote
from bootstrap.steps.container import CONTAINER
from stacktools import handoff
from stacktools.status_facts import (
    AUTOSTOP,
    CLOCK,
    DATA_MOUNT,
    GPU_USE,
    LAST_STOP,
    STATUS_FACTS,
    AutostopLook,
    DataMount,
    GpuUse,
    HostClock,
    LastStop,
)

# One try each: a stopped machine is common and the answer "no answer" is enough.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
MAX_PARALLEL = 32
# What the OS says when nothing answers at the address: a stopped machine, most likely.
NO_ANSWER = ("timed out", "Connection refused", "No route to host", "Network is unreachable",
             "Name or service not known", "Temporary failure in name resolution",
             "Host is unreachable")


@dataclass(frozen=True)
class Target:
    """One workstation as its saved outputs describe it."""

    stack: str
    host: str
    user: str
    port: int = 22
    identity: str | None = None
    hourly_usd: float | None = None
    data_mount: str = ""
    host_key_fingerprint: str | None = None
    cloud: str | None = None

    @property
    def label(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.host}{port}"


@dataclass
class Reading:
    target: Target | None
    stack: str
    facts: dict[str, Any] = field(default_factory=dict)
    no_answer: str | None = None  # why nothing answered (stopped?)
    error: str | None = None  # it answered, but could not be read
    commands_sent: int = 0
    seconds: float = 0.0


class StatusError(Exception):
    """Bad input for one workstation; the message is for the user."""


def target_from_outputs(stack: str, outputs: dict[str, Any], identity: str | None) -> Target:
    host, user = outputs.get("public_ip"), outputs.get("ssh_user")
    if not isinstance(host, str) or not host or not isinstance(user, str) or not user:
        raise StatusError("its outputs have no public_ip or ssh_user (is the stack up?)")
    cost = outputs.get("hourly_cost_usd")
    try:
        _key, fingerprint = handoff.stack_host_key(outputs)
    except handoff.HandoffError as exc:
        raise StatusError(str(exc)) from None
    cloud = outputs.get("cloud")
    return Target(
        stack=stack, host=host, user=user,
        identity=identity or handoff.identity_from_ssh_command(outputs.get("ssh_command")),
        hourly_usd=float(cost) if isinstance(cost, int | float) else None,
        data_mount=str(outputs.get("data_mount") or ""),
        host_key_fingerprint=fingerprint,
        cloud=cloud if isinstance(cloud, str) else None)


def saved_targets(directory: Path, stacks: list[str], identity: str | None
                  ) -> list[Target | Reading]:
    """A Target per saved outputs file (or per named stack); a Reading for one that
    cannot be used, saying why."""
    files = sorted(directory.glob("*.json")) if directory.is_dir() else []
    by_stack = {path.stem: path for path in files}
    names = stacks or list(by_stack)
    found: list[Target | Reading] = []
    for stack in names:
        path = by_stack.get(stack)
        if path is None:
            found.append(Reading(None, stack, error=f"no saved outputs ({directory}/"
                                                    f"{stack}.json); scripts/up or "
                                                    f"scripts/bootstrap {stack} saves them"))
            continue
        try:
            outputs = json.loads(path.read_text())
            if not isinstance(outputs, dict):
                raise StatusError(f"{path} is not a JSON object of stack outputs")
            handoff.check_private(path, outputs)
            found.append(target_from_outputs(stack, outputs, identity))
        except json.JSONDecodeError as exc:
            found.append(Reading(None, stack, error=f"{path}: not JSON ({exc.msg} at line "
                                                    f"{exc.lineno})"))
        except (StatusError, handoff.HandoffError, OSError) as exc:
            found.append(Reading(None, stack, error=str(exc)))
    return found


def options_for(target: Target) -> BootstrapOptions:
    """The bootstrap's options, as far as the facts read them (the data mount)."""
    return BootstrapOptions(cloud=target.cloud if target.cloud in ("aws", "gcp", "azure")
                            else None, data_mount=target.data_mount or "/data")


def read_host(target: Target, connect_timeout_s: float) -> Reading:
    """Connect once and run the facts command once."""
    reading = Reading(target, target.stack)
    started = time.monotonic()
    kwargs: dict[str, Any] = {}
    if target.identity:
        kwargs["key_filename"] = [target.identity]
    connection = Connection(target.host, user=target.user, port=target.port, config=Config(),
                            connect_timeout=connect_timeout_s, connect_kwargs=kwargs)
    remote = Remote(connection, host_key_fingerprint=target.host_key_fingerprint)
    try:
        # timeout 0: a single try; retrying a stopped machine only delays the answer.
        remote.connect(0.0)
        result = remote.run(facts_command(STATUS_FACTS, options_for(target)),
                            timeout=COMMAND_TIMEOUT_S)
        if not result.ok:
            raise HostError(f"the status command failed on {target.label}: "
                            f"{result.error_line()}")
        reading.facts = parse_facts(result.stdout, STATUS_FACTS)
    except HostError as exc:
        message = str(exc)
        if message.startswith("cannot reach") and any(s in message for s in NO_ANSWER):
            reading.no_answer = message.split(": ", 1)[-1]
        else:
            reading.error = message
    except FactsIncomplete as exc:
        reading.error = f"{target.label}: {exc}"
    finally:
        reading.commands_sent = remote.commands_sent
        reading.seconds = time.monotonic() - started
        remote.close()
    return reading


def read_all(targets: list[Target | Reading], connect_timeout_s: float,
             reader: Callable[[Target, float], Reading] = read_host) -> list[Reading]:
    """Every target at once (up to MAX_PARALLEL), in the given order."""
    hosts = [t for t in targets if isinstance(t, Target)]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(hosts)))) as pool:
        read = dict(zip(map(id, hosts),
                        pool.map(lambda t: reader(t, connect_timeout_s), hosts), strict=True))
    return [read[id(t)] if isinstance(t, Target) else t for t in targets]


# --- rendering ---------------------------------------------------------------------------------

def span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h{minutes:02d}m"


def gib(mib: int | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f}"


def gpu_line(gpus: list[GpuUse] | str) -> str:
    if isinstance(gpus, str):
        return gpus
    return "; ".join(
        f"{g.name} {'?' if g.utilization_pct is None else g.utilization_pct}% now, "
        f"{gib(g.memory_used_mib)} of {gib(g.memory_total_mib)} GiB" for g in gpus)


def container_line(inspect: dict[str, Any] | None, name: str) -> str:
    if inspect is None:
        return f"no container {name} (scripts/bootstrap starts it)"
    state = inspect.get("State") or {}
    status = str(state.get("Status", "unknown"))
    image = (inspect.get("Config") or {}).get("Image", "?")
    when = ""
    if status == "running" and state.get("StartedAt"):
        when = f" since {str(state['StartedAt'])[:16].replace('T', ' ')} UTC"
    elif status == "exited":
        when = f" (exit {state.get('ExitCode', '?')})"
    restarts = inspect.get("RestartCount") or 0
    extra = f", restarted {restarts}x" if restarts else ""
    return f"{name} {status}{when}, {image}{extra}"


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def autostop_line(look: AutostopLook, host_now: float) -> str:
    if not look.installed:
        return "off (no idle check installed)"
    window = f"{look.minutes:g} min" if look.minutes is not None else "? min"
    if look.minutes == 0:
        return "off (--autostop-minutes 0)"
    if look.timer not in ("active", "no systemd"):
        return f"timer {look.timer}: this machine will not stop itself (window {window})"
    state = look.state or {}
    last = state.get("last") if isinstance(state.get("last"), dict) else None
    if last is None:
        return f"window {window}; no check yet this boot"
    at = _epoch(last.get("at"))
    when = f", {span(host_now - at)} ago" if at is not None else ""
    stop = state.get("stop") if isinstance(state.get("stop"), dict) else None
    if stop is not None and stop.get("ok") is False:
        return (f"STOP FAILED{when}: {stop.get('error', '?')}; retried at each check "
                f"(window {window})")
    idle_since = _epoch(state.get("idle_since"))
    if idle_since is not None and last.get("decision") != "busy":
        return (f"idle {span(host_now - idle_since)} of {window}; last check{when}: "
                f"{last.get('summary', '')}")
    summary = str(last.get("summary", ""))
    summary = summary[len("busy: "):] if summary.startswith("busy: ") else summary
    return f"busy at the last check{when}: {summary} (window {window})"


CLOUD_NAMES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}
# What stopped it, from the record's kind (bootstrap/onhost/workbench_interruption_watch.py).
STOPPED_BY = {"interruption": "interrupted by", "maintenance": "stopped for maintenance by",
              "termination": "terminated by"}


def utc_clock(epoch: float, host_now: float) -> str:
    """12:03 UTC on the host's day, else 2026-11-22 12:03 UTC."""
    moment = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    today = dt.datetime.fromtimestamp(host_now, dt.timezone.utc).date()
    return moment.strftime("%H:%M UTC" if moment.date() == today else "%Y-%m-%d %H:%M UTC")


def last_stop_line(look: LastStop, host_now: float) -> str | None:
    """Who stopped the machine last, as it recorded: the cloud (an interruption or a
    maintenance, from its own notice) or the idle autostop. None: nothing recorded."""
    if look.error:
        return f"unknown ({look.error})"
    record = look.record
    if record is None:
        return None
    at = _epoch(record.get("at"))
    when = utc_clock(at, host_now) if at is not None else "an unknown time"
    reason = str(record.get("reason") or "no reason recorded")
    by = str(record.get("by") or "?")
    if by == "autostop":
        text = f"autostop at {when} ({reason})"
    else:
        verb = STOPPED_BY.get(str(record.get("kind")), "stopped by")
        text = f"{verb} {CLOUD_NAMES.get(by, by)} at {when} ({reason})"
    if look.boot_id and record.get("boot_id") == look.boot_id:
        # Written in this very boot: the stop is announced or asked for, not done.
        stop_at = _epoch(record.get("stop_at"))
        text += ("; this boot, the machine has not stopped yet"
                 + (f" (due {utc_clock(stop_at, host_now)})" if stop_at is not None else ""))
    return text


def data_line(mount: DataMount | None, where: str) -> str:
    if not where:
        return ""
    if mount is None:
        return f"{where}: NOT MOUNTED (the kept volume is not in use; rerun scripts/bootstrap)"
    return f"{where}: {mount.source} {mount.fstype}, {mount.size}, {mount.use_pct} used"


def render(reading: Reading) -> list[str]:
    target = reading.target
    head = f"wb-{reading.stack}"
    if target is None:
        return [f"{head}  cannot read: {reading.error}"]
    if reading.no_answer is not None:
        return [f"{head}  {target.label}: no answer ({reading.no_answer}); stopped, most "
                "likely: only its disks are billed"]
    if reading.error is not None:
        return [f"{head}  {target.label}: ERROR {reading.error}"]
    facts = reading.facts
    clock: HostClock = facts[CLOCK.name]
    uptime = clock.uptime_s
    now = clock.now if clock.now is not None else time.time()
    first = f"{head}  {target.label}: up {span(uptime) if uptime is not None else '?'}"
    if uptime is not None and target.hourly_usd is not None:
        first += (f", about ${uptime / 3600 * target.hourly_usd:.2f} this boot at "
                  f"${target.hourly_usd:g}/h")
    name = options_for(target).container_name
    lines = [first,
             f"  gpu        {gpu_line(facts[GPU_USE.name])}",
             f"  container  {container_line(facts[CONTAINER.name], name)}",
             f"  autostop   {autostop_line(facts[AUTOSTOP.name], now)}"]
    stop = last_stop_line(facts[LAST_STOP.name], now)
    if stop:
        lines.append(f"  last stop  {stop}")
    data = data_line(facts[DATA_MOUNT.name], target.data_mount)
    if data:
        lines.append(f"  data       {data}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/status",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("stacks", nargs="*", help="stack names (default: every saved one)")
    parser.add_argument("-i", "--identity", help="SSH key (default: the stack's ssh_command)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S,
                        help=f"seconds to wait for a host to answer "
                             f"(default {DEFAULT_CONNECT_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        print("scripts/status: --timeout must be positive", file=sys.stderr)
        return 2
    directory = handoff.outputs_dir()
    targets = saved_targets(directory, args.stacks, args.identity)
    if not targets:
        print(f"scripts/status: no workstations: nothing saved in {directory} "
              "(scripts/up saves a stack's outputs there)")
        return 0
    started = time.monotonic()
    readings = read_all(targets, args.timeout)
    for reading in readings:
        print("\n".join(render(reading)), flush=True)
    read = [r for r in readings if r.target is not None and r.error is None]
    print(f"scripts/status: {len(readings)} workstation(s) in {time.monotonic() - started:.1f}s, "
          f"{sum(r.commands_sent for r in readings)} SSH command(s)")
    failed = [r for r in readings if r.error is not None]
    if any(r.target is None for r in failed) and not read:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
