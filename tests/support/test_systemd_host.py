"""The systemd test host itself (tests/support/systemd_host.py), before anything is
built on it: systemd is PID 1 and settles, sshd lets the login user in, dockerd
runs containers with the stand-in NVIDIA runtime, nvidia-smi reports what the
test set, a real Jupyter server answers, and `systemctl poweroff` stops the
host the way a VM stops itself."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest

from tests.support.systemd_host import (
    NSPAWN_EXIT_POWEROFF,
    NSPAWN_EXIT_REBOOT,
    ComputeApp,
    GpuReading,
    SystemdHost,
    wait_for,
)
from tests.support.testhosts import STANDIN_IMAGE

pytestmark = pytest.mark.slow

# Generous bounds: they catch a host that hangs, not one that is slow.
SETTLE_TIMEOUT_S = 90
POWEROFF_BOUND_S = 60


def test_boots_systemd_as_pid1_and_settles_running(systemd_host: SystemdHost) -> None:
    h = systemd_host
    assert h.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert h.ssh("id -un").stdout.strip() == "wb"
    assert h.ssh("hostname").stdout.strip() == h.name
    # --wait returns once boot is over; anything but "running" names its failed units.
    state = h.ssh("systemctl is-system-running --wait", check=False,
                  timeout=SETTLE_TIMEOUT_S).stdout.strip()
    failed = h.ssh("systemctl --failed --no-legend --plain", check=False).stdout
    assert state == "running", f"system is {state}; failed units:\n{failed}"
    # Passwordless sudo, and a logind session for the SSH login (libpam-systemd).
    assert h.ssh("sudo -n id -u").stdout.strip() == "0"
    assert "/user.slice/" in h.ssh("cat /proc/self/cgroup").stdout


def test_ssh_checks_the_host_key_and_fabric_connects(systemd_host: SystemdHost) -> None:
    h = systemd_host
    host_key = h.host_key_path.read_text().split()[1]
    # sshd serves the key made for this host, and both clients check it:
    # OpenSSH through known_hosts (StrictHostKeyChecking=yes), Fabric by RejectPolicy.
    served = h.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    assert served == host_key
    with h.connection() as conn:
        result = conn.run("systemctl is-active ssh.service", hide=True)
        assert result.stdout.strip() == "active"
        remote_key = conn.client.get_transport().get_remote_server_key()
        assert remote_key.get_base64() == host_key


def test_scratch_disk_and_docker_dirs_are_the_hosts_own(systemd_host: SystemdHost) -> None:
    h = systemd_host
    marker = secrets.token_hex(4)
    h.ssh(f"echo {marker} | sudo tee /mnt/marker >/dev/null")
    assert (h.mnt_dir / "marker").read_text().strip() == marker
    assert h.ssh("sudo docker info --format '{{.DockerRootDir}}'").stdout.strip() == \
        "/var/lib/docker"
    assert (h.docker_dir / "image").is_dir()


def test_docker_runs_a_container_with_the_nvidia_runtime(systemd_host: SystemdHost) -> None:
    h = systemd_host
    assert h.ssh("systemctl is-active docker.service").stdout.strip() == "active"
    assert h.ssh(f"sudo docker run --rm {STANDIN_IMAGE} true").returncode == 0
    # Register the runtime as nvidia-ctk would, then `systemctl reload docker`
    # (SIGHUP under systemd: dockerd rereads its runtimes without restarting).
    daemon_json = json.dumps({"runtimes": {"nvidia": {
        "path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}}})
    h.ssh("sudo tee /etc/docker/daemon.json >/dev/null", input=daemon_json)
    pid_before = h.ssh("systemctl show -p MainPID --value docker").stdout.strip()
    h.ssh("sudo systemctl reload docker")
    runtimes = h.ssh("sudo docker info --format '{{json .Runtimes}}'").stdout
    assert "nvidia" in json.loads(runtimes)
    assert h.ssh("systemctl show -p MainPID --value docker").stdout.strip() == pid_before
    run = h.ssh(f"sudo docker run --rm --runtime nvidia {STANDIN_IMAGE} echo via-nvidia")
    assert run.stdout.strip() == "via-nvidia"


def test_nvidia_smi_reports_the_readings_the_test_set(systemd_host: SystemdHost) -> None:
    h = systemd_host
    busy = GpuReading(index=1, uuid="GPU-busy-0001", utilization_gpu=87,
                      memory_used_mib=20480)
    h.set_gpu_readings([GpuReading(index=0, uuid="GPU-idle-0000"), busy],
                       [ComputeApp(pid=4242, process_name="python", used_memory_mib=20480,
                                   gpu_uuid="GPU-busy-0001")])
    query = ("nvidia-smi --query-gpu=index,name,uuid,driver_version,compute_cap,"
             "utilization.gpu,memory.used,memory.total")
    assert h.ssh(f"{query} --format=csv,noheader,nounits").stdout.splitlines() == [
        "0, NVIDIA A10G, GPU-idle-0000, 535.104.05, 8.6, 0, 0, 23028",
        "1, NVIDIA A10G, GPU-busy-0001, 535.104.05, 8.6, 87, 20480, 23028",
    ]
    with_units = h.ssh(f"{query} --format=csv").stdout.splitlines()
    assert with_units[0] == ("index, name, uuid, driver_version, compute_cap, "
                             "utilization.gpu [%], memory.used [MiB], memory.total [MiB]")
    assert with_units[2].endswith("87 %, 20480 MiB, 23028 MiB")
    assert h.ssh("nvidia-smi -L").stdout.splitlines()[1] == \
        "GPU 1: NVIDIA A10G (UUID: GPU-busy-0001)"
    apps = h.ssh("nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv")
    assert apps.stdout.splitlines() == ["pid, process_name, used_gpu_memory [MiB]",
                                        "4242, python, 20480 MiB"]
    # Broken driver: NVIDIA's message and the manual's "driver not loaded" code.
    h.set_gpu_readings(broken=True)
    failed = h.ssh("nvidia-smi --query-gpu=utilization.gpu --format=csv", check=False)
    assert failed.returncode == 9
    assert failed.stdout.startswith(
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_a_real_jupyter_server_answers_with_its_token(systemd_host: SystemdHost) -> None:
    h = systemd_host
    token = secrets.token_hex(16)
    # A transient unit, as the login user: the server outlives the SSH session.
    h.ssh(f"sudo systemd-run --unit=jupyter-smoke --uid=wb --working-directory=/home/wb "
          f"/opt/jupyter/bin/jupyter server --no-browser --ip={h.ip} --port=8888 "
          f"--ServerApp.token={token} --ServerApp.root_dir=/home/wb")
    url = f"http://{h.ip}:8888/api/status"

    def status(with_token: bool) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(url)
        if with_token:
            request.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, {}

    wait_for(lambda: status(True)[0] == 200, what="jupyter /api/status", timeout=60,
              interval=0.3)
    code, body = status(True)
    assert code == 200 and "started" in body and body["kernels"] == 0
    assert status(False)[0] == 403
    assert h.ssh("systemctl is-active jupyter-smoke.service").stdout.strip() == "active"


def test_poweroff_stops_the_host_with_exit_0_and_the_journal_survives(
        systemd_host: SystemdHost) -> None:
    h = systemd_host
    asked_at = time.monotonic() - h.boot_time
    # The SSH session may be cut as sshd stops; the host's exit is what counts.
    h.ssh("sudo systemctl poweroff", check=False, timeout=30)
    code, seconds_since_boot = h.wait_for_exit(timeout=POWEROFF_BOUND_S)
    assert code == NSPAWN_EXIT_POWEROFF, h.boot_log()[-2000:]
    assert seconds_since_boot > asked_at
    print(f"{h.name}: sshd ready {h.ready_seconds:.1f} s after boot; poweroff took "
          f"{seconds_since_boot - asked_at:.1f} s")
    assert not h.is_running()
    journal = h.journal()
    assert "Reached target poweroff.target" in journal
    assert "Stopped ssh.service" in h.journal("ssh.service")


def test_reboot_is_told_apart_from_poweroff(systemd_host: SystemdHost) -> None:
    h = systemd_host
    h.ssh("sudo systemctl reboot", check=False, timeout=30)
    code, _ = h.wait_for_exit(timeout=POWEROFF_BOUND_S)
    # nspawn exits 133 when the host asks for a reboot (it does not boot it again).
    assert code == NSPAWN_EXIT_REBOOT
