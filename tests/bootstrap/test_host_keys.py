"""Host key checking (bootstrap.remote.HostKeyCheck) against OpenSSH's own tools.

No sshd here: the check is given the key a server would offer. What it writes
is read back by `ssh-keygen -F` and removed by the `ssh-keygen -R` it prints,
so the files stay what OpenSSH reads. The real connections (an impostor host,
a new host, strict mode, the Slurm login node) are in test_host_keys_on_hosts.py
and tests/cluster/test_host_keys_login_node.py.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import shlex
import subprocess
from pathlib import Path

import paramiko
import pytest
from fabric import Config, Connection

from bootstrap.remote import (
    HostKeyCheck,
    HostKeyRefused,
    host_matches,
    key_label,
    read_known_hosts,
    remove_command,
)


def keypair(tmp_path: Path, name: str, kind: str = "ed25519") -> tuple[paramiko.PKey, Path]:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    kind_name, b64 = path.with_suffix(".pub").read_text().split()[:2]
    key = paramiko.PKey.from_type_string(kind_name, base64.b64decode(b64))
    return key, path.with_suffix(".pub")


def connection(tmp_path: Path, host: str = "203.0.113.7", port: int = 22,
               **settings: str) -> Connection:
    lines = [f"UserKnownHostsFile {tmp_path / 'known_hosts'}", "GlobalKnownHostsFile /dev/null"]
    lines += [f"{k} {v}" for k, v in settings.items()]
    config = Config(ssh_config=paramiko.SSHConfig.from_text(
        "Host *\n" + "".join(f"  {ln}\n" for ln in lines)))
    return Connection(host, port=port, user="u", config=config)


def keygen_find(name: str, path: Path) -> str:
    return subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True,
                          text=True).stdout


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path) -> None:
    for kind in ("ed25519", "rsa", "ecdsa"):
        key, pub = keypair(tmp_path, f"k_{kind}", kind)
        _bits, fingerprint, *_, label = subprocess.run(
            ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
            check=True).stdout.split()
        assert key_label(key) == f"{label.strip('()')} {fingerprint}"


def test_host_patterns_as_openssh_matches_them(tmp_path: Path) -> None:
    assert host_matches("a.example.com,203.0.113.7", "203.0.113.7")
    assert host_matches("*.example.com", "gpu.example.com")
    assert not host_matches("*.example.com,!gpu.example.com", "gpu.example.com")
    assert host_matches("[203.0.113.7]:2222", "[203.0.113.7]:2222")  # brackets are literal
    assert not host_matches("[203.0.113.7]:2222", "203.0.113.7")
    assert not host_matches("[203.0.113.7]:2222", "2")
    assert host_matches("203.0.113.?", "203.0.113.7")
    # A line hashed by OpenSSH itself.
    _, pub = keypair(tmp_path, "k")
    plain = tmp_path / "plain"
    plain.write_text(f"[gpu.example.com]:2222 {pub.read_text()}")
    subprocess.run(["ssh-keygen", "-H", "-f", str(plain)], check=True, capture_output=True)
    hashed = plain.read_text().split()[0]
    assert hashed.startswith("|1|")
    assert host_matches(hashed, "[gpu.example.com]:2222")
    assert not host_matches(hashed, "gpu.example.com")


def test_new_host_is_recorded_plain_as_the_file_is(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    other, _ = keypair(tmp_path, "other")
    known.write_text(f"198.51.100.1 {other.get_name()} {other.get_base64()}")  # no newline
    offered, _ = keypair(tmp_path, "offered")
    lines: list[str] = []
    check = HostKeyCheck(connection(tmp_path, port=2222), on_new=lines.append)
    check.missing_host_key(paramiko.SSHClient(), "[203.0.113.7]:2222", offered)
    assert lines == [f"new host [203.0.113.7]:2222: {key_label(offered)} added to {known} "
                     "(plain; accept-new)"]
    assert known.read_text().splitlines()[1] == (
        f"[203.0.113.7]:2222 {offered.get_name()} {offered.get_base64()}")
    assert "[203.0.113.7]:2222" in keygen_find("[203.0.113.7]:2222", known)
    # Known now: the next check finds it, and paramiko gets it to compare.
    again = HostKeyCheck(connection(tmp_path, port=2222))
    assert [e.key for e in again.known] == [offered]


@pytest.mark.parametrize("setting", ["", "yes"])
def test_new_host_is_hashed_when_the_file_is_or_ssh_config_says(tmp_path: Path,
                                                                setting: str) -> None:
    known = tmp_path / "known_hosts"
    if not setting:  # a file that already hashes its names
        other, _ = keypair(tmp_path, "other")
        known.write_text(f"{paramiko.HostKeys.hash_host('198.51.100.1')} {other.get_name()} "
                         f"{other.get_base64()}\n")
    offered, _ = keypair(tmp_path, "offered")
    check = HostKeyCheck(connection(tmp_path, HashKnownHosts="yes") if setting
                         else connection(tmp_path))
    check.missing_host_key(paramiko.SSHClient(), "203.0.113.7", offered)
    last = known.read_text().splitlines()[-1]
    assert last.startswith("|1|") and "203.0.113.7" not in last
    assert "# Host 203.0.113.7 found: line" in keygen_find("203.0.113.7", known)
    if setting:  # a file the check created: private, as the names in it
        assert (known.stat().st_mode & 0o777) == 0o600


def test_strict_mode_refuses_an_unknown_host_and_records_nothing(tmp_path: Path) -> None:
    offered, _ = keypair(tmp_path, "offered")
    for conn, strict in ((connection(tmp_path), True),
                         (connection(tmp_path, StrictHostKeyChecking="yes"), False)):
        check = HostKeyCheck(conn, strict=strict)
        with pytest.raises(HostKeyRefused) as refused:
            check.missing_host_key(paramiko.SSHClient(), "203.0.113.7", offered)
        assert str(refused.value) == (
            f"203.0.113.7 is not in known_hosts ({tmp_path / 'known_hosts'}) and strict host "
            f"key checking is on: it offers {key_label(offered)}; stopped before logging in "
            "(nothing sent)")
    assert not (tmp_path / "known_hosts").exists()


def test_a_pinned_fingerprint_decides_for_a_new_host(tmp_path: Path) -> None:
    offered, _ = keypair(tmp_path, "offered")
    other, _ = keypair(tmp_path, "other")
    check = HostKeyCheck(connection(tmp_path), strict=True, pinned_fingerprint=other.fingerprint)
    with pytest.raises(HostKeyRefused, match=re.escape(
            f"is not the stack's: the stack's outputs say {other.fingerprint}, the host offers")):
        check.missing_host_key(paramiko.SSHClient(), "203.0.113.7", offered)
    lines: list[str] = []
    check = HostKeyCheck(connection(tmp_path), strict=True,
                         pinned_fingerprint=offered.fingerprint, on_new=lines.append)
    check.missing_host_key(paramiko.SSHClient(), "203.0.113.7", offered)
    assert lines[0].endswith("matches the stack's host_key_fingerprint)")


def test_mismatch_line_names_both_keys_and_the_command_that_removes_the_stale_entry(
        tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    recorded, _ = keypair(tmp_path, "recorded")
    offered, _ = keypair(tmp_path, "offered")
    known.write_text(f"# a comment\n[203.0.113.7]:2222 {recorded.get_name()} "
                     f"{recorded.get_base64()}\n")
    check = HostKeyCheck(connection(tmp_path, port=2222))
    message = check.mismatch_message(offered)
    command = f"ssh-keygen -R '[203.0.113.7]:2222' -f {known}"
    assert message == (
        f"host key mismatch for [203.0.113.7]:2222: known_hosts has {key_label(recorded)} "
        f"({known}:2), the host offers {key_label(offered)}; stopped before logging in (no "
        f"key, password or token sent); if the machine was rebuilt, remove the stale entry: "
        f"{command}")
    # The printed command is exact: it removes the entry.
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    assert keygen_find("[203.0.113.7]:2222", known) == ""


def test_remove_command_leaves_out_f_for_the_default_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # ssh-keygen's default is ~/.ssh/known_hosts of the passwd entry, whatever $HOME says.
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert remove_command("10.0.0.1", f"{home}/.ssh/known_hosts") == "ssh-keygen -R '10.0.0.1'"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert remove_command("10.0.0.1", str(tmp_path / ".ssh/known_hosts")) == (
        f"ssh-keygen -R '10.0.0.1' -f {tmp_path}/.ssh/known_hosts")
    assert remove_command("10.0.0.1", "/etc/ssh/ssh_known_hosts") == (
        "ssh-keygen -R '10.0.0.1' -f /etc/ssh/ssh_known_hosts")


def test_revoked_keys_are_refused_known_or_not(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    bad, _ = keypair(tmp_path, "bad")
    known.write_text(f"@revoked * {bad.get_name()} {bad.get_base64()}\n"
                     f"203.0.113.7 {bad.get_name()} {bad.get_base64()}\n"
                     "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n"
                     "garbage line\n")
    check = HostKeyCheck(connection(tmp_path))
    assert check.known == []  # a revoked key is not a known key, even when listed
    with pytest.raises(HostKeyRefused, match=rf"is marked @revoked in {known}:1"):
        check.missing_host_key(paramiko.SSHClient(), "203.0.113.7", bad)
    assert len(read_known_hosts(str(known))) == 2  # the CA and the garbage are skipped


def test_user_and_global_files_and_alias_come_from_ssh_config(tmp_path: Path) -> None:
    key, _ = keypair(tmp_path, "k")
    (tmp_path / "global").write_text(f"gpu-alias {key.get_name()} {key.get_base64()}\n")
    conn = connection(tmp_path, HostKeyAlias="gpu-alias")
    conn.ssh_config["globalknownhostsfile"] = str(tmp_path / "global")
    check = HostKeyCheck(conn)
    assert check.name == "gpu-alias" and [e.key for e in check.known] == [key]
    client = paramiko.SSHClient()
    check.install(client)
    assert client.get_host_keys().lookup("203.0.113.7") is not None
