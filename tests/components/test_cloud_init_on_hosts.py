"""The host key the stack makes reaches the machine through cloud-init and is pinned
before the first connection: the stack's user data, validated by cloud-init's own
schema, run by Debian's real cloud-init (NoCloud seed, ssh module only) on a test
host, whose sshd then serves that key to `scripts/bootstrap`.

cloud-init is unpacked, not installed (scripts/install-test-deps): installed, every
test host would see it on its PATH and the bootstrap would wait for it there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.cloud_init import user_data
from tests.stacktools.test_handoff import key_fingerprint, new_key, plain_names, script
from tests.support.bootstrap_run import recap_counts
from tests.support.real_parts import skip_or_fail
from tests.support.testhosts import TestHost

# Only the ssh module: cloud-init's other init modules would grow partitions and
# resize filesystems, and a test host shares the box's block devices.
CLOUD_CFG = b"""datasource_list: [ NoCloud ]
cloud_init_modules: [ ssh ]
cloud_config_modules: []
cloud_final_modules: []
"""


CLOUD_INIT_DIR = Path(os.environ.get("WORKBENCH_CLOUD_INIT_DIR",
                                     "/opt/gpu-workbench-test/cloud-init"))


def cloud_init(*args: str) -> list[str]:
    """argv for the unpacked cloud-init, on the box's (Debian's) python3."""
    return ["env", f"PYTHONPATH={CLOUD_INIT_DIR}/usr/lib/python3/dist-packages",
            "/usr/bin/python3", f"{CLOUD_INIT_DIR}/usr/bin/cloud-init", *args]


def require_cloud_init() -> None:
    if not (CLOUD_INIT_DIR / "usr/bin/cloud-init").exists():
        skip_or_fail(f"cloud-init is not unpacked in {CLOUD_INIT_DIR} (scripts/install-test-deps)")


def test_user_data_passes_cloud_inits_own_schema(tmp_path: Path) -> None:
    require_cloud_init()
    pub = new_key(tmp_path, "hk")
    path = tmp_path / "user-data"
    path.write_text(user_data(pub.with_suffix("").read_text(), pub.read_text()))
    check = subprocess.run(cloud_init("schema", "--config-file", str(path)),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Valid cloud-config" in check.stdout


@pytest.mark.slow
def test_the_stacks_host_key_is_the_one_the_machine_offers(host: TestHost,
                                                           tmp_path: Path) -> None:
    require_cloud_init()
    pub = new_key(tmp_path, "stack_host_key")

    host.write_file("/var/lib/cloud/seed/nocloud/user-data",
                    user_data(pub.with_suffix("").read_text(), pub.read_text()).encode())
    host.write_file("/var/lib/cloud/seed/nocloud/meta-data",
                    b"instance-id: wb-test-1\nlocal-hostname: wb\n")
    host.write_file("/etc/cloud/cloud.cfg", (CLOUD_INIT_DIR / "etc/cloud/cloud.cfg").read_bytes())
    host.write_file("/etc/cloud/cloud.cfg.d/99-gpu-workbench-test.cfg", CLOUD_CFG)
    run = " ".join(cloud_init())
    host.exec(f"{run} init --local >/dev/null 2>&1; {run} init >/dev/null 2>&1")
    # The image's own keys are gone; the stack's ed25519 key is the only host key.
    assert host.out("ls /etc/ssh/ | grep '^ssh_host_' | sort").split() == [
        "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert host.out("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub").strip() == " ".join(
        pub.read_text().split()[:2])
    # sshd as the image starts it: with the host key cloud-init installed.
    config = host.dir / "sshd_config"
    config.write_text(config.read_text().replace(
        f"HostKey {host.dir}/ssh_host_ed25519_key", "HostKey /etc/ssh/ssh_host_ed25519_key"))
    host.exec("pid=$(cat /run/sshd.pid); kill $pid; "
              "while kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
              f"/usr/sbin/sshd -f {config} -E {host.dir}/sshd.log")

    outputs = {"public_ip": host.ip, "ssh_user": host.user, "cloud": "aws",
               "container_image": "local/clara-standin:1",
               "ssh_command": f"ssh {host.user}@{host.ip}",
               "host_key": " ".join(pub.read_text().split()[:2]),  # the host_key output
               "host_key_fingerprint": key_fingerprint(pub)}
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(outputs))
    known = plain_names(tmp_path)
    proc = script(str(saved), "-i", str(host.key_path), "--skip-check", "--strict-host-keys",
                  "--data-device", "none", "--autostop-minutes", "0", home=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.startswith(f"scripts/bootstrap: new host {host.ip}: ED25519 "
                          f"{key_fingerprint(pub)} added to {known} (plain; the stack's "
                          "host_key)\n"), out
    assert recap_counts(out)[host.ssh_target]["failed"] == 0
