"""Container config diff, without a host."""

from __future__ import annotations

import shlex

from bootstrap.container_spec import (
    LABEL_CONFIG,
    LABEL_TOKEN,
    ContainerSpec,
    differences,
    needs_replace,
    token_fingerprint,
)

SPEC = ContainerSpec(name="workbench", image="nvcr.io/nvidia/clara-train-sdk:v4.1",
                     workspace="/home/u/workspace")


def inspect_of(spec: ContainerSpec, token: str, *, running: bool = True,
               ports: dict[str, str] | None = None, image: str | None = None) -> dict:
    ports = ports or {"8888/tcp": "8890", "5000/tcp": "5000"}
    return {
        "Config": {"Image": image or spec.image,
                   "Labels": {LABEL_CONFIG: spec.config_hash(),
                              LABEL_TOKEN: token_fingerprint(token)}},
        "HostConfig": {"PortBindings": {p: [{"HostIp": "", "HostPort": h}]
                                        for p, h in ports.items()}},
        "State": {"Running": running},
    }


def test_matching_running_container_is_left_alone() -> None:
    assert differences(SPEC, inspect_of(SPEC, "t0k"), "t0k") == []


def test_absent_container_is_created() -> None:
    assert differences(SPEC, None, "t0k") == ["absent"]


def test_stopped_container_is_started_not_replaced() -> None:
    reasons = differences(SPEC, inspect_of(SPEC, "t0k", running=False), "t0k")
    assert reasons == ["not running"]
    assert not needs_replace(reasons)


def test_other_image_or_ports_replace() -> None:
    reasons = differences(SPEC, inspect_of(SPEC, "t0k", image="other:1"), "t0k")
    assert reasons == [f"image other:1 -> {SPEC.image}"]
    assert needs_replace(reasons)
    reasons = differences(SPEC, inspect_of(SPEC, "t0k", ports={"8888/tcp": "8888"}), "t0k")
    assert needs_replace(reasons) and reasons[0].startswith("ports")


def test_changed_settings_or_token_replace() -> None:
    other = ContainerSpec(name="workbench", image=SPEC.image, workspace="/data")
    assert other.config_hash() != SPEC.config_hash()
    assert differences(other, inspect_of(SPEC, "t0k"), "t0k") == \
        ["settings changed (config hash differs)"]
    assert differences(SPEC, inspect_of(SPEC, "t0k"), "new") == ["Jupyter token changed"]
    assert differences(SPEC, inspect_of(SPEC, "t0k"), None) == ["Jupyter token changed"]


def test_run_command_publishes_ports_runtime_and_keeps_token_off_the_command_line() -> None:
    argv = shlex.split(str(SPEC.run_command("/home/u/.config/gpu-workbench/container.env", "abc")))
    joined = " ".join(argv)
    assert "--runtime nvidia" in joined and "--restart unless-stopped" in joined
    assert "-p 8890:8888" in joined and "-p 5000:5000" in joined
    assert "-v /home/u/workspace:/workspace" in joined
    assert "--env-file /home/u/.config/gpu-workbench/container.env" in joined
    assert "JUPYTER_TOKEN" not in joined
    assert argv[argv.index("-d") + 1:].count(SPEC.image) == 1


def test_presets_bring_their_ports_and_jupyter_start_unknown_images_keep_the_defaults() -> None:
    from bootstrap.container_spec import PYTHONUSERBASE, spec_for_image
    from components.images import find_preset

    monai = find_preset("monai-label")
    spec = spec_for_image("workbench", "projectmonai/monailabel:0.8.5", monai, "/w")
    # The image has no JupyterLab: MONAI Label's server is the container's process.
    assert spec.port_bindings == {("8000/tcp", "8000")}
    argv = shlex.split(str(spec.run_command("/e", "abc")))
    assert "-p 8000:8000" in " ".join(argv) and "8890" not in " ".join(argv)
    assert "5000" not in " ".join(argv) and "jupyter" not in argv[-1]
    assert "exec monailabel start_server --app /workspace/apps/radiology" in argv[-1]
    assert "--host 0.0.0.0 --port 8000" in argv[-1]
    clara = spec_for_image("workbench", "nvcr.io/nvidia/clara-train-sdk:v4.1",
                           find_preset("clara-train"), "/w")
    clara_start = shlex.split(str(clara.run_command("/e", "abc")))[-1]
    assert clara_start.index("AIAA start") < clara_start.index("exec jupyter lab --ip=0.0.0.0")
    unknown = spec_for_image("workbench", "ghcr.io/lab/seg:2.1", None, "/w")
    assert unknown.port_bindings == {("8888/tcp", "8890"), ("5000/tcp", "5000")}
    # Hashed as before presets existed: an upgrade leaves running containers alone.
    assert unknown.config_hash() == ContainerSpec("workbench", "ghcr.io/lab/seg:2.1",
                                                  "/w").config_hash()
    with_packages = spec_for_image("workbench", "ghcr.io/lab/seg:2.1", None, "/w",
                                   packages=True)
    assert with_packages.config_hash() != unknown.config_hash()
    assert f"-e PYTHONUSERBASE={PYTHONUSERBASE}" in str(with_packages.run_command("/e", "abc"))
