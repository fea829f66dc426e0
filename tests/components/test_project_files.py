"""Pulumi.yaml is valid for the Pulumi CLI, and every stack file uses only declared keys."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from stacktools.mock_engine import PROJECT_DIR

# Pulumi's own project schema (pulumi/pulumi sdk/go/common/workspace/project.json).
SCHEMA = Path(__file__).resolve().parent.parent / "data" / "pulumi-project.schema.json"
PROJECT = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())
STACK_FILES = sorted((PROJECT_DIR / "stacks").glob("Pulumi.*.yaml"))


def test_pulumi_yaml_matches_pulumis_schema() -> None:
    jsonschema.validate(PROJECT, json.loads(SCHEMA.read_text()))
    assert PROJECT["runtime"]["name"] == "python"
    assert PROJECT["stackConfigDir"] == "stacks"


def test_config_keys_have_allowed_types_and_descriptions() -> None:
    for key, declared in PROJECT["config"].items():
        assert declared["type"] in ("string", "integer", "boolean", "array"), key
        if declared["type"] == "array":
            assert declared["items"]["type"] in ("string", "integer", "boolean"), key
        assert declared.get("description"), key


def test_spec_reads_exactly_the_declared_keys() -> None:
    """A key the spec reads but Pulumi.yaml does not declare (or the reverse) is a typo."""
    from components.spec import load_spec

    asked: set[str] = set()

    def get(key: str) -> str | None:
        asked.add(key)
        return None

    with pytest.raises(ValueError):  # stops at the first required key ...
        load_spec(get, stack="x", project_dir=PROJECT_DIR, deploying=False)
    source = (PROJECT_DIR / "components" / "spec.py").read_text()
    import re

    # ... so also collect every key named in a reader call.
    asked |= set(re.findall(r'reader\.\w+\(\s*"(\w+)"', source))
    assert asked == set(PROJECT["config"])


@pytest.mark.parametrize("path", STACK_FILES, ids=[p.name for p in STACK_FILES])
def test_stack_files_use_declared_keys(path: Path) -> None:
    config = yaml.safe_load(path.read_text())["config"]
    for key in config:
        namespace, _, name = key.partition(":")
        assert namespace == "gpu-workbench" and name in PROJECT["config"], key


def test_every_cloud_stack_builds_the_default_profile_and_says_why() -> None:
    from components import catalog

    for cloud in catalog.CLOUDS:
        path = PROJECT_DIR / "stacks" / f"Pulumi.{cloud}.yaml"
        text = path.read_text()
        config = yaml.safe_load(text)["config"]
        assert config["gpu-workbench:profile"] == catalog.DEFAULT_PROFILES[cloud]
        # The comment names what the guide recommended and what happened to it.
        guide = catalog.recommended_profile(cloud)
        assert guide.machine_type in text.split("config:")[0], path
        profile = catalog.default_profile(cloud)
        assert profile.sold and profile.on_demand
