"""Secrets on real test hosts: --chmod-home leaves credentials private, the compose
binary must match the sha256 pinned in code, and the nvidia runtime path written to
daemon.json is the one the host has."""

from __future__ import annotations

import hashlib
import json
import shlex

import pytest

from bootstrap.steps import compose, umask
from tests.support.bootstrap_run import STANDIN_IMAGE, run_steps
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


def serve(host: TestHost, files: dict[str, bytes]) -> str:
    """An HTTP server on the host's own loopback serving `files`; returns its base URL."""
    root = "/run/release"
    for name, data in files.items():
        host.write_file(f"{root}/{name}", data, mode="644")
    host.exec(f"cd {root} && setsid python3 -m http.server 18080 --bind 127.0.0.1 "
              ">/run/release.log 2>&1 < /dev/null &")
    host.exec("for i in $(seq 50); do curl -fs http://127.0.0.1:18080/ >/dev/null && exit 0; "
              "sleep 0.1; done; exit 1")
    return "http://127.0.0.1:18080"


COMPOSE_STANDIN = b"""#!/bin/sh
# Docker Compose stand-in built by the test: answers the plugin handshake and `version`.
if [ "$1" = docker-cli-plugin-metadata ]; then
  echo '{"SchemaVersion":"0.1.0","Vendor":"tests","Version":"v2.29.7","ShortDescription":"x"}'
  exit 0
fi
[ "$1" = compose ] && shift
[ "$1" = version ] && echo "Docker Compose version v2.29.7 (test stand-in)"
"""


def no_apt_compose(host: TestHost) -> None:
    """No compose package in apt: the step falls back to the release binary."""
    host.exec("rm -f /etc/apt/sources.list.d/*.list && rm -rf /var/lib/apt/lists/* && "
              "rm -f /usr/libexec/docker/cli-plugins/docker-compose")


def test_compose_binary_with_a_wrong_digest_is_refused(bare_host: TestHost,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    host = bare_host
    no_apt_compose(host)
    arch = host.out("uname -m").strip()
    # The server answers with a binary that is not the release's (a mirror, a proxy,
    # an attacker): the real pins, in code, do not match it.
    base = serve(host, {f"v2.29.7/docker-compose-linux-{arch}": b"#!/bin/sh\necho evil\n"})
    monkeypatch.setattr(compose, "DOWNLOAD_BASE", base)
    run = run_steps(host, ("compose",))
    assert run.status("compose") == "failed"
    got = hashlib.sha256(b"#!/bin/sh\necho evil\n").hexdigest()
    assert run.message("compose") == (
        f"{base}/v2.29.7/docker-compose-linux-{arch}: sha256 {got} is not the pinned "
        f"{compose.COMPOSE_SHA256[('v2.29.7', arch)]}; not installed")
    assert host.exec("ls -A /usr/local/lib/docker/cli-plugins", check=False).stdout == b""


def test_compose_binary_with_the_pinned_digest_is_installed(bare_host: TestHost,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    host = bare_host
    no_apt_compose(host)
    arch = host.out("uname -m").strip()
    base = serve(host, {f"v2.29.7/docker-compose-linux-{arch}": COMPOSE_STANDIN})
    monkeypatch.setattr(compose, "DOWNLOAD_BASE", base)
    monkeypatch.setitem(compose.COMPOSE_SHA256, ("v2.29.7", arch),
                        hashlib.sha256(COMPOSE_STANDIN).hexdigest())
    run = run_steps(host, ("compose",))
    assert run.status("compose") == "changed", run.lines
    assert run.message("compose") == (
        "installed: Docker Compose version v2.29.7 (test stand-in) via "
        f"{base}/v2.29.7/docker-compose-linux-{arch} (sha256 pinned in code)")
    assert host.read_file("/usr/local/lib/docker/cli-plugins/docker-compose") == COMPOSE_STANDIN
    assert run_steps(host, ("compose",)).status("compose") == "ok"


def test_compose_on_an_architecture_without_a_pin_is_refused(bare_host: TestHost,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    host = bare_host
    no_apt_compose(host)
    arch = host.out("uname -m").strip()
    monkeypatch.delitem(compose.COMPOSE_SHA256, ("v2.29.7", arch))
    run = run_steps(host, ("compose",))
    assert run.status("compose") == "failed"
    assert run.message("compose") == (
        f"no sha256 pinned for Docker Compose v2.29.7 on {arch} (pinned: "
        + ", ".join(a for (_, a) in compose.COMPOSE_SHA256) + "); not downloading it: "
        "install the docker-compose-plugin package instead")


def test_nvidia_runtime_path_is_the_hosts(host: TestHost) -> None:
    host.exec("mv /usr/bin/nvidia-container-runtime /usr/local/bin/nvidia-container-runtime")
    run = run_steps(host, ("nvidia-runtime",))
    assert run.status("nvidia-runtime") == "changed", run.lines
    config = json.loads(host.read_file("/etc/docker/daemon.json") or b"")
    assert config["runtimes"]["nvidia"] == {"path": "/usr/local/bin/nvidia-container-runtime",
                                            "runtimeArgs": []}
    # dockerd runs a container with it: the runtime is where daemon.json says.
    started = host.exec(f"docker run --rm --runtime=nvidia {STANDIN_IMAGE} true", check=False)
    assert started.returncode == 0, started.stderr
    again = run_steps(host, ("nvidia-runtime",))
    assert again.message("nvidia-runtime") == (
        "runtimes.nvidia in /etc/docker/daemon.json (ours); dockerd lists it")


def test_nvidia_ctk_form_is_accepted_as_configured(bare_host: TestHost) -> None:
    """What `nvidia-ctk runtime configure --runtime=docker` writes: the bare name, args []."""
    host = bare_host
    ctk = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    host.write_file("/etc/docker/daemon.json", json.dumps(ctk, indent=4).encode())
    host.exec("kill -HUP $(cat /var/run/docker.pid)")
    first = run_steps(host, ("nvidia-runtime",))
    assert first.status("nvidia-runtime") in ("ok", "changed"), first.lines
    assert json.loads(host.read_file("/etc/docker/daemon.json") or b"") == ctk
    assert run_steps(host, ("nvidia-runtime",)).message("nvidia-runtime") == (
        "runtimes.nvidia in /etc/docker/daemon.json (nvidia-ctk form); dockerd lists it")
