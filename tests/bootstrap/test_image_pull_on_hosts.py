"""The container step pulls from a real registry (tests/support/registry.py): real
layers over HTTP from Debian's docker-registry, inside each test host on
127.0.0.1:15000, slowed where a test needs time to watch (tc tbf on the host's
loopback). What a user meets on a real pull, each with the container that was
running before left as it was: progress while it runs, a tag the registry does
not have, a registry that is down or hangs mid-layer, fab killed half-way, two
hosts at once, a disk too small, a host without script(1), hostile names."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrap.image_pull import manifest_command, pull_command
from bootstrap.options import BootstrapOptions
from bootstrap.pull_progress import human_bytes
from bootstrap.recap import Status
from bootstrap.remote import Remote
from bootstrap.runner import bootstrap_host
from tests.support.bootstrap_run import FAB, REPO, connect, fab, recap_counts, run_steps
from tests.support.host_fixtures import RegistryHost
from tests.support.hostile import hostile, markers_found
from tests.support.registry import ADDRESS, CLARA, LAYERED, StoredImage
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


# --- progress, and pulls that go wrong half-way ----------------------------------------------

PULL_LINE = re.compile(
    r"(?P<host>wb@10\.201\.\d+\.2)  container: pulling (?P<image>\S+): "
    r"(?P<done>\d+\.\d)/(?P<total>\d+\.\d) MB, (?P<layers>\d)/(?P<of>\d) layers, "
    r"(?P<rate>\d+(\.\d)? [kM]?B/s|extracting)")
PULLED_LINE = re.compile(
    r"(?P<host>wb@10\.201\.\d+\.2)  container: pulled (?P<image>\S+): (?P<size>\d+\.\d MB) "
    r"in (?P<took>\d+\.\ds|\dm\d\ds)(?P<here>, \d of \d layers already here)?")
SLOW_MBIT = 20  # the layered stand-in's 41 MB take about 17 s


def size_of(store_image: StoredImage) -> str:
    return human_bytes(store_image.compressed_bytes)


def test_a_slow_pull_shows_progress_then_size_and_time(registry_host: RegistryHost) -> None:
    host, registry = registry_host.host, registry_host.registry
    would = run_steps(host, ("container",), image=LAYERED, check=True)
    assert would.message("container") == (
        f"would create workbench from {LAYERED} (pulling {LAYERED} first)")
    registry.throttle(SLOW_MBIT)
    run = run_steps(host, STEPS, image=LAYERED, pull_progress_seconds=1.0)
    assert run.status("container") == "changed", run.lines
    pull_lines = [line for line in run.lines if "  container: pull" in line]
    *progress, last = pull_lines
    size = size_of(registry_host.store.images[LAYERED])
    assert size == "41.1 MB"
    assert progress, run.lines
    for line in progress:
        m = PULL_LINE.fullmatch(line)
        assert m and m["host"] == host.ssh_target and m["image"] == LAYERED, line
        assert f"{m['total']} MB" == size and m["of"] == "6", line
    # At most one line a second, over a pull that took under the step's time.
    assert len(progress) <= run.seconds("container") / 1.0
    done = PULLED_LINE.fullmatch(last)
    assert done and done["size"] == size and done["here"] is None, last
    assert run.message("container") == (
        f"created workbench from {LAYERED}; pulled {size} in {done['took']}")
    assert container(host)["Config"]["Image"] == LAYERED  # type: ignore[index]
    again = run_steps(host, STEPS, image=LAYERED)
    assert again.report.commands_sent == 1 and again.status("container") == "ok"
    assert not any(" pull" in line for line in again.lines)


def test_a_registry_that_hangs_mid_pull_is_stopped_after_the_stall_time(
        registry_host: RegistryHost) -> None:
    """docker pull waits forever on a registry that stops sending mid-layer (measured:
    still waiting after 240 s); the step stops it after pull_stall_seconds."""
    host, registry = registry_host.host, registry_host.registry
    before = started_from(host, CLARA)
    registry.throttle(SLOW_MBIT)
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        if "  container: pulling " in line and len([x for x in lines if "pulling" in x]) == 1:
            registry.pause()  # mid-layer: a few MB of 41 have come

    report = bootstrap_host(connect(host), BootstrapOptions(
        image=LAYERED, skip_check=True, wait_timeout=20, pull_progress_seconds=1.0,
        pull_stall_seconds=3), STEPS, emit=emit)
    result = report.result("container")
    assert result is not None and result.status is Status.FAILED, lines
    assert result.message == (f"cannot pull {LAYERED}: nothing came from the registry for 3s; "
                              "stopped the pull")
    assert not any(" pulled " in line for line in lines)
    assert host.out("pgrep -x docker || true").strip() == "", "no docker pull left behind"
    after = container(host)
    assert after is not None and after["Id"] == before["Id"] and after["State"]["Running"]
    registry.resume()
    rerun = run_steps(host, STEPS, image=LAYERED)
    assert rerun.status("container") == "changed", rerun.lines
    assert container(host)["Config"]["Image"] == LAYERED  # type: ignore[index]


def test_a_pull_killed_half_way_is_stopped_and_the_rerun_finishes_it(
        registry_host: RegistryHost, tmp_path: Path) -> None:
    """fab killed mid-pull (Ctrl-C, a lost link): the host stops the pull nobody
    watches any more and changes nothing; the next run pulls and starts the container,
    and says so (changed, pulled), never ok on a half image."""
    host, registry = registry_host.host, registry_host.registry
    registry.throttle(SLOW_MBIT)
    args = [FAB, "-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", "--image",
            LAYERED, "--skip-check"]
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path),
           "FABRIC_WORKBENCH_PULL_PROGRESS_SECONDS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        m = PULL_LINE.fullmatch(line.rstrip("\n"))
        if m and float(m["done"]) > 0:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    # The host's copy loop meets the closed channel at its next write and stops the pull.
    deadline = time.monotonic() + 30
    while host.out("pgrep -x docker || true").strip():
        assert time.monotonic() < deadline, "the pull goes on with nobody watching"
        time.sleep(0.2)
    assert container(host) is None
    assert host.exec(f"docker image inspect {LAYERED}", check=False).returncode != 0

    again = fab(*args[1:], env={"FABRIC_WORKBENCH_PULL_PROGRESS_SECONDS": "1"}, home=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    step = next(ln for ln in again.stdout.splitlines() if re.match(r"\S+  container\s", ln))
    assert " changed " in step and f"; pulled {size_of(registry_host.store.images[LAYERED])} in " \
        in step, step
    assert container(host)["Config"]["Image"] == LAYERED  # type: ignore[index]
    third = fab(*args[1:], home=tmp_path)
    assert recap_counts(third.stdout)[host.ssh_target]["changed"] == 0, third.stdout
    assert recap_counts(third.stdout)[host.ssh_target]["commands"] == 1


def test_two_hosts_pulling_at_once_print_whole_lines_that_name_their_host(
        two_registry_hosts: list[RegistryHost], tmp_path: Path) -> None:
    for rh in two_registry_hosts:
        rh.registry.throttle(SLOW_MBIT)
    targets = [rh.host.ssh_target for rh in two_registry_hosts]
    proc = fab("-H", ",".join(targets), "-i", str(two_registry_hosts[0].host.key_path),
               "bootstrap", "--image", LAYERED, "--skip-check", home=tmp_path,
               env={"FABRIC_WORKBENCH_PULL_PROGRESS_SECONDS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    size = size_of(two_registry_hosts[0].store.images[LAYERED])
    for target in targets:
        mine = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"{target}  container: ")]
        *progress, last = mine
        assert progress, proc.stdout
        numbers = []
        for line in progress:
            m = PULL_LINE.fullmatch(line)
            assert m and m["host"] == target, line
            numbers.append((float(m["done"]), int(m["layers"])))
        assert numbers == sorted(numbers)
        done = PULLED_LINE.fullmatch(last)
        assert done and done["size"] == size, last
    # Every line names one host at most once: no line holds another's tail.
    for line in proc.stdout.splitlines():
        assert sum(line.count(t) for t in targets) <= 1 or line.startswith("  tunnel:"), line
    for line in proc.stdout.splitlines():
        if " pull" in line and "container:" in line:
            assert PULL_LINE.fullmatch(line) or PULLED_LINE.fullmatch(line), line


# --- what else a host may hold against a pull -----------------------------------------------

def test_a_disk_too_small_for_the_image_is_one_line_and_keeps_the_container(
        registry_host: RegistryHost) -> None:
    """Docker's root on a 24 MB tmpfs (in this host's own mount namespace): the clara
    stand-in fits, the 41 MB layered one does not."""
    host = registry_host.host
    host.exec("service docker stop >/dev/null && "
              "mount -t tmpfs -o size=24m wbsmall /var/lib/docker && "
              "service docker start >/dev/null")
    deadline = time.monotonic() + 30
    while host.exec("docker info >/dev/null 2>&1", check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    before = started_from(host, CLARA)
    run = run_steps(host, STEPS, image=LAYERED)
    assert run.status("container") == "failed", run.lines
    message = run.message("container")
    assert message.startswith(f"cannot pull {LAYERED}: ") and "\n" not in message
    assert "no space left on device" in message, message
    after = container(host)
    assert after is not None and after["Id"] == before["Id"] and after["State"]["Running"]
    assert host.exec(f"docker image inspect {LAYERED}", check=False).returncode != 0


def test_without_script_the_pull_is_silent_but_works(registry_host: RegistryHost) -> None:
    """script(1) gives docker pull its terminal; a host without it (util-linux's
    bsdutils is essential on Debian and Ubuntu, so rarely) pulls as before."""
    host = registry_host.host
    host.exec("rm /usr/bin/script")  # the host's /usr is an overlay: this host only
    run = run_steps(host, STEPS, image=CLARA, pull_progress_seconds=1.0)
    assert run.status("container") == "changed", run.lines
    assert run.message("container") == f"created workbench from {CLARA}"
    assert not any("  container: pull" in line for line in run.lines)
    missing = run_steps(host, STEPS, image=f"{ADDRESS}/clara-standin:no-such-tag")
    assert missing.message("container") == (
        f"cannot pull {ADDRESS}/clara-standin:no-such-tag: manifest for "
        f"{ADDRESS}/clara-standin:no-such-tag not found: manifest unknown: manifest unknown")


@pytest.mark.parametrize(("what", "value"), hostile(0), ids=[w for w, _ in hostile(0)])
def test_a_hostile_image_name_is_refused_up_front_or_reaches_docker_literally(
        registry_host: RegistryHost, what: str, value: str) -> None:
    """--image refuses all of these before connecting (test_hostile_strings.py); the
    pull's shell, run here with each anyway, hands docker the bytes as given, through
    two shells (ours, and script's $SHELL -c): docker refuses the name, nothing runs."""
    assert markers_found() == []
    with pytest.raises(ValueError, match=r"^--image must be a preset"):
        BootstrapOptions(image=value)
    host = registry_host.host
    remote = Remote(connect(host))
    remote.connect(10)
    try:
        result = remote.run(pull_command(value, manifest=manifest_command(
            value, host.docker_info())))
    finally:
        remote.close()
    assert result.exit_code == 1
    assert result.error_line().startswith("cannot pull ")
    if "\n" not in value:
        assert result.error_line().startswith(f"cannot pull {value}: invalid reference format")
    assert markers_found() == []
