"""Real test hosts for the bootstrap: sshd + dockerd in their own namespaces.

Each host is a network namespace (veth pair, 10.201.N.1 outside, 10.201.N.2
inside) entered with its own mount, UTS and PID namespaces. Inside, /etc,
/home, /root, /usr and /var are overlays with a per-host upper dir, /run is a tmpfs,
/var/lib/docker and /mnt are per-host bind mounts (a separate directory, as an
Azure scratch disk is a separate disk). Debian's dockerd is started through
/etc/init.d/docker, so `service docker ...` on the host takes the same path as
on a VM without systemd. sshd listens on port 22 of the host's own address.

Nothing here is a mock: the bootstrap talks to these hosts over real SSH and
changes real files and a real dockerd. See ../shared/RECIPES.md for the
measurements behind the choices.

    python -m tests.support.testhosts up 2     # start two hosts, print them
    python -m tests.support.testhosts down     # remove every host this box has
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(os.environ.get("WORKBENCH_TESTHOSTS_DIR", "/tmp/workbench-testhosts"))
NETNS_PREFIX = "wbh"
LOGIN_USER = "wb"
# A second account whose sudo asks for a password (the fault tests need one).
PASSWORD_USER = "wbpw"
PASSWORD_USER_PASSWORD = "correct-horse-battery"
STANDIN_IMAGE = "local/clara-standin:1"
REQUIRED_BINARIES = (
    "sshd", "dockerd", "docker", "ip", "unshare", "nsenter", "setsid",
    "busybox", "sudo", "ssh-keygen", "runc", "start-stop-daemon", "dpkg-deb",
)


class RealPartsMissing(RuntimeError):
    """The box cannot run real test hosts (not root, or a binary is missing)."""


def missing_real_parts() -> str | None:
    """Why real hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network and mount namespaces)"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]
    if missing:
        return "missing binaries for test hosts: " + ", ".join(missing)
    if not Path("/etc/init.d/docker").exists():
        return "missing /etc/init.d/docker (apt package docker.io)"
    return None


