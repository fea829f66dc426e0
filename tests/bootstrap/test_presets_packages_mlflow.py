"""Issue 6 on real hosts: image presets, the driver/GPU check before pulling, extra
packages that survive restarts, the MLflow server through an SSH tunnel, a given token."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components.images import find_preset
from tests.support import python_image
from tests.support.bootstrap_run import fab, http_get, recap_counts, run_steps
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow

PYTORCH12 = find_preset("pytorch-cuda12")
PYTORCH13 = find_preset("pytorch")
assert PYTORCH12 is not None and PYTORCH13 is not None


@pytest.fixture
def python_host(host: TestHost) -> TestHost:
    why = python_image.python_missing()
    if why:
        if os.environ.get("WORKBENCH_REQUIRE_REAL_PARTS") == "1":
            pytest.fail(f"WORKBENCH_REQUIRE_REAL_PARTS=1 but {why}")
        pytest.skip(why)
    # The stand-in, tagged as the presets' images: nothing is pulled.
    python_image.import_python_image(host, PYTORCH12.image, PYTORCH13.image)  # type: ignore[union-attr]
    return host


def fake_nvidia_smi(host: TestHost, answer: str) -> None:
    """A stand-in nvidia-smi in the host's /usr/bin (an overlay: this host only)."""
    host.write_file("/usr/bin/nvidia-smi", (
        "#!/bin/sh\n"
        'case "$*" in *--query-gpu=*) printf "%s\\n" ' + f"'{answer}'" + " ;;\n"
        '  *) echo "GPU 0: stand-in" ;; esac\n').encode(), mode="755")


def test_old_driver_or_v100_refused_before_pulling_good_one_passes(python_host: TestHost) -> None:
    host = python_host
    fake_nvidia_smi(host, "570.172.08, 9.0, NVIDIA H100 80GB HBM3")
    old = run_steps(host, ("compat", "container"), image="pytorch")
    assert old.status("compat") == "failed" and old.status("container") == "skipped"
    assert old.message("compat") == (
        "not pulling nvcr.io/nvidia/pytorch:25.10-py3: nvcr.io/nvidia/pytorch:25.10-py3 needs "
        "CUDA 13.0, i.e. NVIDIA driver 580.65.06 or newer; this host has 570.172.08: update "
        "the driver or pick an image on an older CUDA")
    assert host.out("docker ps -aq") == ""  # nothing pulled, nothing started

    fake_nvidia_smi(host, "580.95.05, 7.0, Tesla V100-SXM2-16GB")
    v100 = run_steps(host, ("compat", "container"), image="pytorch")
    assert v100.status("compat") == "failed"
    assert v100.message("compat") == (
        "not pulling nvcr.io/nvidia/pytorch:25.10-py3: nvcr.io/nvidia/pytorch:25.10-py3 cannot "
        "run on the Tesla V100-SXM2-16GB: CUDA 13 needs compute capability 7.5 or newer; the "
        "Tesla V100-SXM2-16GB is 7.0; use pytorch-cuda12 (nvcr.io/nvidia/pytorch:25.01-py3), "
        "or a newer GPU than this host's")
    assert host.out("docker ps -aq") == ""

    good = run_steps(host, ("nvidia-runtime", "compat", "container"), image="pytorch-cuda12")
    assert good.status("compat") == "ok", good.lines
    assert good.message("compat") == (
        "pytorch-cuda12 (nvcr.io/nvidia/pytorch:25.01-py3, CUDA 12.8) fits driver 580.95.05 "
        "and the Tesla V100-SXM2-16GB (compute capability 7.0); "
        "nvcr.io/nvidia/pytorch:25.01-py3 on the Tesla V100-SXM2-16GB (Volta) is unverified: "
        "NGC 25.xx containers have refused pre-Turing GPUs")
    assert good.status("container") == "changed", good.lines
    # The facts command read nvidia-smi: the check cost no round trip of its own
    # (facts, nvidia-runtime, container).
    assert good.report.commands_sent == 3

    host.remove("/usr/bin/nvidia-smi")
    none = run_steps(host, ("compat",), image="pytorch")
    assert none.status("compat") == "skipped"
    assert none.message("compat").startswith("no nvidia-smi on the host: driver/GPU "
                                              "compatibility of nvcr.io/nvidia/pytorch:25.10-py3")


