"""The container step pulls from a real registry (tests/support/registry.py): real
layers over HTTP from Debian's docker-registry, inside each test host on
127.0.0.1:15000. What a user meets on a real pull, each with the container that
was running before left as it was: a tag the registry does not have, a registry
that is down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.bootstrap_run import run_steps
from tests.support.host_fixtures import RegistryHost
from tests.support.registry import ADDRESS, CLARA, LAYERED
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow
STEPS = ("nvidia-runtime", "container")


def container(host: TestHost) -> dict[str, Any] | None:
    """`docker inspect workbench`, or None when there is none."""
    proc = host.exec("docker inspect workbench", check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def started_from(host: TestHost, image: str) -> dict[str, Any]:
    """Run the container step with `image`; it must start. Returns the container."""
    run = run_steps(host, STEPS, image=image)
    assert run.status("container") == "changed", run.lines
    inspect = container(host)
    assert inspect is not None and inspect["State"]["Running"], inspect
    return inspect


def test_an_image_only_the_registry_has_is_pulled_and_started(registry_host: RegistryHost
                                                               ) -> None:
    host = registry_host.host
    assert host.exec(f"docker image inspect {CLARA}", check=False).returncode != 0
    inspect = started_from(host, CLARA)
    assert inspect["Config"]["Image"] == CLARA
    # The layers came from this registry: the local image has its manifest digest.
    digests = json.loads(host.out(f"docker image inspect -f '{{{{json .RepoDigests}}}}' {CLARA}"))
    assert digests == [f"{ADDRESS}/clara-standin@{registry_host.store.images[CLARA].digest}"]
    again = run_steps(host, STEPS, image=CLARA)
    assert again.status("container") == "ok" and again.report.commands_sent == 1


def test_a_missing_tag_is_one_line_with_the_registrys_answer(registry_host: RegistryHost
                                                              ) -> None:
    host = registry_host.host
    before = started_from(host, CLARA)
    missing = f"{ADDRESS}/clara-standin:no-such-tag"
    run = run_steps(host, STEPS, image=missing)
    assert run.status("container") == "failed", run.lines
    message = run.message("container")
    assert "\n" not in message
    assert message.startswith(f"cannot pull {missing}: ")
    assert f"manifest for {missing} not found: manifest unknown" in message
    after = container(host)
    assert after is not None and after["Id"] == before["Id"] and after["State"]["Running"]
    assert host.out("docker ps -aq").split() == [str(before["Id"])[:12]]


def test_a_registry_that_is_down_is_one_line_and_starts_nothing(registry_host: RegistryHost
                                                                 ) -> None:
    host = registry_host.host
    before = started_from(host, CLARA)
    registry_host.registry.stop()
    run = run_steps(host, STEPS, image=LAYERED)
    assert run.status("container") == "failed", run.lines
    message = run.message("container")
    assert "\n" not in message
    assert message.startswith(f"cannot pull {LAYERED}: ")
    assert f"dial tcp {ADDRESS}: connect: connection refused" in message
    after = container(host)
    assert after is not None and after["Id"] == before["Id"] and after["State"]["Running"]
    assert host.exec(f"docker image inspect {LAYERED}", check=False).returncode != 0
