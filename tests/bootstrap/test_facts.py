"""The facts rules: each step declares its own facts, all of them travel in one command."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bootstrap import facts as shared_facts
from bootstrap.facts import LOGIN, Fact, FactsIncomplete, facts_command, parse_facts, with_needs
from bootstrap.options import BootstrapOptions
from bootstrap.remembered_image import REMEMBERED_IMAGE
from bootstrap.runner import ALL_STEPS, STEPS
from bootstrap.shell import sh
from bootstrap.steps.base import HostContext, Step, ok
from bootstrap.steps.umask import BASHRC


def fact(name: str, needs: tuple[Fact[Any], ...] = ()) -> Fact[str]:
    return Fact(name, lambda _: sh("echo {name}", name=name), str.strip, needs=needs)


def test_needs_come_first_and_each_fact_once() -> None:
    a = fact("a")
    b = fact("b", needs=(a,))
    c = fact("c", needs=(b, a))
    assert [f.name for f in with_needs([c, a, b, c])] == ["a", "b", "c"]


def test_two_facts_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="two facts share a name: a"):
        with_needs([fact("a"), fact("a")])


def test_every_step_reads_only_facts_it_declares() -> None:
    step = Step("umask", lambda ctx: ok(), facts=(BASHRC,))
    ctx = HostContext(remote=None, options=BootstrapOptions(), emit=print,  # type: ignore[arg-type]
                      gathered={"bashrc": None, "login": "x", "container": {}}, step=step)
    assert ctx.fact(BASHRC) is None
    assert ctx.fact(LOGIN) == "x"  # BASHRC needs LOGIN: declared through it
    from bootstrap.steps.container import CONTAINER

    with pytest.raises(RuntimeError, match="step umask reads fact container without declaring"):
        ctx.fact(CONTAINER)


def test_no_step_declares_another_steps_facts() -> None:
    """A step's facts live in its own module, or in bootstrap.facts when several share them."""
    shared = {v for v in vars(shared_facts).values() if isinstance(v, Fact)}
    for step in STEPS.values():
        module = sys.modules[step.run.__module__]
        own = {v for v in vars(module).values() if isinstance(v, Fact)}
        for declared in with_needs(step.facts):
            assert declared in own or declared in shared, (
                f"step {step.name} declares {declared.name} from another step's module")


def test_one_command_reads_every_steps_facts_and_parses_back() -> None:
    """The whole bootstrap's facts are one POSIX sh script; each section parses."""
    facts = [f for step in STEPS.values() for f in step.facts]
    script = facts_command(facts, BootstrapOptions(chmod_home=True)).text
    for shell in ("sh", "bash"):
        check = subprocess.run([shell, "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr
    names = [f.name for f in with_needs(facts)]
    assert len(names) == len(set(names))
    # The section markers come out in order; each section parses back.
    assert script.index("@@%s\\n' login") < script.index("@@%s\\n' bashrc")
    assert script.index("@@%s\\n' cloud_init") < script.index("@@%s\\n' dpkg_lock")
    output = "".join(f"@@{name}\nabsent\n" for name in names)
    parsed = parse_facts(output, facts)
    assert set(parsed) == set(names)
    assert parsed["docker_info"] is None and parsed["daemon_json"] is None


def test_output_cut_short_is_an_error_not_a_guess() -> None:
    """A missing section (the command died half-way) never reads as "file absent"."""
    facts = list(STEPS["nvidia-runtime"].facts)
    with pytest.raises(FactsIncomplete, match=r"printed nothing for .*daemon_json"):
        parse_facts("@@dockerd\n/usr/bin/dockerd\n", facts)


def test_wait_is_first_and_check_reads_only_the_remembered_image() -> None:
    assert ALL_STEPS[0] == "wait"
    assert STEPS["check"].facts == (REMEMBERED_IMAGE,)