def _run(argv: Sequence[str], *, check: bool = True, input: bytes | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


@dataclass
class TestHost:
    """One running host. `exec` runs as root inside it, beside sshd (not through it)."""

    name: str
    index: int
    dir: Path
    init_pid: int
    key_path: Path
    user: str = LOGIN_USER

    __test__ = False  # not a pytest test class despite the name

    @property
    def ip(self) -> str:
        return f"10.201.{self.index}.2"

    @property
    def outside_ip(self) -> str:
        return f"10.201.{self.index}.1"

    @property
    def ssh_target(self) -> str:
        return f"{self.user}@{self.ip}"

    @property
    def host_key_pub(self) -> Path:
        """The public half of the host key sshd serves (made fresh for every host)."""
        return self.dir / "ssh_host_ed25519_key.pub"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file naming this host with its real key (plain, one line), for
        tests that must not touch the box's ~/.ssh."""
        return self.dir / "known_hosts"

    def swap_host_key(self, *, log_level: str = "DEBUG1") -> tuple[Path, Path]:
        """Turn this host into an impostor of itself: same address, same users and
        files, another host key. Restarts sshd with a new key and a log of its own at
        `log_level` (DEBUG1 logs every authentication request). Returns (the new
        public key, the new log)."""
        key = self.dir / "impostor_ed25519_key"
        log = self.dir / "impostor-sshd.log"
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        config = (self.dir / "sshd_config").read_text().replace(
            f"HostKey {self.dir}/ssh_host_ed25519_key", f"HostKey {key}")
        (self.dir / "impostor_sshd_config").write_text(config + f"LogLevel {log_level}\n")
        self.exec("pid=$(cat /run/sshd.pid); kill $pid; "
                  "while kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
                  f"/usr/sbin/sshd -f {self.dir}/impostor_sshd_config -E {log}")
        _wait_for(lambda: _port_open(self.ip, 22), what=f"{self.name} impostor sshd")
        return key.with_name(key.name + ".pub"), log

    def exec(self, script: str, *, check: bool = True, input: bytes | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """Run `sh -c script` as root inside the host's namespaces."""
        argv = ["nsenter", "-t", str(self.init_pid), "-n", "-m", "-u", "-p", "--",
                "/bin/sh", "-c", script]
        return _run(argv, check=check, input=input, timeout=timeout)

    def out(self, script: str, **kwargs: object) -> str:
        return self.exec(script, **kwargs).stdout.decode()  # type: ignore[arg-type]

    def read_file(self, path: str) -> bytes | None:
        proc = self.exec(f"cat {path}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def write_file(self, path: str, data: bytes, mode: str = "644") -> None:
        self.exec(f"mkdir -p \"$(dirname {path})\" && cat > {path} && chmod {mode} {path}",
                  input=data)

    def remove(self, path: str) -> None:
        self.exec(f"rm -rf {path}")

    def mount_resource_disk(self, size_gib: int = 4000) -> None:
        """A separate /mnt with more free space than the root disk, as Azure's resource
        disk on a VM whose OS disk is short: a tmpfs, whose pages are used only when
        written (the stand-in image is a few MB)."""
        self.exec(f"mount -t tmpfs -o size={size_gib}g,mode=755 wb-resource /mnt")

    def docker_info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out("docker info --format '{{json .}}'"))
        return data

    def reset_docker_config(self) -> None:
        """Put dockerd back to its start state: no daemon.json, no container, stock root."""
        self.exec(
            "docker rm -f $(docker ps -aq) >/dev/null 2>&1; "
            "rm -f /etc/docker/daemon.json /etc/docker/daemon.json.bak-* "
            "/etc/docker/.daemon.json.*; "
            "kill -HUP $(cat /var/run/docker.pid)"
        )
        _wait_for(lambda: "nvidia" not in json.dumps(self.docker_info().get("Runtimes")),
                  what=f"{self.name}: dockerd reload")


def _wait_for(predicate: object, *, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception as exc:  # retried until the deadline
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}: {last}")


# --- host start script -------------------------------------------------------

START_SCRIPT = r"""#!/bin/bash
# PID 1 of one test host. bash, not sshd, is PID 1 so that orphans (dockerd
# detached by start-stop-daemon) are reaped; a zombie dockerd would make
# `service docker stop` wait for a process that is already gone.
set -euo pipefail
H=@DIR@
hostname @NAME@
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd /run/lock
for d in etc home root usr var; do
  mkdir -p "$H/upper/$d" "$H/work/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$H/upper/$d,workdir=$H/work/$d" "/$d"
done
mkdir -p /var/lib/docker "$H/docker" "$H/mnt"
mount --bind "$H/docker" /var/lib/docker
mount --bind "$H/mnt" /mnt
echo "127.0.1.1 @NAME@" >> /etc/hosts
ip link set lo up

# A host of its own: no Debian mirrors (no internet in here), a local apt
# source that carries the docker-compose-plugin stand-in.
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:@REPO@ ./" > /etc/apt/sources.list.d/workbench-local.list
rm -rf /var/lib/apt/lists/*

# The NVIDIA runtime stand-in: no GPU here, so `--runtime=nvidia` runs runc.
printf '#!/bin/sh\nexec runc "$@"\n' > /usr/bin/nvidia-container-runtime
chmod 755 /usr/bin/nvidia-container-runtime

# Debian's init script runs `ulimit -n 1048576`, which this sandbox refuses,
# and stops under `set -e`. It sources this file first.
cat > /etc/default/docker <<'EOF'
ulimit() { command ulimit "$@" 2>/dev/null || true; }
DOCKER_OPTS="--storage-driver=vfs --iptables=false"
DOCKER_LOGFILE=/var/log/docker.log
EOF

useradd -m -s /bin/bash @USER@
usermod -p '*' @USER@
echo "@USER@ ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/@USER@
chmod 440 /etc/sudoers.d/@USER@
useradd -m -s /bin/bash @PWUSER@
echo "@PWUSER@:@PWPASS@" | chpasswd
echo "@PWUSER@ ALL=(ALL) ALL" > /etc/sudoers.d/@PWUSER@
chmod 440 /etc/sudoers.d/@PWUSER@
for u in @USER@ @PWUSER@; do
  install -d -o $u -g $u -m 700 /home/$u/.ssh
  install -o $u -g $u -m 600 @PUBKEY@ /home/$u/.ssh/authorized_keys
done

# root may log in by key too (PermitRootLogin's default allows keys).
install -d -m 700 /root/.ssh && install -m 600 @PUBKEY@ /root/.ssh/authorized_keys

/etc/init.d/docker start >/dev/null
cat > "$H/sshd_config" <<EOF
Port 22
ListenAddress @IP@
HostKey $H/ssh_host_ed25519_key
PidFile /run/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 50
EOF
/usr/sbin/sshd -D -f "$H/sshd_config" -E "$H/sshd.log" &
echo ready > "$H/ready"
trap 'kill -TERM $(jobs -p) 2>/dev/null; exit 0' TERM
while true; do wait || true; sleep 1; done
"""


def _lock() -> contextlib.AbstractContextManager[object]:
    BASE_DIR.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def held() -> Iterator[object]:
        with open(BASE_DIR / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield fh

    return held()


def ensure_key() -> Path:
    """One ed25519 key pair for all hosts of this box (made once)."""
    key = BASE_DIR / "keys" / "id_ed25519"
    with _lock():
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "workbench-tests",
                  "-f", str(key)])
    return key


def ensure_compose_repo() -> Path:
    """A local apt repository with a `docker-compose-plugin` stand-in .deb.

    The hosts have no internet, so the compose step's apt path installs this
    package instead of Docker's. The plugin answers the Docker CLI's plugin
    handshake and `docker compose version`; it does not implement compose.
    """
    repo = BASE_DIR / "apt-repo"
    with _lock():
        if (repo / "Packages").exists():
            return repo
        build = Path(tempfile.mkdtemp(prefix="compose-deb-", dir=BASE_DIR))
        plugin = build / "usr/libexec/docker/cli-plugins/docker-compose"
        plugin.parent.mkdir(parents=True)
        plugin.write_text(textwrap.dedent("""\
            #!/bin/sh
            # Test stand-in for Docker Compose v2 (gpu-workbench tests only).
            if [ "$1" = docker-cli-plugin-metadata ]; then
              echo '{"SchemaVersion":"0.1.0","Vendor":"gpu-workbench tests",'\\
            '"Version":"v2.0.0-standin","ShortDescription":"Docker Compose stand-in"}'
              exit 0
            fi
            [ "$1" = compose ] && shift
            case "$1" in
              version) echo "Docker Compose version v2.0.0-standin" ;;
              *) echo "compose stand-in: only 'version' is implemented" >&2; exit 1 ;;
            esac
            """))
        plugin.chmod(0o755)
        (build / "DEBIAN").mkdir()
        (build / "DEBIAN/control").write_text(textwrap.dedent("""\
            Package: docker-compose-plugin
            Version: 2.0.0~standin
            Architecture: all
            Maintainer: gpu-workbench tests <tests@localhost>
            Description: Docker Compose plugin stand-in for gpu-workbench tests
            """))
        repo.mkdir(parents=True, exist_ok=True)
        deb = repo / "docker-compose-plugin_2.0.0~standin_all.deb"
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(build), str(deb)])
        shutil.rmtree(build)
        _write_packages_index(repo, deb)
    return repo


