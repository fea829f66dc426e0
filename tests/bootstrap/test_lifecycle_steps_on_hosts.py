"""The data-volume and autostop steps over real SSH on real test hosts (no GPU, no systemd)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from bootstrap.options import BootstrapOptions
from bootstrap.recap import Status
from bootstrap.runner import bootstrap_host
from bootstrap.steps import autostop, data_volume
from bootstrap.steps.base import StepFailed, StepOutcome
from tests.support import testhosts
from tests.support.azure_standin import AzureStandin
from tests.support.bootstrap_run import connect
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow
ONHOST = Path(autostop.__file__).resolve().parent.parent / "onhost"
MOUNT = "/mnt/data"  # /mnt is each test host's own; /data would be this machine's


@pytest.fixture
def host(bare_host: TestHost) -> TestHost:
    """These steps start no container, so the host needs no stand-in image."""
    return bare_host


def run_step(host: TestHost, step: object, **options: object) -> StepOutcome:
    """The runner with this one step (after wait, facts in one command), over real SSH."""
    options.setdefault("wait_timeout", 20.0)
    options.setdefault("data_mount", MOUNT)
    name = step.STEP.name  # type: ignore[attr-defined]
    report = bootstrap_host(connect(host), BootstrapOptions(**options),  # type: ignore[arg-type]
                            (name,), emit=lambda _: None)
    result = report.result(name)
    assert result is not None, f"{name} did not run: {report.steps}"
    if result.status is Status.FAILED:
        raise StepFailed(result.message)
    return StepOutcome(result.status, result.message)


def test_blank_disk_is_formatted_once_and_mounted_by_uuid(host: TestHost, loop_disk: str) -> None:
    first = run_step(host, data_volume, data_device=loop_disk)
    assert first.status is Status.CHANGED, first.message
    assert f"formatted blank {loop_disk} as ext4" in first.message
    uuid = host.out(f"blkid -s UUID -o value {loop_disk}").strip()
    assert host.out(f"findmnt -n -o SOURCE,FSTYPE --mountpoint {MOUNT}").split() == [
        loop_disk, "ext4"]
    fstab = (host.read_file("/etc/fstab") or b"").decode()
    assert f"UUID={uuid} {MOUNT} ext4 defaults,nofail" in fstab
    assert host.out(f"stat -c %U {MOUNT}/workspace").strip() == host.user

    again = run_step(host, data_volume, data_device=loop_disk)
    assert again.status is Status.OK, again.message
    assert "nothing formatted" in again.message
    assert host.out(f"blkid -s UUID -o value {loop_disk}").strip() == uuid


def test_data_survives_a_new_machine(real_parts: None, loop_disk: str) -> None:
    """destroy-and-up on a real filesystem: a file written on one machine is on the
    next machine that gets the kept disk, which is mounted, never formatted."""
    first = testhosts.start_host(image=False)
    try:
        assert run_step(first, data_volume, data_device=loop_disk).status is Status.CHANGED
        first.exec(f"su {first.user} -c 'echo results-v1 > {MOUNT}/workspace/model.txt'")
    finally:
        testhosts.stop_host(first)  # its mount namespace, and the mount, go with it
    second = testhosts.start_host(image=False)
    try:
        outcome = run_step(second, data_volume, data_device=loop_disk)
        assert outcome.status is Status.CHANGED
        assert "formatted" not in outcome.message and f"mounted at {MOUNT}" in outcome.message
        assert second.out(f"cat {MOUNT}/workspace/model.txt") == "results-v1\n"
    finally:
        testhosts.stop_host(second)


def test_a_disk_with_another_filesystem_is_never_formatted(host: TestHost,
                                                           loop_disk: str) -> None:
    subprocess.run(["mkswap", "-q", loop_disk], check=True)
    before = hashlib.sha256(Path(loop_disk).read_bytes()[:1 << 20]).hexdigest()
    with pytest.raises(StepFailed, match=f"{loop_disk} holds swap, not ext4; not formatting"):
        run_step(host, data_volume, data_device=loop_disk)
    after = hashlib.sha256(Path(loop_disk).read_bytes()[:1 << 20]).hexdigest()
    assert before == after


def test_no_disk_attached_is_skipped(host: TestHost) -> None:
    outcome = run_step(host, data_volume)
    assert outcome.status is Status.SKIPPED
    assert "no data volume attached" in outcome.message


def _installed(host: TestHost) -> dict[str, tuple[bytes | None, str]]:
    paths = (autostop.SCRIPT, autostop.COMMAND, autostop.CONFIG, autostop.SERVICE,
             autostop.TIMER)
    return {p: (host.read_file(p), host.out(f"stat -c %a {p} 2>/dev/null || true").strip())
            for p in paths}


def test_autostop_installs_and_enables_the_timer_once(host: TestHost) -> None:
    first = run_step(host, autostop, cloud="gcp", autostop_minutes=45)
    assert first.status is Status.CHANGED, first.message
    assert first.message.startswith(
        "stop after 45 idle minutes (gcp: poweroff; a check every 5 min): wrote ")
    files = _installed(host)
    assert files[autostop.SCRIPT] == ((ONHOST / "workbench_idle_check.py").read_bytes(), "755")
    assert files[autostop.COMMAND] == ((ONHOST / "workbench-autostop").read_bytes(), "755")
    assert files[autostop.SERVICE] == (
        (ONHOST / "workbench-idle-check.service").read_bytes(), "644")
    # The timer's interval scales with the window: 45 minutes, 9 checks 5 minutes apart.
    timer, mode = files[autostop.TIMER]
    assert mode == "644" and timer == autostop.timer_unit(45)
    assert b"OnStartupSec=300s\nOnUnitActiveSec=300s\n" in timer
    config, mode = files[autostop.CONFIG]
    assert mode == "644" and config is not None
    assert b"cloud = gcp\nminutes = 45\ninterval_seconds = 300\n" in config
    assert b"jupyter_token_file = /home/wb/.config/gpu-workbench/jupyter_token" in config
    assert b"postpone_file = /home/wb/workspace/.gpu-workbench/autostop-postpone" in config
    assert host.out(f"readlink {autostop.WANTS_LINK}").strip() == autostop.TIMER
    # The installed program runs on the host's own python3 and decides; the SSH
    # session the bootstrap left behind may still show, so only the shape is checked.
    check = host.exec(f"python3 {autostop.SCRIPT} check --dry-run --state /tmp/state.json",
                      check=False)
    assert check.returncode == 0, check.stderr
    out = check.stdout.decode()
    assert "gpu: no reading: nvidia-smi" in out or "gpu: not watched" in out
    assert "decision: " in out and "dry run: state not written" in out
    status = host.exec(f"su {host.user} -c 'workbench-autostop status'", check=False)
    assert status.returncode == 0, status.stderr
    assert "autostop: poweroff after 45 min idle (gcp); a check every 5 min" in \
        status.stdout.decode()

    again = run_step(host, autostop, cloud="gcp", autostop_minutes=45)
    assert again.status is Status.OK
    assert again.message == ("stop after 45 idle minutes (gcp: poweroff; a check every 5 min); "
                             "no check yet since boot")


def test_autostop_repairs_modes_and_turns_off(host: TestHost) -> None:
    with AzureStandin(host=host.outside_ip) as azure:
        urls = {"azure_imds_url": azure.url, "azure_arm_url": azure.url}
        assert run_step(host, autostop, cloud="azure", **urls).status is Status.CHANGED
        host.exec(f"chmod 600 {autostop.TIMER}")
        repaired = run_step(host, autostop, cloud="azure", **urls)
        assert repaired.status is Status.CHANGED
        assert f"chmod 644 {autostop.TIMER}" in repaired.message
        assert "(azure: deallocate; a check every 5 min); the VM's identity may deallocate it" \
            in repaired.message
        off = run_step(host, autostop, cloud="azure", autostop_minutes=0, **urls)
        assert off.status is Status.CHANGED and "disabled" in off.message
        assert host.exec(f"test -e {autostop.WANTS_LINK}", check=False).returncode != 0
        assert b"minutes = 0" in (host.read_file(autostop.CONFIG) or b"")
        assert run_step(host, autostop, cloud="azure", autostop_minutes=0,
                        **urls).status is Status.OK


@pytest.mark.parametrize(("setup", "says"), [
    ({"identity": False}, "cannot deallocate this VM (no managed identity): this VM has no "
                          "managed identity (IMDS 400 invalid_request: Identity not found)"),
    ({"deallocate_allowed": False}, "cannot deallocate this VM (role missing): the VM's "
                                    "identity lacks Microsoft.Compute/virtualMachines/"
                                    "deallocate/action on /subscriptions/"),
])
def test_autostop_on_azure_says_when_the_identity_cannot_deallocate(
        host: TestHost, setup: dict[str, object], says: str) -> None:
    """The step asks the VM's identity (IMDS, then ARM's permissions on the VM) at install
    time and on every run (in the facts command), and never claims a deallocate it
    cannot do. The stand-in answers as Azure documents; the host reaches it over its veth."""
    with AzureStandin(host=host.outside_ip, **setup) as azure:  # type: ignore[arg-type]
        url = azure.url
        with pytest.raises(StepFailed) as first:
            run_step(host, autostop, cloud="azure", azure_imds_url=url, azure_arm_url=url)
        print(f"autostop failed: {first.value}")
        assert says in str(first.value)
        assert "[wrote /usr/local/lib/gpu-workbench/workbench_idle_check.py;" in str(first.value)
        with pytest.raises(StepFailed) as again:  # nothing to change: the facts command asks
            run_step(host, autostop, cloud="azure", azure_imds_url=url, azure_arm_url=url)
        assert str(again.value).startswith(says) and "[wrote" not in str(again.value)
        tokens = [r for r in azure.requests if r.path.endswith("/oauth2/token")]
        assert len(tokens) == 2 and all(r.headers["metadata"] == "true" for r in tokens)
        assert not [r for r in azure.requests if r.method == "POST"]


def test_check_mode_changes_nothing(host: TestHost, loop_disk: str) -> None:
    outcome = run_step(host, autostop, check=True)
    assert outcome.status is Status.CHANGED and outcome.message.startswith("would ")
    assert host.read_file(autostop.TIMER) is None
    planned = run_step(host, data_volume, data_device=loop_disk, check=True)
    assert planned.status is Status.CHANGED
    assert planned.message.startswith(f"would format blank {loop_disk} as ext4")
    assert host.exec(f"blkid -p {loop_disk}", check=False).returncode == 2  # still blank


def test_autostop_on_a_vm_without_azure_says_the_deallocate_is_unverified(
        host: TestHost) -> None:
    """`--cloud azure` on a VM that reaches no IMDS (not an Azure VM, or a test host): the
    probe proves nothing about the identity, so the step neither fails nor claims it."""
    url = f"http://{host.outside_ip}:9"  # nothing listens there: connection refused
    first = run_step(host, autostop, cloud="azure", azure_imds_url=url, azure_arm_url=url)
    print(f"autostop {first.status.value}: {first.message}")
    assert first.status is Status.CHANGED
    assert "may deallocate" not in first.message
    assert ("WARNING: deallocate not verified (Azure not reachable): managed identity token: "
            f"cannot reach {url}/metadata/identity/oauth2/token") in first.message
    again = run_step(host, autostop, cloud="azure", azure_imds_url=url, azure_arm_url=url)
    assert again.status is Status.OK and "deallocate not verified" in again.message
