"""Remote POSIX sh: the quoting builder every script is made with, and the snippets
the steps share.

Shell text that reaches a host is an `Sh`, never a `str`:

    Sh("docker info >/dev/null")                      # literal text written here
    sh("docker pull {image}", image=ref)              # a value: quoted by construction
    sh("{pull} && {run}", pull=pull, run=run)         # Sh values go in as they are

`sh` quotes every str, int and Path value (shlex.quote); only an `Sh` goes in
as it is. A template is Python format syntax (`{name}`; `{{`/`}}` for braces)
and must be a string literal: tests/test_quoting_guard.py holds the code to
that, and `Remote.run` and the login node's runner accept only an `Sh`. A
quoted value is a shell word only where sh reads words: `sh` refuses one
placed inside "double quotes", 'single quotes', `backticks`, a comment or a
here-document, or right after a backslash, where its quotes would not be
quotes. Error messages therefore print values as words of their own
(`echo "ERROR: cannot pull" {image}`) or from a variable assigned a quoted
value (`image={image}` ... `echo "ERROR: cannot pull $image"`).

Each step sends one script per change, so these are text builders, not
commands: a step joins what it needs and pays one round trip for all of it.
Scripts print "ERROR: ..." and exit non-zero when they fail.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import base64
import hashlib
import shlex
import string
from collections.abc import Iterable
from pathlib import PurePath
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from typing import LiteralString
else:
    LiteralString = str

# One value in an Sh: (start, end) in its text, and what it is: "word" (a quoted
# str or Path), "int", or "comment" (the text of a comment line, see `comment`).
_Span = tuple[int, int, str]


class Sh:
    """Shell text we trust: a literal written in our code, or built by `sh`.

    Not a str: it cannot be formatted into an f-string or added to one, so a
    raw value cannot be spliced into it; `str(x)` gives the text for the
    transport (and for tests).
    """

    __slots__ = ("_spans", "text")
    text: str
    _spans: tuple[_Span, ...]

    def __init__(self, text: LiteralString) -> None:
        if not isinstance(text, str):
            raise TypeError(f"Sh takes literal shell text, not {type(text).__name__}")
        if "\0" in text:
            raise ValueError("shell text cannot hold a NUL byte")
        self.text = text
        self._spans = ()

    @classmethod
    def _built(cls, text: str, spans: tuple[_Span, ...]) -> Sh:
        """Text made here from checked parts; `spans` are the quoted values in it."""
        _check_contexts(text, spans)
        made = object.__new__(cls)
        made.text = text
        made._spans = spans
        return made

    def __add__(self, other: Sh) -> Sh:
        if not isinstance(other, Sh):
            return NotImplemented
        return Sh("").join([self, other])

    def join(self, parts: Iterable[Sh]) -> Sh:
        """The parts with this text between them, as str.join (every part an Sh)."""
        pieces: list[str] = []
        spans: list[_Span] = []
        at = 0
        for n, part in enumerate(parts):
            if not isinstance(part, Sh):
                raise TypeError(f"Sh.join takes Sh parts, not {type(part).__name__}: "
                                "build it with sh()")
            if n:
                pieces.append(self.text)
                spans += _shift(self._spans, at)
                at += len(self.text)
            pieces.append(part.text)
            spans += _shift(part._spans, at)
            at += len(part.text)
        return Sh._built("".join(pieces), tuple(spans))

    def strip_newlines(self) -> Sh:
        """Without the newlines it starts and ends with (a quoted value is never one)."""
        head = len(self.text) - len(self.text.lstrip("\n"))
        text = self.text.strip("\n")
        return Sh._built(text, tuple(_shift(self._spans, -head)))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Sh({self.text!r})"

    def __format__(self, spec: str) -> NoReturn:
        raise TypeError("an Sh in an f-string or str.format() loses its quoting: use sh()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sh) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


LINES = Sh("\n")
SPACE = Sh(" ")


def sh(template: LiteralString, **values: str | int | PurePath | Sh) -> Sh:
    """`template` with each `{name}` replaced by its value, quoted by construction.

    str, int and Path values become one shell word (shlex.quote); an Sh goes
    in as it is. Anything else, a value the template does not use, a name it
    uses without a value, `{}`/`{0}`/`{a.b}`/`{a!r}`/`{a:>5}`, a NUL byte, and a
    value where sh would not read it as a word (see the module doc) are refused.
    """
    if not isinstance(template, str):
        raise TypeError(f"sh() takes a literal template, not {type(template).__name__}")
    pieces: list[str] = []
    spans: list[_Span] = []
    at = 0
    used: set[str] = set()
    for literal, field, spec, conversion in string.Formatter().parse(template):
        pieces.append(literal)
        at += len(literal)
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"sh(): placeholder {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} must be a plain {{name}}")
        if field not in values:
            raise KeyError(f"sh(): no value for {{{field}}}")
        used.add(field)
        value = values[field]
        if isinstance(value, Sh):
            text = value.text
            spans += _shift(value._spans, at)
        else:
            text = _quote(value)
            spans.append((at, at + len(text), "int" if isinstance(value, int) else "word"))
        pieces.append(text)
        at += len(text)
    unused = sorted(set(values) - used)
    if unused:
        raise KeyError(f"sh(): values not in the template: {', '.join(unused)}")
    return Sh._built("".join(pieces), tuple(spans))


def _quote(value: str | int | PurePath) -> str:
    """One value as one shell word; only str, int (not bool) and Path are values."""
    if isinstance(value, bool) or not isinstance(value, str | int | PurePath):
        raise TypeError(f"a shell value must be str, int or Path, not {type(value).__name__}"
                        + (" (an Sh goes into sh() as a value)"
                           if isinstance(value, Sh) else ""))
    text = str(value)
    if "\0" in text:
        raise ValueError(f"a shell value cannot hold a NUL byte: {text!r}")
    return shlex.quote(text)


def words(values: Iterable[str | int | PurePath]) -> Sh:
    """The values as shell words, quoted, separated by spaces (an argv)."""
    return SPACE.join(sh("{w}", w=v) for v in values)


def comment(text: str) -> Sh:
    """`#` and `text`: one comment line, inert in sh and bash whatever it holds.

    For what a comment carries that is not ours to quote: the #SBATCH lines of
    a batch script (sbatch reads them, bash skips them) and a note naming a
    value. A newline, carriage return or NUL would end the line, so they are
    refused; `sh` refuses the result anywhere a comment would not start.
    """
    if not isinstance(text, str):
        raise TypeError(f"comment() takes a str, not {type(text).__name__}")
    if any(c in text for c in "\n\r\0"):
        raise ValueError(f"a comment is one line: {text!r}")
    return Sh._built("#" + text, ((1, 1 + len(text), "comment"),) if text else ())


def _shift(spans: tuple[_Span, ...], by: int) -> list[_Span]:
    return [(s + by, e + by, kind) for s, e, kind in spans]


# --- the snippets the steps share -----------------------------------------------------

# Service manager: systemd when it is PID 1, else the SysV init script (what
# Debian's docker.io ships; also what the test hosts use).
DOCKERD_FUNCTIONS = Sh(r"""
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then wb_systemd=1; else wb_systemd=; fi
wb_docker_up() { docker info >/dev/null 2>&1; }
wb_docker_start() {
  if [ -n "$wb_systemd" ]; then systemctl start docker; else service docker start >/dev/null; fi
}
wb_docker_stop() {
  # docker.socket would start dockerd again on the next client call.
  if [ -n "$wb_systemd" ]; then systemctl stop docker.socket docker 2>/dev/null || systemctl stop docker
  else service docker stop >/dev/null; fi
}
wb_docker_reload() {
  # SIGHUP makes dockerd reread daemon.json (runtimes are reloadable; data-root is not).
  if [ -n "$wb_systemd" ]; then systemctl reload docker && echo "systemctl reload docker"
  elif service docker reload >/dev/null 2>&1; then echo "service docker reload"
  elif [ -s /var/run/docker.pid ] && kill -HUP "$(cat /var/run/docker.pid)"; then
    # Debian's /etc/init.d/docker has no reload action; this is what it would do.
    echo "SIGHUP to dockerd; its init script has no reload"
  else echo "ERROR: cannot reload dockerd: no systemd, no reload action, no /var/run/docker.pid"; return 1
  fi
}
wb_wait_for() {  # wb_wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  wb_n=$(( $1 * 5 )); shift
  while [ "$wb_n" -gt 0 ]; do "$@" && return 0; sleep 0.2; wb_n=$((wb_n - 1)); done
  return 1
}
""")


def atomic_write(path: str, content: bytes, *, expected_sha256: str | None,
                 new_mode: str = "644", new_owner: str | None = None,
                 validate: Sh | None = None) -> Sh:
    """Replace `path` with `content`: temp file in the same directory, its sha256
    checked against the content's, validated, fsynced, old file backed up (and the
    backup checked), then renamed over it.

    expected_sha256 is the file's hash when we read it (None: it did not exist).
    If it changed since, nothing is written: we never overwrite what we did not
    see. `validate` is a shell command run with the temp file as "$1".
    A new file gets new_mode/new_owner; an existing one keeps its mode and owner.

    Every step is checked: a write that fails (a full disk: ENOSPC) or lands
    other bytes, a backup that cannot be made, a rename that fails, each leaves
    the old file byte for byte and exits 5 with one line naming the file, and for
    a full disk the mount that is full ("no space left on /etc (...)").
    """
    expected = expected_sha256 or "absent"
    payload = base64.b64encode(content).decode()
    want = hashlib.sha256(content).hexdigest()
    validate_block = Sh("")
    if validate is not None:
        validate_block = sh("""
  wb_validate() {{ {validate}; }}
  if ! wb_out=$(wb_validate "$tmp" 2>&1); then
    echo "ERROR: new $p failed validation, old file kept: $(echo "$wb_out" | tail -n 3 | tr '\\n' ' ')"
    exit 4
  fi""", validate=validate)
    owner_cmd = sh('chown {owner} "$tmp"', owner=new_owner) if new_owner else Sh(":")
    return sh("""(
  LC_ALL=C; export LC_ALL  # tool errors in English: ENOSPC is recognised by its text
  p={path}; wb_size={size}
  # A symlinked file (dotfiles repo) is written where it points; the link stays.
  if [ -L "$p" ]; then p=$(readlink -f "$p"); fi
  d=$(dirname "$p"); b=$(basename "$p"); tmp=; bk=
  if [ -e "$p" ]; then wb_kept="the old file is unchanged"; else wb_kept="no file was written"; fi
  wb_fail() {{  # wb_fail WHAT ERROR: one line, the old file kept (the EXIT trap removes tmp)
    [ -n "$bk" ] && rm -f "$bk"
    case "$2" in
      *"No space left on device"*)
        # The mount that holds $d (the last line: the top one where mounts are stacked).
        wb_mnt=$(findmnt -n -o TARGET -T "$d" 2>/dev/null | tail -n 1); wb_mnt=${{wb_mnt:-$d}}
        wb_fs=$(findmnt -n -o FSTYPE -T "$d" 2>/dev/null | tail -n 1); wb_fs=${{wb_fs:-unknown}}
        wb_free=$(stat -f -c '%f %S' "$d" 2>/dev/null | awk '{{print $1 * $2}}')
        echo "ERROR: $p not written: no space left on $wb_mnt ($wb_fs, ${{wb_free:-?}} bytes free; $1 failed); $wb_kept" ;;
      *) echo "ERROR: $p not written: $1 failed: $(printf '%s' "$2" | tail -n 1); $wb_kept" ;;
    esac
    exit 5
  }}
  wb_sync() {{  # fsync one file (sync FILE: coreutils 8.24+); a failure is a failed write
    if ! wb_e=$(sync "$1" 2>&1); then
      case "$wb_e" in *"extra operand"*) sync ;; *) wb_fail "$2" "$wb_e" ;; esac
    fi
  }}
  if ! wb_e=$(mkdir -p "$d" 2>&1); then wb_fail "creating $d" "$wb_e"; fi
  if [ -e "$p" ]; then cur=$(sha256sum "$p" | cut -c1-64); else cur=absent; fi
  if [ "$cur" != {expected} ]; then
    echo "ERROR: $p changed since it was read; nothing written (run again)"; exit 3
  fi
  rm -f "$d/.$b.wb-"??????  # temp files of a writer that was killed (not by us: see Remote.run)
  if ! tmp=$(mktemp "$d/.$b.wb-XXXXXX" 2>&1); then t=$tmp; tmp=; wb_fail "creating a temp file" "$t"; fi
  trap 'rm -f "$tmp"' EXIT
  if ! wb_e=$( {{ printf '%s' {payload} | base64 -d > "$tmp"; }} 2>&1 ); then
    wb_fail "writing the temp file ($wb_size bytes)" "$wb_e"
  fi
  wb_sync "$tmp" "writing the temp file ($wb_size bytes)"
  wb_got=$(sha256sum "$tmp" | cut -c1-64)
  if [ "$wb_got" != {want} ]; then
    wb_fail "checking the temp file" "it holds other bytes than meant (sha256 $wb_got)"
  fi
  if [ -e "$p" ]; then
    if ! wb_e=$(chmod --reference="$p" "$tmp" 2>&1 && chown --reference="$p" "$tmp" 2>&1); then
      wb_fail "copying mode and owner" "$wb_e"
    fi
  elif ! wb_e=$(chmod {new_mode} "$tmp" 2>&1 && {owner_cmd} 2>&1); then
    wb_fail "setting mode and owner" "$wb_e"
  fi{validate_block}
  if [ -e "$p" ]; then
    # No backup, no write: the backup is made and checked before the old file goes.
    wb_bk="$p.bak-$(date -u +%Y%m%dT%H%M%SZ)"; n=1
    while [ -e "$wb_bk" ]; do wb_bk="$p.bak-$(date -u +%Y%m%dT%H%M%SZ)-$n"; n=$((n + 1)); done
    bk=$wb_bk
    if ! wb_e=$(cp -p "$p" "$bk" 2>&1); then wb_fail "writing the backup $bk" "$wb_e"; fi
    wb_sync "$bk" "writing the backup $bk"
    if [ "$(sha256sum "$bk" | cut -c1-64)" != "$cur" ]; then
      wb_fail "checking the backup $bk" "it is not a copy of $p"
    fi
  fi
  if ! wb_e=$(mv -f "$tmp" "$p" 2>&1); then wb_fail "renaming the temp file over $p" "$wb_e"; fi
  trap - EXIT
  if [ -n "$bk" ]; then echo "@@backup"; echo "$bk"; fi
  sync "$d" 2>/dev/null || sync
)""", path=path, size=len(content), expected=expected, payload=payload, want=want,
              new_mode=new_mode, owner_cmd=owner_cmd, validate_block=validate_block)


# How a new daemon.json is checked before it replaces the old one: dockerd
# itself where it can (--validate, dockerd >= 23); 20.10 cannot, so at least
# the bytes that landed on disk are parsed by a second parser (ours wrote them
# with json.dumps). Decided on the host, when writing, so reading facts does
# not pay for `dockerd --help`.
VALIDATE_DAEMON_JSON = Sh(
    'if dockerd --help 2>&1 | grep -q -- "--validate"; then '
    'dockerd --validate --config-file "$1"; '
    'elif command -v python3 >/dev/null 2>&1; then python3 -m json.tool "$1" >/dev/null; fi'
)


def sha256_hex(data: bytes | None) -> str | None:
    """The hash atomic_write compares against; None for a file that does not exist."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def replace_container(pull: Sh, name: str, run_command: Sh) -> list[Sh]:
    """Shell lines that replace container `name` with one started by `run_command`.

    `pull` (bootstrap/image_pull.py) gets the image first, and exits on failure,
    before the old container is removed: a bad image name or a registry outage
    must not cost the user the container they have.
    """
    return [
        pull,
        sh("docker rm -f {name} >/dev/null 2>&1 || true", name=name),
        sh("if ! out=$({run_command} 2>&1); then "
           'echo "ERROR: docker run failed: $(echo "$out" | tail -n 1)"; exit 1; fi',
           run_command=run_command),
    ]