def _write_packages_index(repo: Path, deb: Path) -> None:
    """A flat-repo Packages file (what dpkg-scanpackages writes, without dpkg-dev)."""
    import hashlib

    control = _run(["dpkg-deb", "-f", str(deb)]).stdout.decode().rstrip("\n")
    data = deb.read_bytes()
    entry = (f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
             f"MD5sum: {hashlib.md5(data).hexdigest()}\n"
             f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n")
    (repo / "Packages").write_text(entry)


def ensure_standin_rootfs() -> Path:
    """A busybox rootfs tar standing in for the Clara Train image.

    `jupyter` serves HTTP on 8888 and, like JupyterLab, answers /cgi-bin/lab
    only with the token it was given in JUPYTER_TOKEN; `start_aiaa.sh` serves
    HTTP on 5000. There is no nvidia-smi in it (no GPU here).
    """
    tar_path = BASE_DIR / "clara-standin.tar"
    with _lock():
        if tar_path.exists():
            return tar_path
        busybox = Path(shutil.which("busybox") or "/bin/busybox")
        applets = _run([str(busybox), "--list"]).stdout.decode().split()
        files = {
            "usr/local/bin/jupyter": """\
                #!/bin/sh
                # Stand-in for `jupyter lab`: serves 8888, checks the token.
                mkdir -p /run/jupyter && printf '%s' "$JUPYTER_TOKEN" > /run/jupyter/token
                exec httpd -f -p 8888 -h /www/jupyter
                """,
            "usr/local/bin/start_aiaa.sh": """\
                #!/bin/sh
                # Stand-in for Clara's AIAA server: serves 5000.
                exec httpd -f -p 5000 -h /www/aiaa
                """,
            "www/jupyter/index.html": "JupyterLab stand-in\n",
            "www/jupyter/cgi-bin/lab": """\
                #!/bin/sh
                want=$(cat /run/jupyter/token)
                case "&$QUERY_STRING&" in
                  *"&token=$want&"*)
                    [ -n "$want" ] && printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nJupyterLab stand-in\\n' && exit 0 ;;
                esac
                printf 'Status: 403 Forbidden\\r\\nContent-Type: text/plain\\r\\n\\r\\ninvalid token\\n'
                """,
            "www/aiaa/index.html": "AIAA stand-in\n",
        }
        tmp = tar_path.with_suffix(".tmp")
        with tarfile.open(tmp, "w") as tar:
            def add_dir(name: str) -> None:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)

            for d in ("bin", "tmp", "run", "proc", "sys", "dev", "etc", "workspace",
                      "usr", "usr/local", "usr/local/bin", "www", "www/jupyter",
                      "www/jupyter/cgi-bin", "www/aiaa"):
                add_dir(d)
            tar.add(str(busybox), arcname="bin/busybox")
            for applet in applets:
                if applet == "busybox":
                    continue
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type = tarfile.SYMTYPE
                info.linkname = "busybox"
                tar.addfile(info)
            for name, text in files.items():
                data = textwrap.dedent(text).encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if not name.endswith(".html") else 0o644
                import io
                tar.addfile(info, io.BytesIO(data))
        tmp.rename(tar_path)
    return tar_path


