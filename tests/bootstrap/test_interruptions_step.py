"""The interruptions step's own logic: which cloud it watches, the config it writes, what
it reads back from the facts command and what it then changes. The runs over real SSH,
under a real systemd, are in test_interruption_on_systemd_host.py."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from bootstrap.facts import CloudHints
from bootstrap.installed_files import plan_files
from bootstrap.options import BootstrapOptions
from bootstrap.steps import interruptions as step


@pytest.mark.parametrize(("cloud", "hints", "watched", "note"), [
    ("gcp", CloudHints("", waagent=True), "gcp", ""),
    (None, CloudHints("Microsoft Corporation", waagent=True), "azure",
     " (no --cloud: azure from the VM)"),
    (None, CloudHints("Google", waagent=False, product_name="Google Compute Engine"), "gcp",
     " (no --cloud: gcp from the VM)"),
    (None, CloudHints("", waagent=False), "aws",
     " (no --cloud and nothing on the VM names a cloud: guessed aws)"),
])
def test_the_cloud_watched(cloud: str | None, hints: CloudHints, watched: str,
                           note: str) -> None:
    assert step.watched_cloud(BootstrapOptions(cloud=cloud), hints.guess()) == (watched, note)


def test_the_config_names_the_clouds_own_address_and_pace() -> None:
    options = BootstrapOptions(aws_imds_url="http://10.0.0.1:8080/",
                               gcp_metadata_url="http://10.0.0.2:8081",
                               azure_imds_url="http://10.0.0.3:8082")
    lines = {cloud: step.config_text(cloud, options).decode().splitlines()[2:]
             for cloud in ("aws", "gcp", "azure")}
    assert lines["aws"] == ["[watch]", "cloud = aws", "metadata_url = http://10.0.0.1:8080",
                            "poll_seconds = 5",
                            "record = /var/lib/gpu-workbench/last-stop.json"]
    assert lines["gcp"][2:4] == ["metadata_url = http://10.0.0.2:8081", "poll_seconds = 5"]
    assert lines["azure"][2:4] == ["metadata_url = http://10.0.0.3:8082", "poll_seconds = 1"]
    defaults = step.config_text("gcp", BootstrapOptions()).decode()
    assert "metadata_url = http://metadata.google.internal\n" in defaults


@pytest.mark.parametrize("url", ["http://x\n[watch]\ncloud = gcp", "file:///etc/passwd",
                                 "http:// 169.254.169.254", ""])
def test_a_metadata_url_that_would_break_the_config_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="aws_imds_url must be an http:// or https:// URL"):
        BootstrapOptions(aws_imds_url=url)


def section(*, unit: str = "active", restarts: str = "0", link: bool = True,
            files: bool = True) -> str:
    lines = []
    for want in step.wanted_files("aws", BootstrapOptions()):
        if files:
            lines.append(f"{want.path} {hashlib.sha256(want.content).hexdigest()} {want.mode}")
        else:
            lines.append(f"{want.path} absent")
    lines += [f"link {step.SERVICE if link else 'absent'}", "systemd yes",
              f"unit ActiveState={unit}", "unit SubState=running", f"unit NRestarts={restarts}"]
    return "\n".join(lines)


def test_the_facts_parse_back_and_the_snippet_is_sh() -> None:
    facts = step.parse(section(unit="failed", restarts="3"))
    assert facts.link == step.SERVICE and facts.systemd
    assert facts.unit == {"ActiveState": "failed", "SubState": "running", "NRestarts": "3"}
    assert set(facts.files) == {step.SCRIPT, step.CONFIG, step.SERVICE}
    assert plan_files(step.wanted_files("aws", BootstrapOptions()), facts.files).actions == []
    # Another cloud's config differs in that one file.
    other = plan_files(step.wanted_files("gcp", BootstrapOptions()), facts.files)
    assert other.actions == [(f"updated {step.CONFIG}", f"update {step.CONFIG}")]
    absent = step.parse(section(link=False, files=False))
    assert absent.link is None and set(absent.files.values()) == {None}
    snippet = step.facts_snippet(BootstrapOptions()).text
    assert subprocess.run(["sh", "-n"], input=snippet, text=True).returncode == 0
