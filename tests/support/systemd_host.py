"""A real test host that boots systemd as PID 1: what the idle autostop runs under.

The sshd + dockerd hosts of testhosts.py have a shell as PID 1, which is enough
for the bootstrap's file and docker steps but not for anything that lives in
systemd: a timer, a unit's restart policy, `systemctl poweroff`. A host here is
a Debian bookworm tree booted with `systemd-nspawn --boot`:

- The tree is built once with debootstrap (systemd_rootfs.py: systemd, sshd,
  sudo, docker.io, python3, a venv /opt/jupyter with jupyter_server and
  ipykernel) and cached as a tar keyed by a hash of its recipe. Each host
  boots an overlay on it, so it starts fresh and its writes land in its own
  upper dir.
- Each host has a network namespace with a veth pair (10.202.N.1 outside,
  10.202.N.2 inside; testhosts.py uses "wbh" and 10.201.N, so both can run at
  once), its own cgroup in every hierarchy, and separate directories bound on
  /mnt and /var/lib/docker (an Azure scratch disk is a separate disk).
- sshd (Debian's ssh.service) lets the login user `wb` in with a key made for
  this host; `wb` has passwordless sudo. The host key is made per host too, and
  the SSH helpers here verify it.
- Debian's docker.io runs under systemd; /usr/bin/nvidia-container-runtime is
  a stand-in that execs runc, /usr/bin/nvidia-smi is the stand-in of
  nvidia_smi_standin.py reading /etc/gpu-workbench-test/gpus.json.
- The journal is persistent, so `journal()` reads it after the host stopped.

Nothing between a unit on the host and the nspawn process is mocked: when the
host runs `systemctl poweroff`, systemd stops every unit and nspawn exits 0
(133 for a reboot), which `wait_for_exit` reports. See ../shared/RECIPES.md
("A host that boots systemd") for the measurements behind the choices.

    python -m tests.support.systemd_rootfs        # build the rootfs cache, print times
    python -m tests.support.systemd_host up       # start one host, print how to reach it
    python -m tests.support.systemd_host down     # remove every systemd host of this box
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tests.support.systemd_rootfs import (
    LOGIN_USER,
    MIRROR_ENV,
    SUITE,
    debian_mirror,
    ensure_rootfs_tree,
    rootfs_tar_path,
)
from tests.support.systemd_rootfs import locked as _locked
from tests.support.systemd_rootfs import run as _run

if TYPE_CHECKING:
    from fabric import Connection

BASE_DIR = Path(os.environ.get("WORKBENCH_SYSTEMD_HOSTS_DIR", "/tmp/workbench-systemd-hosts"))
NETNS_PREFIX = "wbs"
SUBNET_PREFIX = "10.202"
# Each host's cgroups live under this group, below the cgroup this process is in.
CGROUP_GROUP = "workbench-systemd-hosts"
READINGS_PATH = "/etc/gpu-workbench-test/gpus.json"
NSPAWN_EXIT_POWEROFF = 0
NSPAWN_EXIT_REBOOT = 133

REQUIRED_BINARIES = (
    "debootstrap", "systemd-nspawn", "journalctl", "ip", "nsenter", "unshare", "chroot",
    "tar", "zstd", "ssh", "ssh-keygen", "mount", "umount", "busybox",
)


class HostDied(RuntimeError):
    """systemd-nspawn exited while we waited for the host: no use waiting longer."""


def wait_for(predicate: Any, *, what: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except HostDied:
            raise
        except Exception as exc:  # retried until the deadline
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}"
                       + (f": {last}" if last else ""))


# --- GPU readings for the nvidia-smi stand-in --------------------------------

@dataclass(frozen=True)
class GpuReading:
    """One GPU as the nvidia-smi stand-in reports it (defaults: an idle AWS g5 A10G)."""

    index: int = 0
    name: str = "NVIDIA A10G"
    uuid: str = ""
    driver_version: str = "535.104.05"
    compute_cap: str = "8.6"
    utilization_gpu: int = 0
    memory_used_mib: int = 0
    memory_total_mib: int = 23028

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name,
                "uuid": self.uuid or f"GPU-5e1f0000-0000-4000-8000-{self.index:012d}",
                "driver_version": self.driver_version, "compute_cap": self.compute_cap,
                "utilization.gpu": self.utilization_gpu, "memory.used": self.memory_used_mib,
                "memory.total": self.memory_total_mib}


@dataclass(frozen=True)
class ComputeApp:
    """A process using a GPU (`--query-compute-apps`); gpu_uuid None means the first GPU."""

    pid: int
    process_name: str
    used_memory_mib: int
    gpu_uuid: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {"pid": self.pid, "process_name": self.process_name,
                "used_memory": self.used_memory_mib}
        return data | ({"gpu_uuid": self.gpu_uuid} if self.gpu_uuid else {})


# --- a running host -------------------------------------------------------------

@dataclass
class SystemdHost:
    """One booted host. `ssh` goes through its sshd; `run_inside` enters it as root beside it."""

    name: str
    index: int
    dir: Path
    key_path: Path
    host_key_path: Path
    known_hosts_path: Path
    machine_id: str
    boot_time: float
    process: subprocess.Popen[bytes] | None = None
    init_pid: int = 0
    user: str = LOGIN_USER
    ready_seconds: float | None = None
    exit_code: int | None = field(default=None, init=False)
    exited_after: float | None = field(default=None, init=False)

    @property
    def ip(self) -> str:
        return f"{SUBNET_PREFIX}.{self.index}.2"

    @property
    def outside_ip(self) -> str:
        return f"{SUBNET_PREFIX}.{self.index}.1"

    @property
    def ssh_target(self) -> str:
        return f"{self.user}@{self.ip}"

    @property
    def root(self) -> Path:
        """The host's / as seen from the box (the overlay; writes land in upper/)."""
        return self.dir / "root"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def docker_dir(self) -> Path:
        """The box directory bound on the host's /var/lib/docker."""
        return self.dir / "docker"

    @property
    def mnt_dir(self) -> Path:
        """The box directory bound on the host's /mnt (the stand-in scratch disk)."""
        return self.dir / "mnt"

    # -- talking to it

    def ssh_argv(self, command: str, *, user: str | None = None) -> list[str]:
        """An OpenSSH command line that logs in with this host's key and checks its host key."""
        return ["ssh", "-F", "/dev/null", "-i", str(self.key_path),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}",
                "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", f"{user or self.user}@{self.ip}", command]

    def ssh(self, command: str, *, user: str | None = None, check: bool = True,
            input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `command` over real SSH as the login user (a shell command line)."""
        proc = subprocess.run(self.ssh_argv(command, user=user), input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name}: ssh {command!r} exited {proc.returncode}:\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def connection(self, *, user: str | None = None, **kwargs: Any) -> Connection:
        """A Fabric connection that rejects any host key but this host's.

        Its commands read no stdin (pytest's captured stdin cannot be read) unless
        the caller passes a config of its own.
        """
        import paramiko
        from fabric import Config, Connection

        # Its known_hosts through ssh_config, so the bootstrap's own host key
        # check (bootstrap.remote) reads this file, never the box's ~/.ssh.
        ssh_config = paramiko.SSHConfig.from_text(
            f"Host *\n  UserKnownHostsFile {self.known_hosts_path}\n"
            "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n")
        kwargs.setdefault("config", Config(overrides={"run": {"in_stream": False}},
                                           ssh_config=ssh_config))
        conn = Connection(self.ip, user=user or self.user, connect_timeout=5,
                          connect_kwargs={"key_filename": str(self.key_path),
                                          "look_for_keys": False, "allow_agent": False},
                          **kwargs)
        conn.client.load_host_keys(str(self.known_hosts_path))
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return conn

    def run_inside(self, script: str, *, check: bool = True, input: bytes | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """Run `sh -c script` as root in the host's namespaces, for setup and inspection.

        Not through sshd and not in a systemd unit: the process joins the host's
        mount, PID, network, IPC, UTS and cgroup namespaces, with a clean
        environment (none of this box's variables leak in).
        """
        if not self.is_running():
            raise RuntimeError(f"{self.name} is not running (exit {self.exit_code})")
        argv = ["nsenter", f"--target={self.init_pid}", "--mount", "--uts", "--ipc", "--net",
                "--pid", "--cgroup", "--root", "--wd", "--",
                "/usr/bin/env", "-i", "HOME=/root",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8", "/bin/sh", "-c", script]
        return _run(argv, check=check, input=input, timeout=timeout)

    def out(self, script: str, **kwargs: Any) -> str:
        return self.run_inside(script, **kwargs).stdout.decode()

    # -- GPU readings

    def set_gpu_readings(self, gpus: Iterable[GpuReading] = (GpuReading(),),
                         compute_apps: Iterable[ComputeApp] = (), *,
                         broken: bool = False) -> None:
        """What the host's nvidia-smi reports from now on; broken: the driver 'fails'."""
        data = {"gpus": [g.as_json() for g in gpus],
                "compute_apps": [a.as_json() for a in compute_apps], "broken": broken}
        path = self.root / READINGS_PATH.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.chmod(0o644)
        tmp.rename(path)  # a reader on the host sees the old file or the new, never half

    # -- lifecycle

    def is_running(self) -> bool:
        if self.process is not None:
            return self._poll() is None
        return self.init_pid > 0 and _alive(self.init_pid)

    def _poll(self) -> int | None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None and self.exit_code is None:
            self.exit_code = code
            self.exited_after = time.monotonic() - self.boot_time
        return code

    def wait_for_exit(self, timeout: float) -> tuple[int, float]:
        """Wait for the host to stop by itself: (nspawn's exit code, seconds since boot).

        0 is a poweroff, 133 a reboot (nspawn does not restart the host), other
        codes a failure. The seconds are measured from `boot_time`.
        """
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started by this process")
        deadline = time.monotonic() + timeout
        while self._poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running {timeout:g}s later")
            time.sleep(0.05)
        assert self.exit_code is not None and self.exited_after is not None
        return self.exit_code, self.exited_after

    def journal(self, unit: str | None = None, *args: str) -> str:
        """The host's persistent journal (`journalctl -D`), readable after it stopped."""
        argv = ["journalctl", "-D", str(self.root / "var/log/journal"), "--no-pager",
                "-o", "short-precise"]
        if unit:
            argv += ["-u", unit]
        proc = _run([*argv, *args], check=False)
        return proc.stdout.decode(errors="replace")

    def boot_log(self) -> str:
        """What the host printed on its console (nspawn's stdout)."""
        try:
            return (self.dir / "boot.log").read_text(errors="replace")
        except OSError:
            return ""

    def failed_units(self) -> list[str]:
        out = self.out("systemctl --failed --no-legend --plain", check=False)
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def wait_for_docker(self, timeout: float = 60) -> None:
        wait_for(lambda: self.run_inside("docker info >/dev/null", check=False).returncode == 0,
                 what=f"{self.name} dockerd", timeout=timeout, interval=0.3)


# --- processes, namespaces, cgroups, mounts ------------------------------------

def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _netns_names() -> set[str]:
    out = _run(["ip", "netns", "list"]).stdout.decode()
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _cgroup_dirs(name: str, *, create: bool = False) -> list[Path]:
    """This host's cgroup in every mounted hierarchy, below the cgroup this process is in.

    Below our own cgroup, not at the root: the box may account our memory in
    a cgroup of its own, and a host must stay inside that.
    """
    mounts: list[tuple[str, set[str], Path]] = []  # (fstype, super options, mountpoint)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fstype, _source, super_options = right.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((fstype, set(super_options.split(",")), Path(left.split()[4])))
    dirs = []
    seen: set[Path] = set()
    for entry in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = entry.split(":", 2)
        wanted = set(controllers.split(",")) if controllers else set()
        for fstype, options, mountpoint in mounts:
            if (fstype == "cgroup2") != (not controllers) or not wanted <= options:
                continue
            if mountpoint in seen:
                continue
            seen.add(mountpoint)
            parent = mountpoint / path.lstrip("/") / CGROUP_GROUP
            cg = parent / name
            if create:
                for d in (parent, cg):
                    d.mkdir(exist_ok=True)
                    # A new cpuset cgroup has no CPUs: nothing can join it until set.
                    if (d / "cpuset.cpus").exists() and not (d / "cpuset.cpus").read_text().strip():
                        (d / "cpuset.cpus").write_text((d.parent / "cpuset.cpus").read_text())
                        (d / "cpuset.mems").write_text((d.parent / "cpuset.mems").read_text())
            dirs.append(cg)
            break
    return dirs


def _cgroup_pids(dirs: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for top in dirs:
        if not top.is_dir():
            continue
        for d, _subdirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in Path(d, "cgroup.procs").read_text().split())
    return pids


def _remove_cgroups(dirs: Iterable[Path]) -> None:
    for top in dirs:
        if top.is_dir():
            for d, _subdirs, _files in os.walk(top, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        with contextlib.suppress(OSError):  # the group, once its last host is gone
            os.rmdir(top.parent)


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first."""
    found = []
    prefix = str(path).rstrip("/")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_host_processes(name: str, host_dir: Path) -> set[int]:
    """Kill the container's PID 1 (its PID namespace goes with it), nspawn, and
    stragglers; return the pids that survived (none, unless stuck in the kernel)."""
    for pid_file in ("init.pid", "nspawn.pid"):
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int((host_dir / pid_file).read_text()), signal.SIGKILL)
    cgroups = _recorded_cgroups(name, host_dir)
    pids: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # Anything left in the host's cgroups or its netns (a process that
        # nsenter put there is in the netns but not in the cgroups).
        pids = _cgroup_pids(cgroups)
        if name in _netns_names():
            out = _run(["ip", "netns", "pids", name], check=False).stdout.decode()
            pids.update(int(p) for p in out.split() if p.isdigit())
        pids = {p for p in pids if _alive(p)}
        if not pids:
            return pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return pids


def _recorded_cgroups(name: str, host_dir: Path) -> list[Path]:
    """The cgroups the host was started in, as recorded then: a later process (a
    cleanup run) may itself sit in other cgroups, so it cannot recompute them."""
    try:
        return [Path(p) for p in json.loads((host_dir / "cgroups.json").read_text())]
    except (OSError, ValueError):
        return _cgroup_dirs(name)


def _destroy(name: str, host_dir: Path, process: subprocess.Popen[bytes] | None = None) -> None:
    cgroups = _recorded_cgroups(name, host_dir)
    survivors = _kill_host_processes(name, host_dir)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)  # reap it: no zombie nspawn left behind
    # nspawn locks the directory it boots by inode; a killed nspawn leaves the lock file.
    with contextlib.suppress(OSError):
        st = (host_dir / "root").stat()
        Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}").unlink(missing_ok=True)
    for point in _mounts_under(host_dir):
        if _run(["umount", str(point)], check=False).returncode != 0:
            _run(["umount", "--lazy", str(point)], check=False)
    # Delete the veth pair ourselves: the kernel tears a deleted netns down
    # asynchronously, and the next host may want the same interface name now.
    _run(["ip", "link", "del", f"{name}o"], check=False)
    if name in _netns_names():
        _run(["ip", "netns", "del", name], check=False)
    _remove_cgroups(cgroups)
    # nspawn keeps a per-machine directory for mount propagation on the box.
    for run_dir in Path("/run/systemd/nspawn").glob(f"*/{name}"):
        for point in _mounts_under(run_dir):
            _run(["umount", "--lazy", str(point)], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)
    if survivors:
        raise RuntimeError(f"{name}: processes survived SIGKILL: {sorted(survivors)}; "
                           f"{host_dir} kept")
    shutil.rmtree(host_dir, ignore_errors=True)


def cleanup_stale() -> None:
    """Remove hosts left behind by a test run that died (its owner pid is gone)."""
    if BASE_DIR.exists():
        with _locked(BASE_DIR / ".lock"):
            for host_dir in BASE_DIR.glob(f"{NETNS_PREFIX}*"):
                try:
                    owner = int((host_dir / "owner").read_text())
                except (OSError, ValueError):
                    owner = 0
                if owner and _alive(owner):
                    continue
                _destroy(host_dir.name, host_dir)
    # A netns of ours with no directory: its run died between the two.
    for netns in _netns_names():
        if (netns.startswith(NETNS_PREFIX) and netns[len(NETNS_PREFIX):].isdigit()
                and not (BASE_DIR / netns).exists()):
            _destroy(netns, BASE_DIR / netns)


def _free_index() -> int:
    used = set()
    names = _netns_names() | {d.name for d in BASE_DIR.glob(f"{NETNS_PREFIX}*")}
    for name in names:
        if name.startswith(NETNS_PREFIX) and name[len(NETNS_PREFIX):].isdigit():
            used.add(int(name[len(NETNS_PREFIX):]))
    for i in range(1, 250):
        if i not in used:
            return i
    raise RuntimeError("no free systemd host index (250 hosts in use?)")


def _port_open(ip: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((ip, port)) == 0


def _container_init_pid(nspawn_pid: int) -> int | None:
    """The host's PID 1 as the box sees it: nspawn's child that is PID 1 in its namespace."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
        if nspid and nspid.group(1).split()[-1] == "1" and len(nspid.group(1).split()) > 1:
            return int(child)
    return None


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    """uid, gid of `user` in the tree's /etc/passwd (not the box's)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return int(parts[2]), int(parts[3])
    raise RuntimeError(f"no user {user} in {root}/etc/passwd")


def _prepare_root(root: Path, *, name: str, machine_id: str, host_dir: Path,
                  client_pub: Path) -> None:
    """What makes this host itself, written into its overlay before it boots."""
    (root / "etc/hostname").write_text(name + "\n")
    # Its own name resolves (or sudo complains on every call); none of the box's entries.
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/machine-id").write_text(machine_id + "\n")
    for suffix, mode in (("", 0o600), (".pub", 0o644)):
        dest = root / f"etc/ssh/ssh_host_ed25519_key{suffix}"
        shutil.copyfile(host_dir / f"ssh_host_ed25519_key{suffix}", dest)
        dest.chmod(mode)
    uid, gid = _passwd_ids(root, LOGIN_USER)
    ssh_dir = root / "home" / LOGIN_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, uid, gid)
    keys = ssh_dir / "authorized_keys"
    shutil.copyfile(client_pub, keys)
    keys.chmod(0o600)
    os.chown(keys, uid, gid)
    # No NVIDIA container toolkit here and no GPU: `--runtime nvidia` runs runc.
    runtime = root / "usr/bin/nvidia-container-runtime"
    runtime.write_text("#!/bin/sh\n# gpu-workbench test stand-in: no GPU here.\n"
                       'exec runc "$@"\n')
    runtime.chmod(0o755)
    smi = root / "usr/bin/nvidia-smi"
    shutil.copyfile(Path(__file__).with_name("nvidia_smi_standin.py"), smi)
    smi.chmod(0o755)


def _setup_netns(name: str, index: int) -> None:
    outside, inside = f"{name}o", f"{name}i"
    _run(["ip", "link", "del", outside], check=False)  # left by a host that died
    _run(["ip", "netns", "add", name])
    _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
    _run(["ip", "link", "set", inside, "netns", name])
    _run(["ip", "addr", "add", f"{SUBNET_PREFIX}.{index}.1/24", "dev", outside])
    _run(["ip", "link", "set", outside, "up"])
    _run(["ip", "-n", name, "link", "set", inside, "name", "eth0"])
    _run(["ip", "-n", name, "addr", "add", f"{SUBNET_PREFIX}.{index}.2/24", "dev", "eth0"])
    _run(["ip", "-n", name, "link", "set", "eth0", "up"])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])


def start_systemd_host(*, owner_pid: int | None = None, import_image: bool = True,
                       boot_timeout: float = 120) -> SystemdHost:
    """Boot one host; return once its sshd lets the login user in (and dockerd has
    the stand-in image, with import_image)."""
    tree = ensure_rootfs_tree()
    with _locked(BASE_DIR / ".lock"):
        index = _free_index()
        name = f"{NETNS_PREFIX}{index}"
        host_dir = BASE_DIR / name
        host_dir.mkdir(parents=True)
        (host_dir / "owner").write_text(str(owner_pid or os.getpid()))
    host: SystemdHost | None = None
    try:
        for key in ("id_ed25519", "ssh_host_ed25519_key"):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-{key}",
                  "-f", str(host_dir / key)])
        host_pub = (host_dir / "ssh_host_ed25519_key.pub").read_text().split()
        known_hosts = host_dir / "known_hosts"
        known_hosts.write_text(f"{SUBNET_PREFIX}.{index}.2 {host_pub[0]} {host_pub[1]}\n")
        for d in ("upper", "work", "root", "docker", "mnt"):
            (host_dir / d).mkdir()
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={tree},upperdir={host_dir / 'upper'},workdir={host_dir / 'work'}",
              str(host_dir / "root")])
        machine_id = secrets.token_hex(16)
        _prepare_root(host_dir / "root", name=name, machine_id=machine_id, host_dir=host_dir,
                      client_pub=host_dir / "id_ed25519.pub")
        _setup_netns(name, index)
        cgroups = _cgroup_dirs(name, create=True)
        (host_dir / "cgroups.json").write_text(json.dumps([str(cg) for cg in cgroups]))
        host = SystemdHost(name=name, index=index, dir=host_dir,
                           key_path=host_dir / "id_ed25519",
                           host_key_path=host_dir / "ssh_host_ed25519_key.pub",
                           known_hosts_path=known_hosts, machine_id=machine_id,
                           boot_time=time.monotonic())
        _boot(host, cgroups, boot_timeout)
        host.set_gpu_readings()  # one idle GPU until a test says otherwise
        if import_image:
            import_standin_image(host)
        return host
    except BaseException:
        _destroy(name, host_dir, host.process if host is not None else None)
        raise


def _boot(host: SystemdHost, cgroups: list[Path], boot_timeout: float) -> None:
    """Start systemd-nspawn on the host's tree; return once sshd lets the login user in."""
    name, host_dir = host.name, host.dir
    nspawn = [
        "systemd-nspawn", "--boot", f"--directory={host_dir / 'root'}", f"--machine={name}",
        f"--uuid={host.machine_id}",
        # No systemd on the box to register with or to make a scope unit for us.
        "--keep-unit", "--register=no",
        "--link-journal=no",  # the journal stays in the host's own /var/log/journal
        f"--network-namespace-path=/run/netns/{name}",
        "--capability=all",  # dockerd and runc need what a VM's root has
        "--system-call-filter=add_key keyctl bpf",  # runc uses them
        f"--bind={host_dir / 'docker'}:/var/lib/docker",
        f"--bind={host_dir / 'mnt'}:/mnt",
        "--console=read-only",
    ]
    env = dict(os.environ)
    # dockerd writes /proc/sys/net (forwarding); nspawn makes it read-only
    # with --network-namespace-path unless told the netns is the host's own.
    env["SYSTEMD_NSPAWN_API_VFS_WRITABLE"] = "network"
    env["WORKBENCH_CGROUP_PROCS"] = " ".join(str(cg / "cgroup.procs") for cg in cgroups)
    log = open(host_dir / "boot.log", "ab")  # noqa: SIM115 - handed to the child
    host.boot_time = time.monotonic()
    host.exit_code = host.exited_after = None
    # The shell joins the host's cgroups and execs nspawn, so everything the
    # host ever runs is inside them (and cleanup finds it there).
    host.process = subprocess.Popen(
        ["/bin/sh", "-c",
         'for f in $WORKBENCH_CGROUP_PROCS; do echo $$ > "$f"; done; '
         'unset WORKBENCH_CGROUP_PROCS; exec "$@"', "launch", *nspawn],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,  # its own process group: a Ctrl-C of pytest is not its
    )
    log.close()
    (host_dir / "nspawn.pid").write_text(str(host.process.pid))
    nspawn_pid = host.process.pid

    def init_found() -> bool:
        _check_alive(host)
        host.init_pid = _container_init_pid(nspawn_pid) or 0
        return host.init_pid > 0

    wait_for(init_found, what=f"{name} PID 1", timeout=30, interval=0.05)
    (host_dir / "init.pid").write_text(str(host.init_pid))

    def ssh_ready() -> bool:
        _check_alive(host)
        return (_port_open(host.ip, 22)
                and host.ssh("true", check=False, timeout=15).returncode == 0)

    wait_for(ssh_ready, what=f"{name} sshd", timeout=boot_timeout, interval=0.1)
    host.ready_seconds = time.monotonic() - host.boot_time


def boot_again(host: SystemdHost, *, wipe_mnt: bool = False, boot_timeout: float = 120) -> None:
    """Start a host that powered itself off, as a cloud starts a stopped VM: the same
    disks (its tree, /var/lib/docker), the same address and keys.

    wipe_mnt: /mnt comes back empty, as Azure's resource disk does after a deallocate
    (azure-compute-docs managed-disks-overview: "Data on the temporary disk might be
    lost ... when you stop the VM").
    """
    if host.is_running():
        raise RuntimeError(f"{host.name} is still running")
    if host.process is not None:
        host.process.wait(timeout=10)
    # nspawn locks the tree it boots by inode; a clean exit removes the lock, a killed one not.
    with contextlib.suppress(OSError):
        st = host.root.stat()
        Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}").unlink(missing_ok=True)
    if wipe_mnt:
        for entry in host.mnt_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    _boot(host, _recorded_cgroups(host.name, host.dir), boot_timeout)


def _check_alive(host: SystemdHost) -> None:
    if host.process is not None and host._poll() is not None:
        raise HostDied(f"{host.name}: systemd-nspawn exited {host.exit_code} while "
                           f"booting:\n{host.boot_log()[-3000:]}")


def import_standin_image(host: SystemdHost) -> str:
    """Import testhosts' busybox stand-in image into the host's dockerd; return its name."""
    from tests.support import testhosts

    host.wait_for_docker()
    tar_path = testhosts.ensure_standin_rootfs()
    host.run_inside(
        "docker import --change 'ENV PATH=/usr/local/bin:/bin' "
        f"--change 'CMD [\"jupyter\"]' - {testhosts.STANDIN_IMAGE} >/dev/null",
        input=tar_path.read_bytes())
    return testhosts.STANDIN_IMAGE


def stop_systemd_host(host: SystemdHost) -> None:
    """Kill the host (if still up) and remove all it had: processes, mounts, netns, dirs."""
    _destroy(host.name, host.dir, host.process)


@contextlib.contextmanager
def systemd_host(**kwargs: Any) -> Iterator[SystemdHost]:
    host = start_systemd_host(**kwargs)
    try:
        yield host
    finally:
        stop_systemd_host(host)


class Played(Protocol):
    """A scenario played on a host of its own: what side_by_side and finished need."""

    name: str
    host: SystemdHost | None
    done: threading.Event
    error: str  # the traceback, if it failed
    journal: str


P = TypeVar("P", bound=Played)


@contextlib.contextmanager
def side_by_side(scenarios: dict[str, P], play: Callable[[P], None], *,
                 timeout: float) -> Iterator[dict[str, P]]:
    """Play every scenario in a thread of its own (play starts its host and sets done);
    afterwards wait up to `timeout` for each, then stop every host, all of them even
    when stopping one fails (that error is raised once all are stopped)."""
    threads = [threading.Thread(target=play, args=(s,), daemon=True) for s in scenarios.values()]
    for t in threads:
        t.start()
    try:
        yield scenarios
    finally:
        for s in scenarios.values():
            s.done.wait(timeout=timeout)
        with contextlib.ExitStack() as stops:
            for s in scenarios.values():
                if s.host is not None:
                    stops.callback(stop_systemd_host, s.host)


def finished(scenarios: dict[str, P], name: str, *, timeout: float) -> P:
    """The scenario once played (waiting up to `timeout`), failing with its traceback and
    the end of its journal if it failed."""
    s = scenarios[name]
    assert s.done.wait(timeout=timeout), f"{name} still running"
    assert not s.error, s.error + "\n" + s.journal[-3000:]
    return s


def missing_real_parts() -> str | None:
    """Why systemd hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "systemd test hosts need root (namespaces, mounts, debootstrap)"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]
    if missing:
        return ("missing binaries for systemd test hosts: " + ", ".join(missing)
                + " (scripts/install-test-deps)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem loaded (modprobe overlay)"
    if not rootfs_tar_path().exists() and debian_mirror() is None:
        return (f"no cached systemd rootfs ({rootfs_tar_path()}) and no Debian {SUITE} "
                f"mirror to build one (set {MIRROR_ENV})")
    return None


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down"):
        print(__doc__)
        return 2
    if argv[0] == "down":
        if BASE_DIR.exists():
            for host_dir in BASE_DIR.glob(f"{NETNS_PREFIX}*"):
                _destroy(host_dir.name, host_dir)
        cleanup_stale()
        return 0
    # A host started from the command line outlives this process: owner pid 1.
    host = start_systemd_host(owner_pid=1)
    print(f"{host.name} up in {host.ready_seconds:.1f} s: "
          f"{' '.join(host.ssh_argv('')[:-1])}  (nsenter -t {host.init_pid} -a)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
