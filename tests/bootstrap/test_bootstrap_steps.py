"""Single steps on real hosts: --check changes nothing, the GPU check's diagnosis,
umask/--chmod-home, and the container's idempotence rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bootstrap_run import STANDIN_IMAGE, fab, recap_counts, run_steps
from tests.support.testhosts import TestHost

pytestmark = pytest.mark.slow


def state(host: TestHost) -> dict[str, object]:
    return {
        "bashrc": host.read_file("/home/wb/.bashrc"),
        "etc_docker": host.out("ls -A /etc/docker"),
        "containers": host.out("docker ps -aq"),
        "info": {k: host.docker_info()[k] for k in ("Runtimes", "DockerRootDir")},
        "compose": host.exec("docker compose version", check=False).returncode,
        "config_dir": host.exec("ls /home/wb/.config", check=False).returncode,
        "mnt": host.out("ls -A /mnt"),
    }


def test_check_mode_reports_what_would_change_and_changes_nothing(host: TestHost,
                                                                   tmp_path: Path) -> None:
    # The move to the resource disk is what a short OS disk gets: ask for more than is free.
    host.mount_resource_disk()
    before = state(host)
    proc = fab("-H", host.ssh_target, "-i", str(host.key_path), "bootstrap", "--check",
               "--cloud", "azure", "--image", STANDIN_IMAGE, "--docker-min-free-gib",
               "1000000", home=tmp_path)
    out = proc.stdout
    assert proc.returncode != 0, "check mode still runs the (read-only) GPU check, which fails"
    assert "would add umask 0002 to /home/wb/.bashrc" in out
    assert "would add runtimes.nvidia to /etc/docker/daemon.json (new file); reload dockerd" in out
    assert ("would copy /var/lib/docker to /mnt/docker; set data-root in /etc/docker/daemon.json; "
            "write /etc/systemd/system/docker.service.d/gpu-workbench-data-root.conf "
            "(docker.service waits for /mnt); restart dockerd") in out
    assert "would install the docker compose plugin" in out
    assert f"would create workbench from {STANDIN_IMAGE}" in out
    assert "would write /usr/local/lib/gpu-workbench/workbench_idle_check.py" in out
    assert "PLAY RECAP (check mode: nothing was changed)" in out
    counts = recap_counts(out)[host.ssh_target]
    # umask, nvidia-runtime, data-root, compose, container, autostop, interruptions;
    # facts + GPU probe
    assert counts["changed"] == 7 and counts["commands"] == 2, out
    assert state(host) == before


def test_gpu_check_without_a_gpu_fails_with_a_diagnosis(host: TestHost, tmp_path: Path) -> None:
    proc = fab("-H", host.ssh_target, "-i", str(host.key_path), "check", "--image",
               STANDIN_IMAGE, home=tmp_path)
    assert proc.returncode != 0
    line = next(ln for ln in proc.stdout.splitlines() if " check " in ln and "failed" in ln)
    assert "host: no NVIDIA driver (nvidia-smi not found" in line
    assert "docker: nvidia runtime not registered with dockerd" in line
    assert ("container: dockerd cannot give GPUs to containers (--gpus): NVIDIA Container "
            "Toolkit missing") in line
    # Once the runtime is registered, that complaint goes; the toolkit one stays (no GPU).
    run = run_steps(host, ("nvidia-runtime", "check"), skip_check=False)
    message = run.message("check")
    assert run.status("check") == "failed"
    assert "nvidia runtime not registered" not in message
    assert "NVIDIA Container Toolkit missing" in message


def test_full_bootstrap_runs_check_last_and_fails_on_a_gpu_less_host(host: TestHost) -> None:
    run = run_steps(host, skip_check=False)
    statuses = {s.step: s.status.value for s in run.report.steps}
    assert list(statuses) == ["wait", "compat", "umask", "nvidia-runtime", "data-root",
                              "data-volume", "compose", "container", "packages", "autostop",
                              "interruptions", "check"]
    assert statuses["check"] == "failed" and run.report.failed
    assert all(v != "failed" for k, v in statuses.items() if k != "check"), run.lines


def test_umask_duplicates_collapse_and_chmod_home(host: TestHost) -> None:
    bashrc = b"export A=1\numask 0002\numask 0002\n"
    host.write_file("/home/wb/.bashrc", bashrc)
    host.exec("chown wb:wb /home/wb/.bashrc && chmod 640 /home/wb/.bashrc")
    host.exec("install -d -o wb -g wb -m 700 /home/wb/data && "
              "install -o wb -g wb -m 600 /dev/null /home/wb/data/notes.txt && "
              "install -o wb -g wb -m 700 /dev/null /home/wb/data/tool.sh")
    run = run_steps(host, ("umask",), chmod_home=True)
    assert run.status("umask") == "changed", run.lines
    assert "removed 1 duplicate umask 0002 line(s)" in run.message("umask")
    assert host.read_file("/home/wb/.bashrc") == b"export A=1\numask 0002\n"
    # Owner and mode of the rewritten file are the old file's (then a+r from chmod).
    assert host.out("stat -c '%U %a' /home/wb/.bashrc").split() == ["wb", "644"]
    assert host.out("stat -c %a /home/wb /home/wb/data /home/wb/data/notes.txt "
                    "/home/wb/data/tool.sh").split() == ["755", "755", "644", "755"]
    # Secrets keep their modes.
    assert host.out("stat -c %a /home/wb/.ssh /home/wb/.ssh/authorized_keys").split() == \
        ["700", "600"]
    again = run_steps(host, ("umask",), chmod_home=True)
    assert again.status("umask") == "ok" and again.report.commands_sent == 1


def test_symlinked_bashrc_is_written_through_the_link(host: TestHost) -> None:
    host.exec("mkdir -p /home/wb/dotfiles && mv /home/wb/.bashrc /home/wb/dotfiles/bashrc && "
              "ln -s dotfiles/bashrc /home/wb/.bashrc && chown -R wb:wb /home/wb/dotfiles")
    run = run_steps(host, ("umask",))
    assert run.status("umask") == "changed", run.lines
    assert host.out("readlink /home/wb/.bashrc").strip() == "dotfiles/bashrc"
    assert b"\numask 0002\n" in (host.read_file("/home/wb/dotfiles/bashrc") or b"")
    assert run_steps(host, ("umask",)).status("umask") == "ok"


def test_container_left_alone_restarted_or_replaced(host: TestHost) -> None:
    first = run_steps(host, ("nvidia-runtime", "container"))
    assert first.status("container") == "changed"
    first_id = host.out("docker inspect -f '{{.Id}}' workbench")
    token = host.out("cat /home/wb/.config/gpu-workbench/jupyter_token")

    assert run_steps(host, ("container",)).status("container") == "ok"

    host.exec("docker stop -t 1 workbench >/dev/null")
    started = run_steps(host, ("container",))
    assert started.status("container") == "changed"
    assert "started workbench (not running)" in started.message("container")
    assert host.out("docker inspect -f '{{.Id}}' workbench") == first_id

    host.exec(f"docker tag {STANDIN_IMAGE} local/clara-standin:2")
    replaced = run_steps(host, ("container",), image="local/clara-standin:2")
    assert replaced.status("container") == "changed"
    assert "image local/clara-standin:1 -> local/clara-standin:2" in replaced.message("container")
    inspect = json.loads(host.out("docker inspect workbench"))[0]
    assert inspect["Id"] != first_id and inspect["Config"]["Image"] == "local/clara-standin:2"
    # The token is made once and kept across replacements.
    assert host.out("cat /home/wb/.config/gpu-workbench/jupyter_token") == token
    # The token is not on the container's command line, only in its environment.
    assert token.strip() not in " ".join(inspect["Config"]["Cmd"])
    assert f"JUPYTER_TOKEN={token.strip()}" in inspect["Config"]["Env"]

    # An image that cannot be had leaves the running container alone.
    missing = run_steps(host, ("container",), image="local/no-such-image:1")
    assert missing.status("container") == "failed"
    assert missing.message("container").startswith("cannot pull local/no-such-image:1: ")
    assert host.out("docker inspect -f '{{.Id}}' workbench").strip() == inspect["Id"]

    workspace = run_steps(host, ("container",), image="local/clara-standin:2",
                          workspace="/home/wb/elsewhere")
    assert "settings changed" in workspace.message("container")
    assert host.out("stat -c %U /home/wb/elsewhere").strip() == "wb"


def test_a_container_that_dies_at_once_is_a_failure(host: TestHost) -> None:
    # An image whose default command is not jupyter: `jupyter` missing -> exits at once.
    host.exec("mkdir -p /var/tmp/broken && cd /var/tmp/broken && "
              "printf 'FROM local/clara-standin:1\\nRUN rm /usr/local/bin/jupyter\\n' "
              "> Dockerfile && DOCKER_BUILDKIT=0 docker build -q -t local/broken:1 . >/dev/null")
    run = run_steps(host, ("nvidia-runtime", "container"), image="local/broken:1")
    assert run.status("container") == "failed"
    assert run.message("container").startswith("container workbench exited")


def test_azure_is_detected_by_its_agent_and_an_explicit_cloud_wins(host: TestHost) -> None:
    host.exec("mkdir -p /var/lib/waagent")
    explicit = run_steps(host, ("data-root",), cloud="aws")
    assert explicit.status("data-root") == "skipped"
    assert explicit.message("data-root") == "not Azure (--cloud aws)"
    host.mount_resource_disk()
    detected = run_steps(host, ("data-root",), docker_min_free_gib=1_000_000)
    assert detected.status("data-root") == "changed", detected.lines
    assert host.docker_info()["DockerRootDir"] == "/mnt/docker"
    again = run_steps(host, ("data-root",))
    assert again.status("data-root") == "ok"
    assert again.message("data-root") == (
        "dockerd root is /mnt/docker, docker.service waits for its mount (detected: "
        "/var/lib/waagent)")
