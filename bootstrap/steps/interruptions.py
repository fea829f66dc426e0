"""Step: the interruption watcher, a service that records who stops the machine when it
is the cloud (a spot interruption, a host maintenance), so that status can tell it from
the idle autostop.

Installs bootstrap/onhost/workbench_interruption_watch.py (standard library only), its
config (the cloud, the metadata service's address, how often to ask) and
workbench-interruption-watch.service (Restart=always), and enables it: the
multi-user.target.wants link that `systemctl enable` makes; with systemd running it is
also started (or restarted after a change), without it (a container, a test host) it
starts at the next boot. A second run reads everything in the one facts command and
changes nothing. docs/autostop.md ("Interruptions").
"""

from __future__ import annotations

from pathlib import Path

from bootstrap.facts import CLOUD_HINTS, Fact
from bootstrap.installed_files import (
    InstalledFacts,
    InstalledFile,
    files_snippet,
    parse_installed,
    plan_files,
    unit_snippet,
)
from bootstrap.onhost import workbench_interruption_watch as onhost
from bootstrap.options import BootstrapOptions
from bootstrap.shell import LINES, Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

ONHOST = Path(__file__).resolve().parent.parent / "onhost"
SCRIPT = "/usr/local/lib/gpu-workbench/workbench_interruption_watch.py"
CONFIG = str(onhost.CONFIG_PATH)
SERVICE = "/etc/systemd/system/workbench-interruption-watch.service"
UNIT = "workbench-interruption-watch.service"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{UNIT}"
RECORD = str(onhost.RECORD_PATH)


def watched_cloud(options: BootstrapOptions, guessed: str | None) -> tuple[str, str]:
    """(cloud, note): --cloud, else what the VM shows, else aws (the autostop step's
    default too), said so in the line."""
    if options.cloud:
        return options.cloud, ""
    if guessed:
        return guessed, f" (no --cloud: {guessed} from the VM)"
    return "aws", " (no --cloud and nothing on the VM names a cloud: guessed aws)"


def metadata_url(cloud: str, options: BootstrapOptions) -> str:
    return {"aws": options.aws_imds_url, "gcp": options.gcp_metadata_url,
            "azure": options.azure_imds_url}[cloud].rstrip("/")


def config_text(cloud: str, options: BootstrapOptions) -> bytes:
    return (
        "# Written by gpu-workbench (fab ... interruptions); rerun the bootstrap to\n"
        "# change it. What is asked, and the sources: docs/autostop.md (Interruptions).\n"
        "[watch]\n"
        f"cloud = {cloud}\n"
        f"metadata_url = {metadata_url(cloud, options)}\n"
        f"poll_seconds = {onhost.DEFAULT_POLL_S[cloud]:g}\n"
        f"record = {RECORD}\n"
    ).encode()


def wanted_files(cloud: str, options: BootstrapOptions) -> tuple[InstalledFile, ...]:
    return (
        InstalledFile(SCRIPT, (ONHOST / "workbench_interruption_watch.py").read_bytes(), "755",
                      # Refuse to install a script the host's python3 cannot compile.
                      validate=Sh('python3 -c "import ast,sys; ast.parse(open(sys.argv[1]).read())"'
                                  ' "$1"')),
        InstalledFile(CONFIG, config_text(cloud, options), "644"),
        InstalledFile(SERVICE, (ONHOST / "workbench-interruption-watch.service").read_bytes(),
                      "644"),
    )


def facts_snippet(_: BootstrapOptions) -> Sh:
    return files_snippet((SCRIPT, CONFIG, SERVICE)) + unit_snippet(
        WANTS_LINK, UNIT, Sh("-p ActiveState -p SubState -p NRestarts"))


def parse(section: str) -> InstalledFacts:
    return parse_installed(section)[0]


INSTALLED: Fact[InstalledFacts] = Fact("interruption_watch", facts_snippet, parse)


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    cloud, note = watched_cloud(o, ctx.fact(CLOUD_HINTS).guess())
    f = ctx.fact(INSTALLED)
    plan = plan_files(wanted_files(cloud, o), f.files)
    actions, script = plan.actions, plan.script
    if f.link != SERVICE:
        how = " and started it" if f.systemd else " (starts at boot: no systemd now)"
        actions.append((f"enabled {UNIT}{how}", f"enable {UNIT}"))
        script.append(sh("mkdir -p {wants} && ln -sfn {service} {link}",
                         wants=str(Path(WANTS_LINK).parent), service=SERVICE, link=WANTS_LINK))
        if f.systemd:
            script.append(sh("systemctl daemon-reload && systemctl restart {unit}", unit=UNIT))
    elif f.systemd and plan.touched:
        actions.append((f"restarted {UNIT}", f"restart {UNIT}"))
        script.append(sh("systemctl daemon-reload && systemctl restart {unit}", unit=UNIT))
    elif f.systemd and f.unit.get("ActiveState") not in ("active", "activating"):
        state = f.unit.get("ActiveState", "unknown")
        actions.append((f"started {UNIT} (it was {state})", f"start {UNIT} (it is {state})"))
        script.append(sh("systemctl daemon-reload && systemctl start {unit}", unit=UNIT))

    every = f"{onhost.DEFAULT_POLL_S[cloud]:g} s"
    policy = (f"watching {cloud} metadata for interruption and maintenance notices (every "
              f"{every}){note}")
    if o.check and actions:
        return ctx.would("; ".join(todo for _, todo in actions))
    if actions:
        result = ctx.remote.run(LINES.join([Sh("set -e"), *script]))
        if not result.ok:
            raise StepFailed(result.error_line())
        return changed(f"{policy}: " + "; ".join(done for done, _ in actions))
    restarts = f.unit.get("NRestarts", "0")
    if f.systemd and restarts not in ("", "0"):
        policy += f"; restarted {restarts} time(s) since boot: journalctl -u {UNIT}"
    return ok(policy)


STEP = Step("interruptions", run, facts=(CLOUD_HINTS, INSTALLED))