def import_standin_image(host: TestHost) -> None:
    tar_path = ensure_standin_rootfs()
    host.exec(
        f"docker import --change 'ENV PATH=/usr/local/bin:/bin' "
        f"--change 'CMD [\"jupyter\"]' {tar_path} {STANDIN_IMAGE} >/dev/null"
    )


# --- lifecycle ----------------------------------------------------------------

def _netns_names() -> set[str]:
    out = _run(["ip", "netns", "list"]).stdout.decode()
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _alive(pid: int) -> bool:
    """Running, not a zombie (a killed host leader is our child until reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cleanup_stale() -> None:
    """Remove hosts left behind by a test run that died (its owner pid is gone)."""
    if not BASE_DIR.exists():
        return
    for host_dir in BASE_DIR.glob(f"{NETNS_PREFIX}*"):
        owner_file = host_dir / "owner"
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _alive(owner):
            continue
        _destroy(host_dir.name, host_dir)


def _port_open(ip: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((ip, port)) == 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _destroy(name: str, host_dir: Path) -> None:
    pid_file = host_dir / "leader.pid"
    with contextlib.suppress(OSError, ValueError):
        leader = int(pid_file.read_text())
        # Killing PID 1 of the host's PID namespace kills every process in it
        # (dockerd, containerd, containers); its mounts go with the namespace.
        for child in _children(leader):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(leader) and time.monotonic() < deadline:
            time.sleep(0.05)
    # Delete the veth pair ourselves: the kernel tears a deleted netns down
    # asynchronously, and the next host may want the same interface name now.
    _run(["ip", "link", "del", f"{name}o"], check=False)
    if name in _netns_names():
        # Anything still inside the netns (should be nothing) goes too.
        pids = _run(["ip", "netns", "pids", name], check=False).stdout.decode().split()
        for p in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(p), signal.SIGKILL)
        _run(["ip", "netns", "del", name], check=False)
    shutil.rmtree(host_dir, ignore_errors=True)


def _free_index() -> int:
    used = set()
    for name in _netns_names():
        if name.startswith(NETNS_PREFIX) and name[len(NETNS_PREFIX):].isdigit():
            used.add(int(name[len(NETNS_PREFIX):]))
    for d in BASE_DIR.glob(f"{NETNS_PREFIX}*"):
        if d.name[len(NETNS_PREFIX):].isdigit():
            used.add(int(d.name[len(NETNS_PREFIX):]))
    for i in range(1, 250):
        if i not in used:
            return i
    raise RuntimeError("no free test host index (250 hosts in use?)")


def start_host(*, owner_pid: int | None = None, image: bool = True) -> TestHost:
    """Start one host and wait until sshd and dockerd answer."""
    key = ensure_key()
    repo = ensure_compose_repo()
    with _lock():
        index = _free_index()
        name = f"{NETNS_PREFIX}{index}"
        host_dir = BASE_DIR / name
        host_dir.mkdir(parents=True)
        (host_dir / "owner").write_text(str(owner_pid or os.getpid()))
    try:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
              str(host_dir / "ssh_host_ed25519_key")])
        key_type, key_b64 = (host_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        (host_dir / "known_hosts").write_text(f"10.201.{index}.2 {key_type} {key_b64}\n")
        outside, inside = f"{name}o", f"{name}i"
        _run(["ip", "link", "del", outside], check=False)  # left by a host that died
        _run(["ip", "netns", "add", name])
        _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
        _run(["ip", "link", "set", inside, "netns", name])
        _run(["ip", "addr", "add", f"10.201.{index}.1/24", "dev", outside])
        _run(["ip", "link", "set", outside, "up"])
        _run(["ip", "-n", name, "link", "set", inside, "name", "eth0"])
        _run(["ip", "-n", name, "addr", "add", f"10.201.{index}.2/24", "dev", "eth0"])
        _run(["ip", "-n", name, "link", "set", "eth0", "up"])
        script = (START_SCRIPT.replace("@DIR@", str(host_dir)).replace("@NAME@", name)
                  .replace("@USER@", LOGIN_USER).replace("@PWUSER@", PASSWORD_USER)
                  .replace("@PWPASS@", PASSWORD_USER_PASSWORD)
                  .replace("@PUBKEY@", f"{key}.pub").replace("@IP@", f"10.201.{index}.2")
                  .replace("@REPO@", str(repo)))
        start = host_dir / "start.sh"
        start.write_text(script)
        start.chmod(0o755)
        log = open(host_dir / "start.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["setsid", "nsenter", f"--net=/var/run/netns/{name}", "unshare", "--mount",
             "--uts", "--pid", "--fork", "--mount-proc", "--propagation", "private",
             str(start)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        (host_dir / "leader.pid").write_text(str(proc.pid))
        # setsid execs nsenter which execs unshare: proc.pid is unshare, whose
        # one child is the host's PID 1.
        _wait_for(lambda: (host_dir / "ready").exists() or proc.poll() is not None,
                  what=f"{name} start", timeout=60)
        if proc.poll() is not None:
            raise RuntimeError(f"{name} failed to start:\n{(host_dir / 'start.log').read_text()}")
        children = _children(proc.pid)
        if not children:
            raise RuntimeError(f"{name}: host PID 1 not found")
        host = TestHost(name=name, index=index, dir=host_dir, init_pid=children[0],
                        key_path=key)
        _wait_for(lambda: host.exec("docker info >/dev/null", check=False).returncode == 0,
                  what=f"{name} dockerd")
        _wait_for(lambda: _port_open(host.ip, 22), what=f"{name} sshd")
        if image:
            import_standin_image(host)
        return host
    except BaseException:
        _destroy(name, host_dir)
        raise


def stop_host(host: TestHost) -> None:
    _destroy(host.name, host.dir)


def start_hosts(count: int, **kwargs: object) -> list[TestHost]:
    hosts: list[TestHost] = []
    try:
        for _ in range(count):
            hosts.append(start_host(**kwargs))  # type: ignore[arg-type]
    except BaseException:
        for h in hosts:
            stop_host(h)
        raise
    return hosts


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down"):
        print(__doc__)
        return 2
    if argv[0] == "down":
        for host_dir in BASE_DIR.glob(f"{NETNS_PREFIX}*"):
            _destroy(host_dir.name, host_dir)
        return 0
    count = int(argv[1]) if len(argv) > 1 else 1
    # Hosts started from the command line outlive this process: owner pid 1.
    for h in start_hosts(count, owner_pid=1):
        print(f"{h.name}  ssh -i {h.key_path} {h.ssh_target}  (nsenter -t {h.init_pid} -a)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
