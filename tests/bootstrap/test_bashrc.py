"""The .bashrc umask rule, without a host."""

from __future__ import annotations

from bootstrap.bashrc import umask_line_count, with_umask_once


def test_appends_once_and_is_stable() -> None:
    once = with_umask_once(b"alias ll='ls -l'\n")
    assert once.startswith(b"alias ll='ls -l'\n")
    assert umask_line_count(once) == 1
    assert with_umask_once(once) == once


def test_missing_file_and_missing_final_newline() -> None:
    assert umask_line_count(with_umask_once(None)) == 1
    fixed = with_umask_once(b"export A=1")
    assert fixed.startswith(b"export A=1\n") and umask_line_count(fixed) == 1


def test_duplicates_collapse_to_the_first() -> None:
    raw = b"umask 0002\nexport A=1\n  umask 002\numask 0002\n"
    assert with_umask_once(raw) == b"umask 0002\nexport A=1\n"


def test_other_umask_values_and_non_utf8_bytes_are_kept() -> None:
    raw = b"umask 0022\n# caf\xe9\n"
    fixed = with_umask_once(raw)
    assert fixed.startswith(raw) and umask_line_count(fixed) == 1
