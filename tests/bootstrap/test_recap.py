"""The recap text, without a host."""

from __future__ import annotations

from bootstrap.recap import HostReport, Status, StepResult, format_recap


def test_recap_lists_every_step_per_host_with_counts() -> None:
    a = HostReport("u@a", [StepResult("wait", Status.OK, 0.2), StepResult("umask",
                   Status.CHANGED, 0.1)], commands_sent=2, seconds=0.3)
    b = HostReport("u@b", [StepResult("wait", Status.FAILED, 2.0, "cannot reach")],
                   commands_sent=0, seconds=2.0)
    text = format_recap([a, b])
    assert "u@a" in text and "ok=1   changed=1   failed=0" in text and "2 ssh commands" in text
    assert "u@b" in text and "failed=1" in text
    assert text.count("    wait ") == 2 and "    umask " in text
    assert not a.failed and b.failed


def test_check_mode_says_would_change() -> None:
    r = HostReport("u@a", [StepResult("umask", Status.CHANGED, 0.1, "would add")])
    assert "would change" in format_recap([r], check_mode=True)
