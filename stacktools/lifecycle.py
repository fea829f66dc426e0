"""scripts/up and scripts/down: a workstation's whole life in one command each.

    scripts/up aws -i ~/.ssh/id_ed25519        # plan, confirm, pulumi up, ssh entry, bootstrap
    scripts/down aws                           # pulumi destroy, what is left, entries removed

up: the offline plan (what will be built, for what per hour), a confirmation
(--yes skips it), `pulumi up` through the Pulumi CLI, the stack's outputs saved
(mode 600, outside the repository), an ssh entry (`ssh wb-<stack>`, `ssh -N
wb-<stack>-tunnel`; ~/.ssh/config gets its Include line only with consent:
--ssh-config yes|no, else asked), and then the bootstrap with those outputs.
Arguments after the stack go to the bootstrap (scripts/bootstrap).

down: `pulumi destroy` and the teardown report (what is kept and what it costs,
anything destroy left: exit 1), then the ssh entry, the saved outputs and the
stack's known_hosts line go.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stacktools import handoff, teardown
from stacktools.ssh_config import SshConfig, SshConfigError, workstation_from_outputs

INSTALL_HINT = ("curl -fsSL https://get.pulumi.com | sh (or brew install pulumi/tap/pulumi), "
                "then `pulumi login` (--local keeps state in ~/.pulumi)")


class LifecycleError(Exception):
    """One line for the user; the command stops."""


def pulumi_cli(command: str) -> str:
    found = shutil.which("pulumi")
    if found is None:
        raise LifecycleError(f"needs the Pulumi CLI, which is not installed; install it: "
                             f"{INSTALL_HINT}")
    return found


def run_pulumi(pulumi: str, *args: str, capture: bool = False) -> str:
    """Pulumi in the repository (Pulumi.yaml lives there); its own output shown unless
    captured. A failure stops us with its last line."""
    proc = subprocess.run([pulumi, *args], cwd=handoff.REPO, text=True,
                          capture_output=capture)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] if capture else []
        raise LifecycleError(f"pulumi {' '.join(args)} failed (exit {proc.returncode})"
                             + (f": {last[0]}" if last else ""))
    return proc.stdout if capture else ""


def ask(question: str) -> bool:
    """y/N on the terminal; no terminal is a no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def plan_text(stack: str) -> tuple[str, float | None]:
    """The offline plan as scripts/plan prints it, and its hourly cost."""
    import pulumi

    from stacktools.mock_engine import OfflineError, read_stack_config, run_program, stack_file
    from stacktools.plan import render

    name, path = stack_file(stack)
    if not path.is_file():
        raise LifecycleError(f"no stack file {path}")
    try:
        run = run_program(read_stack_config(path), name)
    except (pulumi.RunError, OfflineError) as error:
        raise LifecycleError(f"the plan refuses it: {error}") from None
    cost = run.outputs.get("hourly_cost_usd")
    return render(run, path), cost if isinstance(cost, int | float) else None


def ssh_entry(stack: str, outputs: dict[str, Any], identity: str | None,
              consent: Callable[[str], bool], home: Path) -> list[str]:
    """Write the stack's ssh entry; return what to tell the user."""
    config = SshConfig(home)
    try:
        config.add(workstation_from_outputs(stack, outputs, identity))
    except SshConfigError as error:
        return [f"no ssh entry: {error}"]
    lines = [f"ssh entry wb-{stack} in {config.ours}"]
    lines.append(config.add_include(consent))
    return lines


def identity_in(args: list[str]) -> str | None:
    for flag in handoff.FAB_CORE_FLAGS_WITH_VALUE:
        if flag in args and args.index(flag) + 1 < len(args):
            return args[args.index(flag) + 1]
    return None


def up(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/up", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--yes", action="store_true", help="build without asking")
    parser.add_argument("--ssh-config", choices=("yes", "no", "ask"), default="ask",
                        help="add the Include line to ~/.ssh/config (default: ask)")
    args, bootstrap_args = parser.parse_known_args(argv)
    say = lambda line: print(f"scripts/up: {line}", flush=True)  # noqa: E731
    try:
        pulumi = pulumi_cli("up")
        text, cost = plan_text(args.stack)
        print(text, flush=True)
        price = f" for about ${cost:.2f}/hour while it runs" if cost is not None else ""
        if not args.yes and not ask(f"Build stack {args.stack}{price}?"):
            raise LifecycleError("not built (answer y, or pass --yes)")
        run_pulumi(pulumi, "stack", "select", "--create", args.stack)
        run_pulumi(pulumi, "up", "--stack", args.stack, "--yes", "--skip-preview")
        raw = run_pulumi(pulumi, "stack", "output", "--json", "--show-secrets",
                         "--stack", args.stack, capture=True)
        outputs = json.loads(raw)
        saved = handoff.save_outputs(args.stack, raw)
        say(f"outputs saved to {saved} (mode 600)")
        consent = {"yes": lambda q: True, "no": lambda q: False, "ask": ask}[args.ssh_config]
        for line in ssh_entry(args.stack, outputs, identity_in(bootstrap_args), consent,
                              Path.home()):
            say(line)
    except LifecycleError as error:
        print(f"scripts/up: {error}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as error:
        print(f"scripts/up: pulumi stack output is not JSON: {error.msg}", file=sys.stderr)
        return 2
    say(f"bootstrapping: scripts/bootstrap {saved} {' '.join(bootstrap_args)}".rstrip())
    return handoff.main([str(saved), *bootstrap_args])  # execs fab; its recap ends the run


def down(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/down", description="Destroy a stack's "
                                     "workstation and report what is left.")
    parser.add_argument("stack")
    parser.add_argument("--yes", action="store_true", help="pass --yes to pulumi destroy")
    args = parser.parse_args(argv)
    say = lambda line: print(f"scripts/down: {line}", flush=True)  # noqa: E731
    try:
        pulumi_cli("down")
        found, clouds, destroyed = teardown.destroy_and_report(args.stack, args.yes)
    except (LifecycleError, teardown.TeardownError) as error:
        print(f"scripts/down: {error}", file=sys.stderr)
        return 2
    print(teardown.report(args.stack, found, clouds))
    if not destroyed:
        print(f"scripts/down: pulumi destroy -s {args.stack} did not finish; the ssh entry and "
              "saved outputs stay until it does", file=sys.stderr)
        return 1
    forget(args.stack, Path.home(), say)
    return 1 if any(not item.on_purpose for item in found) else 0


def forget(stack: str, home: Path, say: Callable[[str], None]) -> None:
    """The stack's machine is gone: its ssh entry, saved outputs and pinned host key go."""
    if SshConfig(home).remove(stack):
        say(f"removed ssh entry wb-{stack}")
    saved = handoff.outputs_dir() / f"{stack}.json"
    if saved.exists():
        outputs = json.loads(saved.read_text())
        saved.unlink()
        say(f"removed {saved}")
        host = outputs.get("public_ip")
        if host and outputs.get("host_key"):
            known = home / ".ssh" / "known_hosts"
            if known.exists():
                proc = subprocess.run(["ssh-keygen", "-R", str(host), "-f", str(known)],
                                      capture_output=True, text=True)
                if proc.returncode == 0 and "found" in proc.stdout.lower():
                    say(f"removed {host}'s host key from {known}")


def main() -> int:
    command = os.path.basename(sys.argv[0])
    if len(sys.argv) > 1 and sys.argv[1] in ("up", "down"):
        command = sys.argv.pop(1)
    return up(sys.argv[1:]) if command == "up" else down(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
