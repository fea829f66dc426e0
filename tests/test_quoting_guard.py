"""The code holds to the quoting builder: remote shell is built one way, from literals.

Read with `ast`, not grep, so comments and strings do not count:

- `Sh(...)` takes one plain string literal and `sh(...)` a plain string literal
  as its template: no f-string, no `%` or `.format()`, no variable, no
  concatenation at run time can become trusted shell text. Values go in as
  keyword arguments, where `sh` quotes them.
- Only bootstrap/shell.py makes an Sh any other way (`_built`, `__new__`).
- The script builders (bootstrap/ and cluster/, except the builder itself and
  the files installed on the VM) never quote by hand: no `shlex.quote`,
  `shlex.join`, `pipes.quote`, no `q(...)`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILDER = REPO / "bootstrap" / "shell.py"
# Product code: everything that could build a script for a host or a cluster.
PRODUCT = ["bootstrap", "cluster", "components", "stacktools", "bench", "tests/support",
           "fabfile.py", "__main__.py"]
# Where scripts are built: no quoting by hand.
SCRIPT_BUILDERS = ["bootstrap", "cluster"]
ON_HOST = REPO / "bootstrap" / "onhost"


def python_files(roots: list[str]) -> Iterator[Path]:
    for root in roots:
        path = REPO / root
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _is_literal(node: ast.expr) -> bool:
    """A plain string literal (adjacent literals are one Constant to ast)."""
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def violations(source: str, path: str, *, builder: bool = False,
               script_builder: bool = False) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name == "Sh" and (len(node.args) != 1 or node.keywords
                                 or not _is_literal(node.args[0])):
                found.append(f"{where}: Sh(...) takes one string literal")
            if name == "sh" and (len(node.args) != 1 or not _is_literal(node.args[0])):
                found.append(f"{where}: sh(...) takes a string literal template; "
                             "values go in as keywords")
            if name == "__new__" and any(_name(a) == "Sh" for a in node.args) and not builder:
                found.append(f"{where}: an Sh is made by Sh() or sh() only")
            if script_builder and name == "q":
                found.append(f"{where}: q(...) quotes by hand; use sh()")
        if isinstance(node, ast.Attribute) and not builder and node.attr in ("_built", "_spans"):
            found.append(f"{where}: Sh.{node.attr} is the builder's own")
        if script_builder and isinstance(node, ast.Attribute) and node.attr in ("quote", "join") \
                and _name(node.value) in ("shlex", "pipes"):
            found.append(f"{where}: {_name(node.value)}.{node.attr} quotes by hand; use sh()")
        if script_builder and isinstance(node, ast.ImportFrom) and node.module in ("shlex",
                                                                                   "pipes"):
            for alias in node.names:
                if alias.name in ("quote", "join"):
                    found.append(f"{where}: from {node.module} import {alias.name}: use sh()")
    return found


def test_the_product_builds_shell_only_from_literals() -> None:
    found = []
    for path in python_files(PRODUCT):
        if ON_HOST in path.parents:
            continue
        relative = str(path.relative_to(REPO))
        found += violations(path.read_text(), relative, builder=path == BUILDER,
                            script_builder=any(relative.startswith(r + "/")
                                               for r in SCRIPT_BUILDERS) and path != BUILDER)
    assert found == []


def test_the_script_builders_were_found() -> None:
    """The scan sees the modules it guards (a moved package would pass silently)."""
    scanned = {str(p.relative_to(REPO)) for p in python_files(SCRIPT_BUILDERS)}
    for module in ("bootstrap/steps/container.py", "bootstrap/facts.py",
                   "bootstrap/container_spec.py", "cluster/batch_script.py",
                   "cluster/remote_scripts.py", "cluster/login_node.py"):
        assert module in scanned


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ('Sh(f"docker pull {image}")', "Sh(...) takes one string literal"),
        ('Sh("docker pull " + image)', "Sh(...) takes one string literal"),
        ('Sh("docker pull %s" % image)', "Sh(...) takes one string literal"),
        ('Sh("docker pull {}".format(image))', "Sh(...) takes one string literal"),
        ("Sh(TEMPLATE)", "Sh(...) takes one string literal"),
        ('sh(f"docker pull {image}")', "sh(...) takes a string literal template"),
        ('shell.sh("a {x}" + more, x=1)', "sh(...) takes a string literal template"),
        ("sh(template, image=image)", "sh(...) takes a string literal template"),
        ('Sh._built("id", ())', "Sh._built is the builder's own"),
        ("object.__new__(Sh)", "an Sh is made by Sh() or sh() only"),
        ("shlex.quote(image)", "shlex.quote quotes by hand"),
        ('" ".join(shlex.quote(w) for w in argv)', "shlex.quote quotes by hand"),
        ("from shlex import quote", "from shlex import quote"),
        ("q(image)", "q(...) quotes by hand"),
    ],
)
def test_the_guard_catches_each_way_around_the_builder(code: str, message: str) -> None:
    found = violations(code, "x.py", script_builder=True)
    assert any(message in f for f in found), found


def test_the_guard_lets_the_builders_own_forms_through() -> None:
    code = ('Sh("docker info")\nSh("a" "b")\nSh(r"""x\n""")\n'
            'sh("docker pull {image}", image=f"{registry}/{name}")\n'
            'sh("{a} && {b}", a=sh("x"), b=Sh("y"))\nshlex.split(line)\n')
    assert violations(code, "x.py", script_builder=True) == []
