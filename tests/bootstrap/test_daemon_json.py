"""daemon.json merge logic, without a host."""

from __future__ import annotations

import json

import pytest

from bootstrap import daemon_json as dj


def test_missing_and_empty_files_are_empty_objects() -> None:
    assert dj.parse(None) == {}
    assert dj.parse(b"") == {}
    assert dj.parse(b"  \n\t") == {}


def test_malformed_names_file_and_parse_error() -> None:
    with pytest.raises(dj.DaemonJsonError) as err:
        dj.parse(b'{"log-driver": "json-file",\n}')
    text = str(err.value)
    assert text.startswith("/etc/docker/daemon.json: invalid JSON: ")
    assert "line 2 column 1" in text


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b'{"runtimes": []}', b"\xff\xfe{}"])
def test_valid_json_that_dockerd_cannot_use_is_refused(raw: bytes) -> None:
    with pytest.raises(dj.DaemonJsonError, match=r"/etc/docker/daemon\.json"):
        dj.parse(raw)


def test_merge_keeps_every_other_key_and_order() -> None:
    raw = (b'{"log-driver": "json-file", "log-opts": {"max-size": "10m"},'
           b' "runtimes": {"custom": {"path": "/usr/bin/runc"}}, "debug": true}')
    config = dj.parse(raw)
    merged = dj.with_nvidia_runtime(config, "/usr/bin/nvidia-container-runtime")
    assert list(merged) == ["log-driver", "log-opts", "runtimes", "debug"]
    assert merged["runtimes"] == {
        "custom": {"path": "/usr/bin/runc"},
        "nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []},
    }
    assert {k: v for k, v in merged.items() if k != "runtimes"} == \
        {k: v for k, v in json.loads(raw).items() if k != "runtimes"}
    assert config == json.loads(raw), "the input must not be mutated"


def test_entry_in_our_form_or_nvidia_ctk_form_is_already_there() -> None:
    ours = {"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime",
                                    "runtimeArgs": []}}}
    ctk = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    for config in (ours, ctk):
        assert dj.has_nvidia_runtime(config)
        assert dj.with_nvidia_runtime(config, "/usr/bin/nvidia-container-runtime") is config


def test_nvidia_entry_pointing_elsewhere_is_replaced() -> None:
    config = {"runtimes": {"nvidia": {"path": "/opt/other/runc"}}}
    assert not dj.has_nvidia_runtime(config)
    assert dj.with_nvidia_runtime(config, "/usr/bin/nvidia-container-runtime")[
        "runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"


def test_the_path_written_is_the_one_the_host_has() -> None:
    merged = dj.with_nvidia_runtime({}, "/usr/local/bin/nvidia-container-runtime")
    assert merged == {"runtimes": {"nvidia": {
        "path": "/usr/local/bin/nvidia-container-runtime", "runtimeArgs": []}}}


def test_data_root_replaces_legacy_graph_key() -> None:
    merged = dj.with_data_root({"graph": "/var/lib/docker", "debug": True}, "/mnt/docker")
    assert merged == {"debug": True, "data-root": "/mnt/docker"}
    same = {"data-root": "/mnt/docker"}
    assert dj.with_data_root(same, "/mnt/docker") is same


def test_render_round_trips() -> None:
    config = {"a": 1, "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime",
                                              "runtimeArgs": []}}}
    assert json.loads(dj.render(config)) == config
    assert dj.render(config).endswith(b"\n")