def test_preset_ports_and_an_extra_package_that_survives_restart_and_recreate(
        python_host: TestHost, tmp_path: Path) -> None:
    host = python_host
    wheel = python_image.build_wheel(tmp_path)
    host.exec("install -d -o wb -g wb /home/wb/workspace/wheels")
    host.write_file(f"/home/wb/workspace/wheels/{wheel.name}", wheel.read_bytes())
    pip = f"/workspace/wheels/{wheel.name}"
    args = ("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", "--image",
            "pytorch-cuda12", "--pip", pip, "--skip-check")
    first = fab(*args, home=tmp_path)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "packages        changed" in out and f"pip installed {pip}" in out
    inspect = json.loads(host.out("docker inspect workbench"))[0]
    assert inspect["Config"]["Image"] == "nvcr.io/nvidia/pytorch:25.01-py3"
    # The preset's one port, no AIAA 5000 for PyTorch; the preset's Jupyter start.
    assert set(inspect["HostConfig"]["PortBindings"]) == {"8888/tcp"}
    assert inspect["HostConfig"]["PortBindings"]["8888/tcp"][0]["HostPort"] == "8890"
    assert "jupyter lab --ip=0.0.0.0 --port=8888" in inspect["Config"]["Cmd"][-1]
    token = host.out("cat /home/wb/.config/gpu-workbench/jupyter_token").strip()
    assert token not in " ".join(inspect["Config"]["Cmd"])
    assert f"JupyterLab: http://localhost:8890/lab?token={token}" in out
    assert "AIAA" not in out.split("PLAY RECAP")[1]
    assert http_get(f"http://{host.ip}:8890/cgi-bin/lab?token={token}")[0] == 200

    def importable() -> str:
        return host.out("docker exec workbench python3 -c "
                        "'import wbtiny, sys; print(wbtiny.VERSION, wbtiny.__file__)'").strip()

    assert importable().startswith("0.1 /workspace/.gpu-workbench/python/lib/python3.11/")

    second = fab(*args, home=tmp_path)
    counts = recap_counts(second.stdout)[host.ssh_target]
    assert counts["changed"] == 0 and counts["commands"] == 1, second.stdout
    assert f"installed: {pip}" in second.stdout

    host.exec("docker restart -t 1 workbench >/dev/null")
    assert importable().startswith("0.1 ")
    host.exec("docker rm -f workbench >/dev/null")
    recreated = fab(*args, home=tmp_path)
    assert recreated.returncode == 0, recreated.stdout + recreated.stderr
    assert "created workbench" in recreated.stdout
    assert "packages        ok" in recreated.stdout  # nothing installed again
    assert importable().startswith("0.1 ")


