"""Step: idle autostop, a systemd timer that stops the machine after N idle minutes.

Installs the idle check (bootstrap/onhost/workbench_idle_check.py, standard
library only), the `workbench-autostop` command, its config, a oneshot service
and a timer whose interval scales with the window, and enables the timer.
Enabling is the `timers.target.wants` link that `systemctl enable` makes; with
systemd running the timer is also started now, and without it (a container, a
test host) it starts at the next boot. Minutes 0 disables the timer and leaves
the files, so turning it back on is one run.

The step reports what the check last did (its state file and the unit's result,
read in the one facts command), never `ok` over a failed unit or a stop that
failed; on Azure it asks the VM's identity whether it may deallocate the VM
(`workbench-autostop probe`) and fails when it may not. docs/autostop.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrap.container_spec import TOKEN_FILE, workspace_path
from bootstrap.facts import CLOUD_HINTS, LOGIN, Fact
from bootstrap.installed_files import (
    InstalledFile,
    files_snippet,
    parse_installed,
    plan_files,
    unit_snippet,
)
from bootstrap.onhost import workbench_idle_check as onhost
from bootstrap.options import BootstrapOptions
from bootstrap.remote import parse_sections
from bootstrap.shell import LINES, Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

ONHOST = Path(__file__).resolve().parent.parent / "onhost"
SCRIPT = "/usr/local/lib/gpu-workbench/workbench_idle_check.py"
COMMAND = "/usr/local/bin/workbench-autostop"
CONFIG = "/etc/gpu-workbench/autostop.conf"
SERVICE = "/etc/systemd/system/workbench-idle-check.service"
TIMER = "/etc/systemd/system/workbench-idle-check.timer"
WANTS_LINK = "/etc/systemd/system/timers.target.wants/workbench-idle-check.timer"
STATE = str(onhost.STATE_PATH)
LAST_STOP = str(onhost.LAST_STOP_PATH)  # shared with the interruption watcher
UNIT = "workbench-idle-check.service"
# Under the workspace (also /workspace/... in the container): touch it, or
# `workbench-autostop postpone 2h` writes it.
POSTPONE_FILE = ".gpu-workbench/autostop-postpone"
JUPYTER_URLS = ("http://127.0.0.1:8890", "http://127.0.0.1:8888")
SCRIPT_BYTES = (ONHOST / "workbench_idle_check.py").read_bytes()
SCRIPT_SHA = hashlib.sha256(SCRIPT_BYTES).hexdigest()


def interval_ms(minutes: int) -> int:
    """The check interval the timer gets for a window (workbench_idle_check's rule)."""
    return onhost.check_interval_ms(minutes * 60)


def timer_unit(minutes: int) -> bytes:
    ms = interval_ms(max(minutes, 1))
    text = (ONHOST / "workbench-idle-check.timer").read_text()
    return (text.replace("@INTERVAL_HUMAN@", onhost.human_span(ms / 1000))
            .replace("@INTERVAL@", onhost.systemd_span(ms)).encode())


def config_text(cloud: str, minutes: int, home: str, options: BootstrapOptions) -> bytes:
    ms = interval_ms(max(minutes, 1))
    workspace = workspace_path(options.workspace, home)
    return (
        "# Written by gpu-workbench (fab ... autostop); rerun the bootstrap to change it.\n"
        "# The timer's interval is written from the window: docs/autostop.md.\n"
        "[autostop]\n"
        f"cloud = {cloud}\n"
        f"minutes = {minutes}\n"
        f"interval_seconds = {ms / 1000:g}\n"
        "gpu_threshold = 10\n"
        "gpu_samples = 5\n"
        f"gpu_sample_gap_seconds = {min(5, max(1, ms // 60_000))}\n"
        "ssh_ports = 22\n"
        "app_ports = " + " ".join(map(str, onhost.DEFAULT_APP_PORTS)) + "\n"
        "jupyter_urls = " + " ".join(JUPYTER_URLS) + "\n"
        f"jupyter_token_file = {home}/{TOKEN_FILE}\n"
        f"postpone_file = {workspace}/{POSTPONE_FILE}\n"
        "wall = yes\n"
        f"imds_url = {options.azure_imds_url}\n"
        f"arm_url = {options.azure_arm_url}\n"
        f"last_stop_file = {LAST_STOP}\n"
    ).encode()


def wanted_files(cloud: str, minutes: int, home: str,
                 options: BootstrapOptions | None = None) -> tuple[InstalledFile, ...]:
    options = options or BootstrapOptions(autostop_minutes=minutes)
    return (
        InstalledFile(SCRIPT, SCRIPT_BYTES, "755",
                      # Refuse to install a script the host's python3 cannot compile.
                      validate=Sh('python3 -c "import ast,sys; ast.parse(open(sys.argv[1]).read())"'
                                  ' "$1"')),
        InstalledFile(COMMAND, (ONHOST / "workbench-autostop").read_bytes(), "755"),
        InstalledFile(CONFIG, config_text(cloud, minutes, home, options), "644"),
        InstalledFile(SERVICE, (ONHOST / "workbench-idle-check.service").read_bytes(), "644"),
        InstalledFile(TIMER, timer_unit(minutes), "644"),
    )


def _azure_wanted(options: BootstrapOptions) -> Sh | None:
    """Shell condition under which the facts command probes Azure, or None for never."""
    if options.autostop_minutes <= 0 or options.cloud in ("aws", "gcp"):
        return None
    return Sh("true") if options.cloud == "azure" else Sh("[ -d /var/lib/waagent ]")


def facts_snippet(options: BootstrapOptions) -> Sh:
    snippet = (files_snippet((SCRIPT, COMMAND, CONFIG, SERVICE, TIMER))
               + unit_snippet(WANTS_LINK, UNIT, Sh("-p Result -p ActiveState -p ExecMainStatus"))
               + sh('if [ -f {state} ]; then echo "state $(base64 -w0 {state})"; fi\n',
                    state=STATE))
    azure = _azure_wanted(options)
    if azure:
        # Only the script this bootstrap would install knows `probe`; else the change probes.
        snippet += sh('if {azure} && [ -f {config} ] && [ "$(sha256sum {script} 2>/dev/null | '
                      'cut -c1-64)" = {sha} ]; then\n'
                      '  echo "probe $(timeout 60 python3 {script} probe --json 2>/dev/null '
                      '| tail -n 1)"\nfi\n', azure=azure, config=CONFIG, script=SCRIPT,
                      sha=SCRIPT_SHA)
    return snippet


@dataclass(frozen=True)
class Probe:
    ok: bool
    kind: str
    message: str


@dataclass(frozen=True)
class AutostopFacts:
    files: dict[str, tuple[str, str] | None]  # path -> (sha256, mode) or None
    link: str | None
    systemd: bool
    unit: dict[str, str]  # systemctl show: Result, ActiveState, ExecMainStatus
    state: dict[str, Any]  # the check's state file (this boot), {} when none
    probe: Probe | None  # Azure: may the identity deallocate? None: not asked


def parse_probe(text: str) -> Probe | None:
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return Probe(bool(data["ok"]), str(data.get("kind", "")), str(data["message"]))
    except (ValueError, KeyError, TypeError):
        return Probe(False, "error", f"the probe printed no answer ({text[:120]!r})")


def parse(section: str) -> AutostopFacts:
    installed, rest = parse_installed(section)
    state: dict[str, Any] = {}
    probe = None
    for line in rest:
        parts = line.split()
        if parts[0] == "state" and len(parts) == 2:
            try:
                loaded = json.loads(base64.b64decode(parts[1]))
                state = loaded if isinstance(loaded, dict) else {}
            except (ValueError, binascii.Error):
                state = {}
        elif parts[0] == "probe":
            probe = parse_probe(line[len("probe"):])
    return AutostopFacts(installed.files, installed.link, installed.systemd, installed.unit,
                         state, probe)


INSTALLED: Fact[AutostopFacts] = Fact("autostop", facts_snippet, parse)

# What the probe can establish about the identity: the step fails on these. Anything
# else (IMDS unreachable: not an Azure VM; a transient error) is reported, not failed.
DEFINITE = ("no-identity", "role-missing")
PROBLEM = {"no-identity": "no managed identity", "role-missing": "role missing",
           "unreachable": "Azure not reachable", "transient": "Azure error, try again",
           "error": "error"}


def last_check(state: dict[str, Any]) -> str:
    last = state.get("last")
    if not isinstance(last, dict) or "at" not in last:
        return "no check yet since boot"
    try:
        at = onhost.hms(onhost.parse_time(str(last["at"])))
    except ValueError:
        at = str(last["at"])
    return f"last check {at}: {last.get('summary', '?')}"


def failure(f: AutostopFacts, how: str, probe: Probe | None) -> tuple[str | None, str]:
    """(why the check cannot do its job, or None; a note) from what it left this boot:
    a stop that failed, a failed unit. A stop refused for a missing identity or role
    is not held against a VM whose identity the probe now finds able to deallocate."""
    stop = f.state.get("stop")
    if isinstance(stop, dict) and stop.get("ok") is False:
        try:
            at = onhost.hms(onhost.parse_time(str(stop["at"])))
        except (KeyError, ValueError):
            at = "?"
        why = f"last check could not {how} (at {at}): {stop.get('error', '?')}"
        if probe is not None and probe.ok and stop.get("kind") in ("no-identity",
                                                                    "role-missing"):
            return None, f"earlier: {why}; the identity may deallocate now"
        return why, ""
    if f.unit.get("ActiveState") == "failed":
        result = f.unit.get("Result", "?")
        return (f"{UNIT} failed ({result}, exit {f.unit.get('ExecMainStatus', '?')}): "
                + last_check(f.state) + f"; journalctl -u {UNIT}"), ""
    return None, ""


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    minutes = o.autostop_minutes
    cloud = o.cloud or ("azure" if ctx.fact(CLOUD_HINTS).waagent else "aws")
    f = ctx.fact(INSTALLED)
    home = ctx.fact(LOGIN).home

    plan = plan_files(wanted_files(cloud, minutes, home, o), f.files)
    actions, script, touched = plan.actions, plan.script, plan.touched

    reload = Sh("systemctl daemon-reload") if f.systemd else Sh(":")
    if minutes > 0 and f.link != TIMER:
        how = " and started it" if f.systemd else " (starts at boot: no systemd now)"
        actions.append(("enabled workbench-idle-check.timer" + how,
                        "enable workbench-idle-check.timer"))
        script.append(sh("mkdir -p {wants} && ln -sfn {timer} {link}",
                         wants=str(Path(WANTS_LINK).parent), timer=TIMER, link=WANTS_LINK))
        if f.systemd:
            script.append(sh("{reload} && systemctl start workbench-idle-check.timer",
                             reload=reload))
    elif minutes == 0 and f.link is not None:
        actions.append(("disabled workbench-idle-check.timer (autostop 0)",
                        "disable workbench-idle-check.timer (autostop 0)"))
        script.append(sh("rm -f {link}", link=WANTS_LINK))
        if f.systemd:
            script.append(Sh("systemctl stop workbench-idle-check.timer || true"))
    elif script and f.systemd:
        script.append(sh("{reload} && systemctl try-restart workbench-idle-check.timer",
                         reload=reload))

    azure = cloud == "azure" and minutes > 0
    probe = f.probe
    reprobe = azure and (bool(touched & {SCRIPT, CONFIG}) or probe is None)
    if reprobe and script:
        script.append(sh('echo "@@probe"; '
                         "timeout 60 python3 {script} probe --json 2>/dev/null | tail -n 1 || true",
                         script=SCRIPT))

    how = "deallocate" if cloud == "azure" else "poweroff"
    every = onhost.human_span(interval_ms(max(minutes, 1)) / 1000)
    policy = (f"stop after {minutes} idle minutes ({cloud}: {how}; a check every {every})"
              if minutes else "autostop off")
    done = ""
    if actions and o.check:
        done = "would " + "; ".join(todo for _, todo in actions)
    elif actions:
        result = ctx.remote.run(LINES.join([Sh("set -e"), *script]))
        if not result.ok:
            raise StepFailed(result.error_line())
        done = "; ".join(d for d, _ in actions)
        if reprobe:
            probe = parse_probe(parse_sections(result.stdout).get("probe", ""))

    problems = []
    notes = []
    if minutes > 0:
        if azure and probe is not None and not probe.ok:
            said = f"({PROBLEM.get(probe.kind, probe.kind)}): {probe.message}"
            if probe.kind in DEFINITE:
                problems.append(f"cannot deallocate this VM {said}")
            else:  # not an answer about the identity: say so, do not claim either way
                notes.append(f"WARNING: deallocate not verified {said}")
        why, note = failure(f, how, probe)
        if why:
            problems.append(why)
        if note:
            notes.append(note)
    if problems:
        raise StepFailed("; ".join(problems) + (f" [{done}]" if done else ""))
    if minutes > 0 and azure and probe is not None and probe.ok:
        policy += "; the VM's identity may deallocate it"
    status = "" if minutes <= 0 else "; ".join([last_check(f.state), *notes])
    if not actions:
        return ok(f"{policy}; {status}" if status else policy)
    if o.check:
        return ctx.would("; ".join(todo for _, todo in actions))
    shown = status if f.state or notes else ""
    return changed(f"{policy}: {done}" + (f"; {shown}" if shown else ""))


STEP = Step("autostop", run, facts=(LOGIN, CLOUD_HINTS, INSTALLED))
