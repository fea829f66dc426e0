"""Hostile strings through every bootstrap option that reaches a shell on the host.

Each value either is refused before anything connects (one line naming the
option; `fab` exits 2), or reaches the host byte for byte. In both cases none
of the marker files the values try to create (/tmp/pwned-...) appears, on the
test host or on this box (the test hosts share this box's /tmp). What a
demanding user expects, option by option:

- --image: refused unless a preset or an image reference by the rule the
  stack applies to containerImage (components.spec.is_image_reference). An
  image name never holds $( ), quotes, spaces or a leading dash; Docker would
  refuse it too, but only after the pull, on the host.
- --name: refused unless Docker's own container-name rule
  ([a-zA-Z0-9][a-zA-Z0-9_.-]+): `docker run` would refuse it after the old
  container was removed.
- --jupyter-token: refused unless 16+ ASCII letters and digits (it ends up in
  a URL and an env file).
- --workspace: literal. `~/it's "my" work $(x)` is a directory a user may
  have; it is created with exactly that name and mounted at /workspace.
  Refused: ':' (docker -v's separator), a newline, NUL.
- --pip and --requirements: literal, line for line, in the requirements file
  the host receives; pip reads it and refuses what is no requirement with its
  own message. Refused: a newline inside one --pip (a second, unseen line) and
  -r/-c lines (files that are not uploaded).
- --data-mount: literal (a mount point named `/mnt/d-it's-"q"-$(x)` is
  mounted there), except white space and backslashes, which /etc/fstab would
  read as a field end or an escape: refused.
- --data-device: literal: the step looks for exactly that path (and formats
  the disk a hostile-named link points to).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.options import BootstrapOptions, requirement_lines
from bootstrap.recap import Status
from bootstrap.runner import bootstrap_host
from tests.support import python_image, testhosts
from tests.support.bootstrap_run import STANDIN_IMAGE, connect, fab, recap_counts
from tests.support.hostile import RUN, hostile, markers_found, one_line
from tests.support.real_parts import skip_or_fail
from tests.support.testhosts import TestHost

ALL = hostile(0)


@pytest.fixture(autouse=True)
def no_markers() -> Iterator[None]:
    """No marker before, none after. The test hosts' /tmp is this box's /tmp (their
    namespaces overlay /etc, /home, /root, /usr and /var only), so one look sees both."""
    assert markers_found() == []
    yield
    assert markers_found() == []


# --- refused up front: one line, before anything connects ----------------------------------

def refusal(**options: object) -> str:
    with pytest.raises(ValueError) as failure:
        BootstrapOptions(**options)  # type: ignore[arg-type]
    message = str(failure.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("what", "value"), ALL, ids=[w for w, _ in ALL])
def test_image_name_and_token_are_refused_with_one_line_naming_the_option(what: str, value: str
                                                                          ) -> None:
    assert refusal(image=value).startswith("--image must be a preset (clara-train, ")
    assert repr(value) in refusal(image=value)
    assert refusal(container_name=value).startswith("--name must be a Docker container name")
    assert refusal(jupyter_token=value * 4) == (
        "--jupyter-token (or WORKBENCH_JUPYTER_TOKEN) must be at least 16 letters and digits")


@pytest.mark.parametrize(("what", "value"), ALL, ids=[w for w, _ in ALL])
def test_paths_and_packages_are_taken_as_given_or_refused_where_they_cannot_be(
        what: str, value: str, tmp_path: Path) -> None:
    if "\n" in value:
        assert refusal(workspace="~/" + value).startswith("--workspace is mounted with")
        assert refusal(data_mount="/mnt/" + value).startswith(
            "--data-mount must not hold control characters")
        assert refusal(data_device="/dev/" + value).startswith("--data-device must be a /dev")
        with pytest.raises(ValueError, match=r"^--pip .*: one requirement per --pip"):
            requirement_lines([value], None)
        return
    options = BootstrapOptions(workspace="~/" + value, data_device="/dev/" + value)
    assert (options.workspace, options.data_device) == ("~/" + value, "/dev/" + value)
    assert requirement_lines([value], None) == (value.strip(),)
    # fstab(5) escapes: a space arrives as \040, the rest as written (the data-volume
    # step writes the line; tests/bootstrap/test_data_volume_hazards_on_hosts.py mounts one).
    assert BootstrapOptions(data_mount="/mnt/" + value).data_mount == "/mnt/" + value
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{value}\n")
    if value.startswith("-r"):
        with pytest.raises(ValueError, match="points at another file"):
            requirement_lines([], str(requirements))
    else:
        assert requirement_lines([], str(requirements)) == (value,)


def test_workspace_with_a_colon_is_refused_and_a_mount_with_a_backslash_is_escaped() -> None:
    from bootstrap.steps.data_volume import fstab_escape

    assert refusal(workspace="/srv/a:b").startswith("--workspace is mounted with `docker run -v")
    assert BootstrapOptions(data_mount="/mnt/a\\040b").data_mount == "/mnt/a\\040b"
    assert fstab_escape("/mnt/a\\040b c") == "/mnt/a\\134040b\\040c"
    assert refusal(jupyter_token="ａ" * 16).startswith("--jupyter-token")  # full-width letters


# --- through the real fab CLI against a real host ------------------------------------------

def accepted_logins(host: TestHost) -> int:
    """sshd's count of accepted logins on this host: whether anything connected."""
    return (host.dir / "sshd.log").read_text().count("Accepted publickey")


