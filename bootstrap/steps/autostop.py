"""Step: idle autostop, a systemd timer that stops the machine after N idle minutes.

Installs the idle check (bootstrap/onhost/workbench_idle_check.py, standard
library only), its config, a oneshot service and a timer, and enables the
timer. Enabling is the `timers.target.wants` link that `systemctl enable`
makes; with systemd running the timer is also started now, and without it
(a container, a test host) it starts at the next boot. Minutes 0 disables the
timer and leaves the files, so turning it back on is one run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bootstrap.container_spec import TOKEN_FILE
from bootstrap.facts import CLOUD_HINTS, LOGIN, Fact
from bootstrap.shell import LINES, Sh, atomic_write, sh, words
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

ONHOST = Path(__file__).resolve().parent.parent / "onhost"
SCRIPT = "/usr/local/lib/gpu-workbench/workbench_idle_check.py"
CONFIG = "/etc/gpu-workbench/autostop.conf"
SERVICE = "/etc/systemd/system/workbench-idle-check.service"
TIMER = "/etc/systemd/system/workbench-idle-check.timer"
WANTS_LINK = "/etc/systemd/system/timers.target.wants/workbench-idle-check.timer"
JUPYTER_URL = "http://127.0.0.1:8890"


@dataclass(frozen=True)
class InstalledFile:
    path: str
    content: bytes
    mode: str
    validate: Sh | None = None


def wanted_files(cloud: str, minutes: int, home: str) -> tuple[InstalledFile, ...]:
    config = (
        "# Written by gpu-workbench (fab ... autostop); rerun the bootstrap to change it.\n"
        "[autostop]\n"
        f"cloud = {cloud}\n"
        f"minutes = {minutes}\n"
        "gpu_threshold = 10\n"
        "ssh_port = 22\n"
        f"jupyter_url = {JUPYTER_URL}\n"
        f"jupyter_token_file = {home}/{TOKEN_FILE}\n"
    ).encode()
    return (
        InstalledFile(SCRIPT, (ONHOST / "workbench_idle_check.py").read_bytes(), "755",
                      # Refuse to install a script the host's python3 cannot compile.
                      validate=Sh('python3 -c "import ast,sys; ast.parse(open(sys.argv[1]).read())"'
                                  ' "$1"')),
        InstalledFile(CONFIG, config, "644"),
        InstalledFile(SERVICE, (ONHOST / "workbench-idle-check.service").read_bytes(), "644"),
        InstalledFile(TIMER, (ONHOST / "workbench-idle-check.timer").read_bytes(), "644"),
    )


def facts_snippet() -> Sh:
    return sh(r"""
for p in {paths}; do
  if [ -f "$p" ]; then echo "$p $(sha256sum "$p" | cut -c1-64) $(stat -c %a "$p")"
  else echo "$p absent"; fi
done
echo "link $(readlink {link} 2>/dev/null || echo absent)"
if [ -d /run/systemd/system ]; then echo "systemd yes"; else echo "systemd no"; fi
""", paths=words((SCRIPT, CONFIG, SERVICE, TIMER)), link=WANTS_LINK)


@dataclass(frozen=True)
class AutostopFacts:
    files: dict[str, tuple[str, str] | None]  # path -> (sha256, mode) or None
    link: str | None
    systemd: bool


def parse(section: str) -> AutostopFacts:
    files: dict[str, tuple[str, str] | None] = {}
    link, systemd = None, False
    for line in section.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "link":
            link = None if parts[1] == "absent" else parts[1]
        elif parts[0] == "systemd":
            systemd = parts[1] == "yes"
        elif len(parts) == 3:
            files[parts[0]] = (parts[1], parts[2])
        else:
            files[parts[0]] = None
    return AutostopFacts(files, link, systemd)


INSTALLED: Fact[AutostopFacts] = Fact("autostop", lambda _: facts_snippet(), parse)


def run(ctx: HostContext) -> StepOutcome:
    o = ctx.options
    minutes = o.autostop_minutes
    cloud = o.cloud or ("azure" if ctx.fact(CLOUD_HINTS).waagent else "aws")
    f = ctx.fact(INSTALLED)

    actions: list[tuple[str, str]] = []  # (done, to do): for the report and --check
    script: list[Sh] = []
    for want in wanted_files(cloud, minutes, ctx.fact(LOGIN).home):
        have = f.files.get(want.path)
        digest = hashlib.sha256(want.content).hexdigest()
        if have is not None and have[0] == digest and have[1] == want.mode:
            continue
        if have is not None and have[0] == digest:
            actions.append((f"chmod {want.mode} {want.path}", f"chmod {want.mode} {want.path}"))
            script.append(sh("chmod {mode} {path}", mode=want.mode, path=want.path))
            continue
        actions.append((("wrote " if have is None else "updated ") + want.path,
                        ("write " if have is None else "update ") + want.path))
        script.append(atomic_write(want.path, want.content,
                                   expected_sha256=None if have is None else have[0],
                                   new_mode=want.mode, new_owner="root:root",
                                   validate=want.validate) + Sh(" || exit $?"))
        if have is not None and have[1] != want.mode:
            script.append(sh("chmod {mode} {path}", mode=want.mode, path=want.path))

    reload = Sh("systemctl daemon-reload") if f.systemd else Sh(":")
    if minutes > 0 and f.link != TIMER:
        how = " and started it" if f.systemd else " (starts at boot: no systemd now)"
        actions.append(("enabled workbench-idle-check.timer" + how,
                        "enable workbench-idle-check.timer"))
        script.append(sh("mkdir -p {wants} && ln -sfn {timer} {link}",
                         wants=Path(WANTS_LINK).parent, timer=TIMER, link=WANTS_LINK))
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

    policy = (f"stop after {minutes} idle minutes ({cloud}: "
              + ("deallocate" if cloud == "azure" else "poweroff") + ")" if minutes
              else "autostop off")
    if not actions:
        return ok(policy)
    if o.check:
        return ctx.would("; ".join(todo for _, todo in actions))
    result = ctx.remote.run(LINES.join([Sh("set -e"), *script]))
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed(f"{policy}: " + "; ".join(done for done, _ in actions))


STEP = Step("autostop", run, facts=(LOGIN, CLOUD_HINTS, INSTALLED))
