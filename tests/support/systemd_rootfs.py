"""The Debian bookworm tree the systemd test hosts boot (tests/support/systemd_host.py).

Built once with debootstrap from the box's own Debian mirror, set up in a chroot
(login user, sshd without host keys, persistent journal, a venv /opt/jupyter
with jupyter_server and ipykernel, the cgroup v1 fix for runc), then cached in
CACHE_DIR as a zstd tar keyed by a hash of its recipe: packages, pip
requirements and the setup script. A changed recipe builds a new tar; an
unchanged one is never rebuilt. Beside the tar lies the unpacked tree, the
read-only lower dir of every host's overlay, and a JSON with the build's timings.
Trees of older recipes stay (another branch may still use them): delete
CACHE_DIR to reclaim the space.

    python -m tests.support.systemd_rootfs     # build (or find) it, print the timings
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

SUITE = "bookworm"
CACHE_DIR = Path(os.environ.get("WORKBENCH_SYSTEMD_ROOTFS_CACHE",
                                "/var/cache/gpu-workbench/systemd-rootfs"))
MIRROR_ENV = "WORKBENCH_DEBIAN_MIRROR"
LOGIN_USER = "wb"

# What the cached tree holds. Changing any of these (or ROOTFS_SETUP) changes the
# recipe hash, so the next run builds a new tree instead of using a stale one.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "sudo",
    "docker.io", "iptables", "python3", "python3-venv", "iproute2", "procps",
    "util-linux", "curl", "ca-certificates", "kmod", "less",
)
PIP_REQUIREMENTS = ("jupyter_server==2.21.1", "ipykernel==7.4.0")

# Runs in the chroot after debootstrap, with the wheels in /tmp/wheels.
ROOTFS_SETUP = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

# Jupyter from wheels downloaded on the box: the box reaches PyPI through a TLS
# proxy whose CA the chroot does not (and should not) trust.
python3 -m venv /opt/jupyter
/opt/jupyter/bin/pip install --quiet --no-index --find-links /tmp/wheels @PIP_REQUIREMENTS@
/opt/jupyter/bin/pip freeze > /opt/jupyter/requirements.lock
rm -rf /tmp/wheels

# The login user. "*" (not the new account's "!") so sshd does not treat it as locked.
useradd --create-home --shell /bin/bash --uid 1000 --user-group @USER@
usermod -p '*' @USER@
echo "@USER@ ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/@USER@
chmod 440 /etc/sudoers.d/@USER@

# sshd: one host key, made per host at start (none in the shared tree), keys only.
rm -f /etc/ssh/ssh_host_*
cat > /etc/ssh/sshd_config.d/workbench-test.conf <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF

# Identity per host: machine-id and hostname are written at start.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/hostname
# No DNS on a test host (its netns reaches only the box); keep the box's out.
echo "# gpu-workbench test host: no DNS" > /etc/resolv.conf

# A persistent journal, readable from outside after the host powered off.
mkdir -p /var/log/journal
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=persistent\n' > /etc/systemd/journald.conf.d/persistent.conf

# On a cgroup v1 box nspawn mounts the controller hierarchies read-only, and
# runc then cannot create a container's cgroups. Each host has a cgroup of its
# own in every hierarchy (systemd_host._cgroup_dirs), so making them writable inside
# gives dockerd that subtree and nothing above it.
cat > /usr/local/sbin/workbench-cgroup-rw <<'EOF'
#!/bin/sh
for d in /sys/fs/cgroup/*/; do
  d=${d%/}
  [ -L "$d" ] && continue          # cpu,cpuacct style aliases
  mountpoint -q "$d" || continue
  mount -o remount,bind,rw "$d"
done
EOF
chmod 755 /usr/local/sbin/workbench-cgroup-rw
cat > /etc/systemd/system/workbench-cgroup-rw.service <<'EOF'
[Unit]
Description=Make the cgroup v1 controllers writable for runc (gpu-workbench test host)
DefaultDependencies=no
Before=containerd.service docker.service sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/workbench-cgroup-rw

[Install]
WantedBy=sysinit.target
EOF
systemctl enable workbench-cgroup-rw.service

# Nothing in a test host may reach the internet or wait for it.
systemctl mask apt-daily.timer apt-daily-upgrade.timer

apt-get clean
rm -rf /var/lib/apt/lists/*
"""


class RealPartsMissing(RuntimeError):
    """The box lacks something the tree needs (a Debian mirror to build it from)."""


