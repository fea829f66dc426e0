"""WorkstationSpec defaults and normalisation (the error cases are in test_bad_input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.spec import DEFAULT_CONTAINER_IMAGE, WorkstationSpec, load_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0cqv/1My5bSWFzNkRvjVZUx96tdsPv+pZy8ewiZSXm me@lab"


def spec(project_dir: Path = Path("."), **values: str) -> WorkstationSpec:
    base = {"cloud": "gcp", "allowedCidrs": '["130.60.24.7"]', "sshPublicKey": KEY,
            "gcpOsLoginAccount": "me@uni.edu"}
    base.update(values)
    return load_spec(base.get, stack="t", project_dir=project_dir, deploying=True)


def test_defaults() -> None:
    s = spec()
    assert s.profile.name == "n1-highmem-8-v100"  # the guide's V100 in a shape GCP accepts
    assert (s.region, s.zone, s.gpu_count) == ("us-central1", "us-central1-a", 1)
    assert s.open_ports == (22, 8888, 8890, 5000)
    assert s.app_ports == (8888, 8890, 5000)
    assert s.root_disk_gb == 100
    assert s.container_image == DEFAULT_CONTAINER_IMAGE
    assert s.tag_dict() == {"project": "gpu-workbench", "stack": "t"}
    assert s.name_prefix == "wb-t"


def test_bare_address_is_a_host_cidr_and_duplicates_go() -> None:
    s = spec(allowedCidrs='["130.60.24.7", "130.60.24.7/32", "2001:620::/32"]')
    assert s.allowed_cidrs == ("130.60.24.7/32", "2001:620::/32")


def test_key_from_a_path_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "me.pub").write_text(KEY + "\n")
    assert spec(tmp_path, sshPublicKey="keys/me.pub").ssh_public_key == KEY


def test_key_from_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(KEY)
    assert spec(sshPublicKey="~/.ssh/id_ed25519.pub").ssh_public_key == KEY


def test_tags_and_ports_are_kept_in_order() -> None:
    s = spec(tags='["owner=alice", "grant=ERC-123"]', openPorts="[22, 6006, 8888]")
    assert s.tag_dict() == {"project": "gpu-workbench", "stack": "t", "owner": "alice",
                            "grant": "ERC-123"}
    assert s.open_ports == (22, 6006, 8888)


def test_retired_type_builds_only_when_asked_and_warns() -> None:
    s = spec(cloud="azure", gcpOsLoginAccount="", profile="Standard_NC6s_v3",
             allowRetiredProfile="true")
    assert s.profile.name == "Standard_NC6s_v3"
    (warning,) = [w for w in s.warnings if "retired 2025-09-30" in w]
    assert "allowRetiredProfile is true" in warning


def test_tunnel_forwards_the_presets_ports() -> None:
    from components.access import tunnel_command

    s = spec(cloud="aws", gcpOsLoginAccount="", containerImage="monai-label")
    assert s.container_image == "projectmonai/monailabel:0.8.5"
    assert tunnel_command(s, "198.51.100.9") == (
        "ssh -N -L 5000:localhost:5000 -L 8000:localhost:8000 -L 8888:localhost:8888 "
        "-L 8890:localhost:8890 ubuntu@198.51.100.9")
    assert tunnel_command(s, "198.51.100.9", "sa_123").endswith(" sa_123@198.51.100.9")


def test_mlflow_joins_the_tunnel_and_outputs() -> None:
    from components.access import mlflow_url, tunnel_ports

    off = spec(cloud="aws", gcpOsLoginAccount="")
    assert 5001 not in tunnel_ports(off) and mlflow_url(off) == ""
    on = spec(cloud="aws", gcpOsLoginAccount="", mlflow="true")
    assert 5001 in tunnel_ports(on) and mlflow_url(on) == "http://localhost:5001"
