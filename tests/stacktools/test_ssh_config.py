"""The ssh config entries, read back by the real OpenSSH client (`ssh -G` prints the
configuration it would use), in a mount namespace whose /root is a temporary home, so
the box's own ~/.ssh is never read or written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stacktools.ssh_config import (
    INCLUDE_LINE,
    SshConfig,
    SshConfigError,
    Workstation,
    forwards_from_tunnel,
    workstation_from_outputs,
)
from tests.support.real_parts import skip_or_fail

OUTPUTS = {
    "public_ip": "198.51.100.23", "ssh_user": "ubuntu",
    "tunnel_command": "ssh -N -L 5000:localhost:5000 -L 8888:localhost:8888 "
                      "-L 8890:localhost:8890 ubuntu@198.51.100.23",
}


def ssh_g(home: Path, host: str) -> dict[str, list[str]]:
    """`ssh -G host` as the user whose home is `home` (OpenSSH takes ~ from passwd, so
    home is bind-mounted on /root in a private mount namespace)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ssh") is None:
        skip_or_fail("reading ssh_config with the real client needs root, unshare and ssh")
    script = f"mount --bind {home} /root && exec ssh -G {host}"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, []).append(value)
    return resolved


def test_outputs_make_a_login_and_a_tunnel_entry_ssh_reads(tmp_path: Path) -> None:
    config = SshConfig(tmp_path)
    workstation = workstation_from_outputs("aws", OUTPUTS, "~/keys/my key")
    assert workstation.forwards == (5000, 8888, 8890)
    config.add(workstation)
    assert config.add_include(lambda question: True).startswith("added")
    assert (config.ours.stat().st_mode & 0o777) == 0o600
    assert (config.ours.parent.stat().st_mode & 0o777) == 0o700

    login = ssh_g(tmp_path, "wb-aws")
    assert login["hostname"] == ["198.51.100.23"] and login["user"] == ["ubuntu"]
    assert login["identityfile"] == ["~/keys/my key"]
    assert login["identitiesonly"] == ["yes"]
    assert "localforward" not in login
    tunnel = ssh_g(tmp_path, "wb-aws-tunnel")
    assert sorted(tunnel["localforward"]) == [
        "5000 [localhost]:5000", "8888 [localhost]:8888", "8890 [localhost]:8890"]
    assert tunnel["exitonforwardfailure"] == ["yes"]


def test_include_goes_before_the_first_block_once_and_only_with_consent(tmp_path: Path) -> None:
    config = SshConfig(tmp_path)
    config.users.parent.mkdir(mode=0o700)
    original = "ServerAliveInterval 30\n\nHost lab\n    HostName lab.uni.edu\n"
    config.users.write_text(original)
    config.users.chmod(0o644)
    assert "left as it is" in config.add_include(lambda question: False)
    assert config.users.read_text() == original
    config.add_include(lambda question: True)
    text = config.users.read_text()
    assert text.index(INCLUDE_LINE) < text.index("Host lab")  # an Include in a block is conditional
    assert text.replace(f"{INCLUDE_LINE}\n", "").replace(
        "# gpu-workbench workstations (ssh wb-<stack>); scripts/down removes entries\n\n", "") == (
        original)
    assert (config.users.stat().st_mode & 0o777) == 0o644  # its mode kept
    assert config.users.with_name("config.gpu-workbench.bak").read_text() == original
    asked: list[str] = []

    def consent(question: str) -> bool:
        asked.append(question)
        return True

    assert "already includes" in config.add_include(consent)
    assert asked == []
    config.add(workstation_from_outputs("gcp", {**OUTPUTS, "ssh_user": "me_uni_edu"}, None))
    assert ssh_g(tmp_path, "wb-gcp")["user"] == ["me_uni_edu"]
    assert ssh_g(tmp_path, "lab")["hostname"] == ["lab.uni.edu"]


def test_remove_takes_one_stack_and_leaves_the_others(tmp_path: Path) -> None:
    config = SshConfig(tmp_path)
    config.add(workstation_from_outputs("aws", OUTPUTS, None))
    config.add(workstation_from_outputs("azure", {**OUTPUTS, "public_ip": "192.0.2.9",
                                                  "ssh_user": "azureuser"}, None))
    config.add(workstation_from_outputs("aws", {**OUTPUTS, "public_ip": "192.0.2.77"}, None))
    text = config.entries()
    assert text.count("Host wb-aws\n") == 1 and "192.0.2.77" in text  # replaced, not doubled
    assert config.remove("aws") and not config.remove("aws")
    assert "wb-aws" not in config.entries() and "Host wb-azure\n" in config.entries()


@pytest.mark.parametrize(("field", "value"), [
    ("ssh_user", "ubuntu\n    ProxyCommand touch /tmp/pwned"),
    ("public_ip", "198.51.100.23 ProxyCommand=touch /tmp/pwned"),
    ("public_ip", ""),
    ("ssh_user", "Root User"),
])
def test_a_value_that_could_add_a_directive_is_refused(field: str, value: str) -> None:
    with pytest.raises(SshConfigError):
        workstation_from_outputs("aws", {**OUTPUTS, field: value}, None)


def test_identity_paths_and_stack_names_that_cannot_be_written_are_refused() -> None:
    with pytest.raises(SshConfigError, match="quote or a newline"):
        Workstation("aws", "198.51.100.23", "ubuntu", 'a"b')
    with pytest.raises(SshConfigError, match="cannot name an ssh Host"):
        Workstation("aws prod", "198.51.100.23", "ubuntu")
    assert forwards_from_tunnel("ssh -N -L 8000:localhost:8000 u@h") == (8000,)