def run(argv: Sequence[str], *, check: bool = True, input: bytes | None = None,
        timeout: float = 120, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """Run argv, capture its output; raise with its stderr's tail when check and it fails."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return proc


def locked(path: Path) -> contextlib.AbstractContextManager[object]:
    """An exclusive flock on `path`: one builder of the cache, one allocator of host indexes."""
    path.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def held() -> Iterator[object]:
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield fh

    return held()


def debian_mirror() -> str | None:
    """The box's Debian mirror for SUITE: $WORKBENCH_DEBIAN_MIRROR or /etc/apt/sources.list*."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites in _apt_entries(text, deb822=path.suffix == ".sources"):
            if SUITE in suites:
                return uri
    return None


def _apt_entries(text: str, *, deb822: bool) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of each binary ("deb") source in an apt sources file."""
    if deb822:
        for paragraph in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in paragraph.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()
        return
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def recipe_hash() -> str:
    """A hash of everything that decides the tree's contents (not the mirror)."""
    recipe = {"suite": SUITE, "variant": "minbase", "packages": PACKAGES,
              "pip": PIP_REQUIREMENTS, "setup": ROOTFS_SETUP, "user": LOGIN_USER}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_tar_path() -> Path:
    return CACHE_DIR / f"rootfs-{recipe_hash()}.tar.zst"


def rootfs_build_info() -> dict[str, Any] | None:
    """Timings recorded when the cached tar was built (None if it has not been)."""
    try:
        info: dict[str, Any] = json.loads(
            (CACHE_DIR / f"rootfs-{recipe_hash()}.json").read_text())
    except (OSError, ValueError):
        return None
    return info


def ensure_rootfs_tar(log: Callable[[str], object] | None = None) -> Path:
    """The cached rootfs tar for the current recipe, built on first use (a few minutes)."""
    tar_path = rootfs_tar_path()
    if tar_path.exists():
        return tar_path
    with locked(CACHE_DIR / ".lock"):
        if not tar_path.exists():  # another process may have built it while we waited
            _build_rootfs(tar_path, log=log)
    return tar_path


def ensure_rootfs_tree() -> Path:
    """The unpacked tree that every host's overlay uses as its read-only lower dir."""
    tree, complete = _tree_paths()
    if complete.exists():
        return tree
    tar_path = ensure_rootfs_tar()
    with locked(CACHE_DIR / ".lock"):
        if not complete.exists():
            partial = tree.with_name(tree.name + ".unpacking")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(tree, ignore_errors=True)
            partial.mkdir(parents=True)
            run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd",
                  "-xpf", str(tar_path), "-C", str(partial)], timeout=600)
            partial.rename(tree)
            complete.touch()
    return tree


def _tree_paths() -> tuple[Path, Path]:
    """The unpacked tree and the stamp that says it is whole (beside it, not in it:
    anything in the tree shows up in every host's /)."""
    tree = CACHE_DIR / f"rootfs-{recipe_hash()}"
    return tree, tree.with_name(tree.name + ".complete")


def _download_wheels(dest: Path) -> None:
    """Wheels for the tree's Python (CPython 3.11, glibc 2.36, x86_64), fetched on the box."""
    platforms = ["manylinux_2_36_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                 "manylinux2014_x86_64", "linux_x86_64", "any"]
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
            "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
    for platform in platforms:
        argv += ["--platform", platform]
    run([*argv, *PIP_REQUIREMENTS], timeout=600)


def _build_rootfs(tar_path: Path, log: Callable[[str], object] | None = None) -> None:
    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    mirror = debian_mirror()
    if mirror is None:
        raise RealPartsMissing(f"no Debian {SUITE} mirror in /etc/apt/sources.list*; "
                               f"set {MIRROR_ENV}")
    build = CACHE_DIR / f".build-{recipe_hash()}"
    # A build that died left its tree behind; debootstrap mounts are gone with
    # the mount namespace it ran in (unshare below), so a plain delete is enough.
    shutil.rmtree(build, ignore_errors=True)
    root = build / "root"
    root.mkdir(parents=True)
    started = time.monotonic()
    say(f"debootstrap {SUITE} from {mirror} ...")
    # Its own mount namespace: the /proc and /sys debootstrap mounts into the
    # tree vanish with it even if it is killed.
    run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
          "--include=" + ",".join(PACKAGES), SUITE, str(root), mirror], timeout=1800)
    debootstrap_s = time.monotonic() - started

    mark = time.monotonic()
    say("downloading wheels ...")
    _download_wheels(root / "tmp" / "wheels")
    setup = (ROOTFS_SETUP.replace("@PIP_REQUIREMENTS@", " ".join(PIP_REQUIREMENTS))
             .replace("@USER@", LOGIN_USER))
    say("setting the tree up ...")
    run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
          'set -e; mount -t proc proc "$1/proc"; mount --rbind /dev "$1/dev"; '
          'exec chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root '
          '/bin/sh -s', "setup", str(root)], input=setup.encode(), timeout=1800)
    setup_s = time.monotonic() - mark

    mark = time.monotonic()
    say("packing the tar ...")
    partial = tar_path.with_name(tar_path.name + ".partial")
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd -T0 -3",
          "-cf", str(partial), "-C", str(root), "."], timeout=1800)
    pack_s = time.monotonic() - mark
    info = {"recipe": recipe_hash(), "mirror": mirror, "packages": PACKAGES,
            "pip": PIP_REQUIREMENTS, "debootstrap_seconds": round(debootstrap_s, 1),
            "setup_seconds": round(setup_s, 1), "pack_seconds": round(pack_s, 1),
            "build_seconds": round(time.monotonic() - started, 1),
            "tar_bytes": partial.stat().st_size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    partial.rename(tar_path)
    (CACHE_DIR / f"rootfs-{recipe_hash()}.json").write_text(json.dumps(info, indent=2) + "\n")
    # The tree just built is what unpacking the tar would give: keep it as the lower dir.
    tree, complete = _tree_paths()
    complete.unlink(missing_ok=True)
    shutil.rmtree(tree, ignore_errors=True)
    root.rename(tree)
    complete.touch()
    shutil.rmtree(build, ignore_errors=True)
    say(f"rootfs built in {info['build_seconds']} s: {tar_path}")


def main() -> int:
    ensure_rootfs_tar(log=print)
    ensure_rootfs_tree()
    print(json.dumps(rootfs_build_info(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