@pytest.fixture(scope="module")
def untouched_host(real_parts: None) -> Iterator[TestHost]:
    """One host for every refusal: nothing may ever reach it."""
    h = testhosts.start_host(image=False)
    try:
        yield h
    finally:
        testhosts.stop_host(h)


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "value"), [
    ("--image", ALL[0][1]), ("--image", ALL[1][1]), ("--image", ALL[5][1]),
    ("--image", ALL[6][1]), ("--name", ALL[7][1]), ("--jupyter-token", ALL[9][1] * 4),
])
def test_fab_refuses_at_the_command_line_and_nothing_reaches_the_host(
        untouched_host: TestHost, tmp_path: Path, flag: str, value: str) -> None:
    host = untouched_host
    logins = accepted_logins(host)
    image = [] if flag == "--image" else ["--image", STANDIN_IMAGE]
    proc = fab("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", *image,
               f"{flag}={value}", home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"{flag} "), proc.stderr
    assert accepted_logins(host) == logins, "fab connected to the host"
    assert host.read_file("/etc/docker/daemon.json") is None
    assert host.out("docker ps -aq") == ""


@pytest.mark.slow
def test_workspace_pip_and_requirements_arrive_byte_for_byte(host: TestHost,
                                                             tmp_path: Path) -> None:
    """One real `fab bootstrap`: the workspace is created and mounted under its exact name,
    every requirement line lands as given, and the container's real pip reads the first
    one and refuses it with its own message."""
    why = python_image.python_missing()
    if why:
        skip_or_fail(why)
    python_image.import_python_image(host)
    name = "ws " + one_line(10)
    pip = [value for _, value in hostile(20) if "\n" not in value]
    file_lines = [value for _, value in hostile(30) if "\n" not in value
                  and not value.startswith("-")]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{line}\n" for line in file_lines))
    logins = accepted_logins(host)
    proc = fab("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap",
               "--image", python_image.PYTHON_STANDIN, "--skip-check", "--autostop-minutes", "0",
               "--workspace", f"~/{name}", *(f"--pip={spec}" for spec in pip),
               "--requirements", str(requirements), home=tmp_path)
    out = proc.stdout
    assert accepted_logins(host) == logins + 1
    counts = recap_counts(out)[host.ssh_target]
    assert counts["failed"] == 1, out  # packages: pip refuses these lines
    step = next(ln for ln in out.splitlines() if " packages " in ln)
    assert "failed" in step and "pip install in workbench failed" in step, step
    # pip got the first line as it was given (and says so in its own words).
    assert f"Invalid requirement: '{pip[0]}'" in step, step

    workspace = f"/home/wb/{name}"
    mounts = host.out("docker inspect -f '{{json .Mounts}}' workbench")
    assert [(m["Source"], m["Destination"]) for m in json.loads(mounts)] == [
        (workspace, "/workspace")]
    assert host.out(f"stat -c %U {shlex.quote(workspace)}").strip() == "wb"
    uploaded = host.read_file(shlex.quote(f"{workspace}/.gpu-workbench/python/requirements.txt"))
    assert uploaded == "".join(f"{line}\n" for line in [*pip, *file_lines]).encode()
    # The container sees the same directory.
    assert host.out("docker exec workbench ls -A /workspace/.gpu-workbench/python").split() == [
        "requirements.txt"]


@pytest.fixture
def hostile_link(loop_disk: str) -> Iterator[str]:
    """A link to the loop disk whose path holds every hostile piece (a newline excepted).

    Under /dev/shm: --data-device takes /dev paths, and the test hosts share this
    box's /dev; the directory is removed afterwards.
    """
    top = Path(f"/dev/shm/wb-hostile-{RUN}")
    link = top / one_line(40)
    link.parent.mkdir(parents=True)
    try:
        link.symlink_to(loop_disk)
        yield str(link)
    finally:
        subprocess.run(["rm", "-rf", "--", str(top)], check=False)


@pytest.mark.slow
def test_data_device_and_mount_arrive_literally(bare_host: TestHost, loop_disk: str,
                                                hostile_link: str) -> None:
    host = bare_host

    def run(**options: object) -> tuple[Status, str]:
        options.setdefault("wait_timeout", 1.0)
        report = bootstrap_host(connect(host), BootstrapOptions(**options),  # type: ignore[arg-type]
                                ("data-volume",), emit=lambda _: None)
        result = report.result("data-volume")
        assert result is not None, report.steps
        return result.status, result.message

    # A device that is not there: the step looked for exactly this path.
    missing = "/dev/" + one_line(50)
    assert run(data_device=missing) == (Status.FAILED,
                                        (f"data device {missing} not found after 1s; "
                                         "not putting the workspace on the root disk"))

    # A mount point with every hostile piece that fstab can hold (no white space).
    mount = "/mnt/d-" + "-".join(value.replace(" ", "") for _, value
                                 in hostile(60, space="${IFS}") if "\n" not in value)
    status, message = run(data_device=hostile_link, data_mount=mount)
    assert status is Status.CHANGED, message
    assert f"formatted blank {hostile_link} as ext4" in message
    assert host.out(f"findmnt -n -o SOURCE --mountpoint {shlex.quote(mount)}").strip() == \
        loop_disk
    fstab = host.out("cat /etc/fstab").splitlines()
    assert any(line.split()[1:2] == [mount] for line in fstab if line.startswith("UUID=")), fstab
    assert host.out(f"stat -c %U {shlex.quote(mount + '/workspace')}").strip() == "wb"
    # And the second run finds it all in place, by the same exact names.
    assert run(data_device=hostile_link, data_mount=mount)[0] is Status.OK
    assert os.path.islink(hostile_link)