# --- where a quoted value is a word ------------------------------------------------------

def _refuse(text: str, at: int, why: str) -> NoReturn:
    line = text[:at].count("\n") + 1
    context = text[max(0, at - 40):at].rsplit("\n", 1)[-1]
    raise ValueError(f"sh(): {why} (line {line}, after {context!r})")


def _not_quoted(where: str) -> str:
    return (f"a value inside {where} would not be quoted there; make it a word of its own "
            "or assign it to a variable")


def _check_contexts(text: str, spans: tuple[_Span, ...]) -> None:
    """Refuse a quoted value where sh would not read it as a word.

    A small lexer of POSIX sh quoting: single and double quotes, backslash,
    $(...) (with `case` patterns inside), $((...)), backticks, comments and
    here-documents. A value may sit in plain text or inside $(...) (also
    within double quotes); an int also in $((...)). A here-document is
    followed to the end of the text: no value may come after one.
    """
    if not spans:
        return
    starts = {s: kind for s, _, kind in spans}
    # What encloses the current character, innermost last.
    frames = [_Frame("plain")]
    escaped = False
    prev = "\n"
    i = 0
    while i < len(text):
        frame = frames[-1]
        kind = frame.kind
        if i in starts and starts[i] == "comment":
            # Its "#" must have started a comment: the text is then inert to the newline.
            if kind != "comment" or text[i - 1] != "#":
                _refuse(text, i, "a comment line must start where a word can")
        elif i in starts:
            if escaped:
                _refuse(text, i, _not_quoted("a backslash escape"))
            if kind == "arith" and starts[i] != "int":
                _refuse(text, i, _not_quoted("$((...)) (only an int goes there)"))
            if kind in _NOT_WORDS:
                _refuse(text, i, _not_quoted(_NOT_WORDS[kind]))
        c = text[i]
        step = 1
        if escaped:
            escaped = False
        elif kind == "sq":
            if c == "'":
                frames.pop()
        elif kind == "comment":
            if c == "\n":
                frames.pop()
        elif kind == "heredoc":
            pass  # to the end: no value after a here-document
        elif kind == "arith":
            if text.startswith("))", i) and frame.parens == 0:
                frames.pop()
                step = 2
            elif c in "()":
                frame.parens += 1 if c == "(" else -1
        elif c == "\\":
            escaped = True
        elif (kind, c) in (("dq", '"'), ("bq", "`")):
            frames.pop()
        elif text.startswith("$((", i):
            frames.append(_Frame("arith"))
            step = 3
        elif text.startswith("$(", i):
            frames.append(_Frame("cmd"))
            step = 2
        elif c == "`":
            frames.append(_Frame("bq"))
        elif kind in ("dq", "bq"):
            pass  # inside them only the above is special
        elif c == "'":
            frames.append(_Frame("sq"))
        elif c == '"':
            frames.append(_Frame("dq"))
        elif prev in _WORD_START and _keyword(text, i, "case"):
            frame.cases += 1
        elif prev in _WORD_START and _keyword(text, i, "esac"):
            frame.cases -= 1
        elif c == "#" and prev in _WORD_START:
            frames.append(_Frame("comment"))
        elif text.startswith("<<", i) and not text.startswith("<<<", i):
            frames.append(_Frame("heredoc"))
        elif kind == "cmd" and c == "(":
            frame.parens += 1
        elif kind == "cmd" and c == ")":
            if frame.parens:
                frame.parens -= 1
            elif not frame.cases:  # a case pattern's ")" does not end $(...)
                frames.pop()
        i += step
        prev = text[i - 1]


class _Frame:
    """One enclosing construct: plain (the script), cmd ($(...)), dq, sq, bq
    (backticks), arith ($((...))), comment or heredoc; with its open "(" and
    `case`s."""

    __slots__ = ("cases", "kind", "parens")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.parens = 0
        self.cases = 0


_NOT_WORDS = {"dq": "double quotes", "sq": "single quotes", "bq": "backticks",
              "comment": "a comment", "heredoc": "a here-document"}
_WORD_START = " \t\n;&|()"


def _keyword(text: str, i: int, word: str) -> bool:
    end = i + len(word)
    return text.startswith(word, i) and (end == len(text) or text[end] in " \t\n;&|)")
