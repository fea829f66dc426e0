"""The quoting builder (bootstrap.shell): every value a shell word, refused where it cannot be.

Checked by the real shells: scripts built here run under sh (dash) and bash and
print their argv, which must be the values byte for byte.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from bootstrap.remote import Remote
from bootstrap.shell import LINES, Sh, comment, sh, words
from cluster import login_node

SHELLS = [s for s in ("sh", "dash", "bash") if shutil.which(s)]
HOSTILE = [
    "x$(touch /tmp/pwned-shell-unit)", "x`touch /tmp/pwned-shell-unit`", "it's", 'say "hi"',
    "two  spaces", "a\nb", "-rf", "a;b", "a|b", "a&&b", "", "'", '"', "\\", "$HOME", "*",
    "~root", "#x", "{a,b}", "a=b", " lead", "trail ", "\t", "ü€", "a'\"'\"'b",
]


def argv_of(script: Sh, shell: str) -> list[str]:
    """What `script` (which ends by printing its args NUL-separated) gives under `shell`."""
    out = subprocess.run([shell, "-c", script.text], capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


@pytest.mark.parametrize("shell", SHELLS)
def test_every_value_reaches_the_command_as_one_word_byte_for_byte(shell: str) -> None:
    for value in HOSTILE:
        script = sh("printf '%s\\0' {v} {n} {p}", v=value, n=-3, p=PurePosixPath("/a b/c"))
        assert argv_of(script, shell) == [value, "-3", "/a b/c"], value
        # Inside $(...), also within double quotes, a value is a word too.
        nested = sh('printf \'%s\\0\' "$(printf %s {v})"', v=value)
        assert argv_of(nested, shell) == [value.rstrip("\n")], value
    assert not Path("/tmp/pwned-shell-unit").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_sh_values_go_in_as_they_are_and_words_make_an_argv(shell: str) -> None:
    inner = sh("printf '%s\\0' {v}", v="a b")
    script = sh("{inner}; {argv}", inner=inner, argv=sh("printf '%s\\0' {w}", w=words(HOSTILE)))
    assert argv_of(script, shell) == ["a b", *HOSTILE]
    assert argv_of(LINES.join([Sh("set -e"), inner]) + Sh(" x"), shell) == ["a b", "x"]


@pytest.mark.parametrize(
    "value", [True, 1.5, None, b"bytes", ["a"], ("a",), {"a": 1}, object()],
)
def test_only_str_int_path_and_sh_are_values(value: Any) -> None:
    with pytest.raises(TypeError, match="must be str, int or Path"):
        sh("echo {v}", v=value)


def test_nul_is_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="NUL"):
        sh("echo {v}", v="a\0b")
    with pytest.raises(ValueError, match="NUL"):
        Sh("echo \0")
    with pytest.raises(ValueError, match="one line"):
        comment("a\0b")


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ('echo "ERROR: cannot pull {v}"', "double quotes"),
        ("echo 'x {v}'", "single quotes"),
        ("echo `echo {v}`", "backticks"),
        ('echo "$(echo `echo {v}`)"', "backticks"),
        ("true  # {v}", "a comment"),
        ("cat <<EOF\n{v}\nEOF", "a here-document"),
        ("echo \\{v}", "a backslash escape"),
        ("echo $(( {v} + 1 ))", r"\$\(\(\.\.\.\)\)"),
        # A case pattern's ")" inside $(...) does not end it: the quotes after it count.
        ('echo "$(case a in a) echo "{v}" ;; esac)"', "double quotes"),
    ],
)
def test_a_value_where_its_quotes_would_not_be_quotes_is_refused(template: Any, where: str
                                                                 ) -> None:
    with pytest.raises(ValueError, match=f"a value inside {where}"):
        sh(template, v="x$(touch /tmp/pwned-shell-unit)")


def test_words_where_the_shell_reads_words_are_accepted() -> None:
    v = "a b"
    assert sh('echo "ERROR: cannot pull" {v}": $x"', v=v).text == \
        "echo \"ERROR: cannot pull\" 'a b'\": $x\""
    assert sh('echo "$(docker logs {v} | tr \'\\n\' \' \')"', v=v).text.count("'a b'") == 1
    assert sh("echo $(( {n} + 1 )) # it's fine", n=2).text == "echo $(( 2 + 1 )) # it's fine"
    assert sh('x="$(case $y in a) echo {v} ;; esac)"', v=v).text.endswith("echo 'a b' ;; esac)\"")
    assert sh("f() {{ echo {v}; }}", v=v).text == "f() { echo 'a b'; }"


def test_joining_rechecks_where_each_value_landed() -> None:
    value = sh("{v}", v="x$(touch /tmp/pwned-shell-unit)")
    with pytest.raises(ValueError, match="double quotes"):
        Sh('echo "') + value
    with pytest.raises(ValueError, match="double quotes"):
        Sh('echo "').join([Sh(""), value])
    with pytest.raises(ValueError, match="double quotes"):
        sh('echo "{v}"', v=value)
    # Literal text has nothing to protect: it may go anywhere.
    assert sh('echo "{v}"', v=Sh("$HOME")).text == 'echo "$HOME"'


@pytest.mark.parametrize("template", ["echo {}", "echo {0}", "echo {a.b}", "echo {a[0]}",
                                      "echo {a!r}", "echo {a:>5}"])
def test_only_plain_named_placeholders(template: Any) -> None:
    with pytest.raises((ValueError, KeyError)):
        sh(template, a="x")


def test_missing_and_unused_values_are_errors() -> None:
    with pytest.raises(KeyError, match="no value for"):
        sh("echo {a}")
    with pytest.raises(KeyError, match="not in the template: b"):
        sh("echo {a}", a="x", b="y")


def test_sh_is_not_a_str() -> None:
    script = Sh("echo hi")
    with pytest.raises(TypeError, match="f-string"):
        f"{script}"
    with pytest.raises(TypeError, match="f-string"):
        "{}".format(script)  # noqa: UP032
    with pytest.raises(TypeError):
        script + "; id"  # type: ignore[operator]
    with pytest.raises(TypeError):
        "id; " + script  # type: ignore[operator]
    with pytest.raises(TypeError, match="Sh parts"):
        LINES.join(["id"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="literal"):
        Sh(b"echo")  # type: ignore[arg-type]
    assert str(script) == script.text == "echo hi"
    assert script == Sh("echo hi") and script != "echo hi"


def test_a_comment_is_one_line_and_starts_where_a_word_can() -> None:
    line = comment("SBATCH --comment=x$(touch /tmp/pwned-shell-unit)")
    assert line.text == "#SBATCH --comment=x$(touch /tmp/pwned-shell-unit)"
    assert subprocess.run(["bash", "-c", LINES.join([line, Sh("echo ok")]).text],
                          capture_output=True, text=True).stdout == "ok\n"
    for bad in ("a\nb", "a\rb"):
        with pytest.raises(ValueError, match="one line"):
            comment(bad)
    with pytest.raises(ValueError, match="comment line must start"):
        sh("echo x{c}", c=line)
    assert not Path("/tmp/pwned-shell-unit").exists()


def test_the_runners_take_only_sh() -> None:
    remote = Remote.__new__(Remote)
    with pytest.raises(TypeError, match=r"Remote\.run takes an Sh"):
        remote.run("id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"login_node\.run takes an Sh"):
        login_node.run(None, "id")  # type: ignore[arg-type]
    assert Remote.run.__annotations__["script"] == "Sh"
    assert login_node.run.__annotations__["snippet"] == "Sh"