def test_given_token_is_used_and_kept_off_command_lines(host: TestHost, tmp_path: Path) -> None:
    token = "Zz9" * 16
    args = ("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", "--image",
            "local/clara-standin:1", "--skip-check")
    proc = fab(*args, env={"WORKBENCH_JUPYTER_TOKEN": token}, home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert host.out("cat /home/wb/.config/gpu-workbench/jupyter_token").strip() == token
    assert host.out("stat -c '%U %a' /home/wb/.config/gpu-workbench/jupyter_token").split() \
        == ["wb", "600"]
    # Printed once, in the URL; the default image keeps 8890 and AIAA 5000.
    assert proc.stdout.count(token) == 1
    assert f"JupyterLab: http://localhost:8890/lab?token={token}" in proc.stdout
    assert "AIAA:       http://localhost:5000/" in proc.stdout
    assert http_get(f"http://{host.ip}:8890/cgi-bin/lab?token={token}")[0] == 200
    inspect = host.out("docker inspect workbench")
    assert token not in json.dumps(json.loads(inspect)[0]["Config"]["Cmd"])
    assert token not in host.out("cat /var/log/auth.log 2>/dev/null; ls /home/wb")
    again = fab(*args, env={"WORKBENCH_JUPYTER_TOKEN": token}, home=tmp_path)
    assert recap_counts(again.stdout)[host.ssh_target]["commands"] == 1


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_answers_through_an_ssh_tunnel(host: TestHost, tmp_path: Path) -> None:
    from bootstrap.steps.mlflow import MLFLOW_IMAGE, MLFLOW_VERSION

    assert MLFLOW_VERSION == python_image.MLFLOW_VERSION
    built = python_image.ensure_mlflow_rootfs()
    if isinstance(built, str):
        if os.environ.get("WORKBENCH_REQUIRE_REAL_PARTS") == "1":
            pytest.fail(built)
        pytest.skip(built)
    python_image.import_mlflow_image(host, MLFLOW_IMAGE)  # real MLflow, tagged as the image
    args = ("-H", host.ssh_target, "-i", str(host.key_path), "mlflow")
    proc = fab(*args, home=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MLflow: http://localhost:5001/" in proc.stdout
    assert "-L 5001:localhost:5001" in proc.stdout
    # Only on the host's loopback: not from the network...
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(2)
        assert s.connect_ex((host.ip, 5001)) != 0
    # ... but through a real SSH tunnel, as the user reaches it.
    local = _free_port()
    tunnel = subprocess.Popen(
        ["ssh", "-N", "-i", str(host.key_path), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
         "-L", f"{local}:localhost:5001", host.ssh_target])
    try:
        deadline = time.monotonic() + 20
        status, body = 0, ""
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status, body = http_get(f"http://127.0.0.1:{local}/health")
                if status == 200:
                    break
            time.sleep(0.3)
        assert (status, body.strip()) == (200, "OK")
        search = subprocess.run(
            ["curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json", "-d",
             '{"max_results": 5}', f"http://127.0.0.1:{local}/api/2.0/mlflow/experiments/search"],
            capture_output=True, text=True, timeout=20)
        assert json.loads(search.stdout)["experiments"][0]["name"] == "Default"
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)
    # The store is on the workspace, and a second run changes nothing.
    assert host.exec("test -s /home/wb/workspace/mlflow/mlflow.db").returncode == 0
    again = fab(*args, home=tmp_path)
    counts = recap_counts(again.stdout)[host.ssh_target]
    assert counts["changed"] == 0 and counts["commands"] == 1, again.stdout
    restart = host.out("docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' workbench-mlflow")
    assert restart.strip() == "unless-stopped"


def test_a_rerun_without_flags_keeps_the_image_and_the_packages(
        python_host: TestHost, tmp_path: Path) -> None:
    """Issue 13: the host remembers what it was bootstrapped with. A bare rerun leaves the
    PyTorch container (and its kernels) alone; another image gets the packages again."""
    host = python_host
    wheel = python_image.build_wheel(tmp_path)
    host.exec("install -d -o wb -g wb /home/wb/workspace/wheels")
    host.write_file(f"/home/wb/workspace/wheels/{wheel.name}", wheel.read_bytes())
    pip = f"/workspace/wheels/{wheel.name}"
    target = ("-H", host.ssh_target, "-i", str(host.key_path))
    first = fab(*target, "bootstrap", "--image", "pytorch-cuda12", "--pip", pip,
                "--skip-check", home=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert host.out("cat /home/wb/.config/gpu-workbench/image").strip() == "pytorch-cuda12"
    assert host.out("stat -c '%a %U' /home/wb/.config/gpu-workbench/image").strip() == "600 wb"

    def container_id() -> str:
        return host.out("docker inspect -f '{{.Id}}' workbench").strip()

    def importable() -> str:
        return host.out("docker exec workbench python3 -c "
                        "'import wbtiny; print(wbtiny.VERSION)'").strip()

    before = container_id()
    bare = fab(*target, "bootstrap", "--skip-check", home=tmp_path)
    counts = recap_counts(bare.stdout)[host.ssh_target]
    assert counts["changed"] == 0 and counts["commands"] == 1, bare.stdout
    assert (f"workbench running {PYTORCH12.image} (the image this host was "  # type: ignore[union-attr]
            "bootstrapped with last; --image to change it)") in bare.stdout
    assert "packages        ok" in bare.stdout and "installed earlier for" in bare.stdout
    assert container_id() == before and importable() == "0.1"

    # A remembered file that is not an image is ignored and said so; never run.
    host.write_file("/home/wb/.config/gpu-workbench/image",
                    b"x$(touch /tmp/pwned)`touch /tmp/pwned`\n", mode="600")
    looked = fab(*target, "container", "--check", home=tmp_path)
    assert ("ignored ~/.config/gpu-workbench/image: 'x$(touch /tmp/pwned)`touch /tmp/pwned`' "
            "is neither a preset nor an image reference; the default image instead"
            ) in looked.stdout, looked.stdout
    assert host.exec("test -e /tmp/pwned", check=False).returncode != 0
    assert container_id() == before

    # Another image, no --pip: the packages are installed again for it (its Python may
    # differ), from the requirements kept beside them.
    other = fab(*target, "bootstrap", "--image", "pytorch", "--skip-check", home=tmp_path)
    assert other.returncode == 0, other.stdout + other.stderr
    assert "replaced workbench" in other.stdout
    assert (f"pip installed ~/workspace/.gpu-workbench/python/requirements.txt again for "
            f"{PYTORCH13.image} (installed for {PYTORCH12.image})"  # type: ignore[union-attr]
            ) in other.stdout, other.stdout
    assert importable() == "0.1"
    again = fab(*target, "bootstrap", "--skip-check", home=tmp_path)
    counts = recap_counts(again.stdout)[host.ssh_target]
    assert counts["changed"] == 0 and counts["commands"] == 1, again.stdout
