"""The login node a slurm test talks to, and the busybox image its jobs run."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fabric import Config, Connection
from paramiko import SSHConfig

from tests.support.loopback_sshd import LoopbackSshd
from tests.support.real_parts import skip_or_fail
from tests.support.slurm_cluster import SlurmCluster, missing_real_parts


def require_real_parts() -> None:
    """Skip when the machine cannot run the cluster; fail instead where CI demands it."""
    missing = missing_real_parts()
    if not missing:
        return
    skip_or_fail("real Slurm test cluster needs: " + ", ".join(missing))


def build_busybox_image(root: Path) -> Path:
    """A charliecloud image directory: busybox-static, its applets, passwd/group, mount points."""
    image = root / "busybox-image"
    for sub in ("bin", "etc", "dev", "proc", "sys", "tmp", "home", "mnt", "root", "var/tmp"):
        (image / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("code", "data", "output", "scratch"):
        (image / "workspace" / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", image / "bin" / "busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = image / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (image / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (image / "etc" / "group").write_text("root:x:0:\n")
    for name in ("hosts", "resolv.conf"):
        (image / "etc" / name).write_text("")
    (image / "tmp").chmod(0o1777)
    return image


@dataclass
class LoginNode:
    """What tests need: a way in, where things are, and the cluster behind it."""

    sshd: LoopbackSshd
    cluster: SlurmCluster
    home: Path
    busybox_image: Path

    def connect(self, ssh_config: Path | None = None) -> Connection:
        """A connection that checks the node's host key against `ssh_config`'s
        known_hosts (default: the node's own key, pinned, strictly)."""
        config = Config(ssh_config=SSHConfig.from_path(str(ssh_config or self.sshd.ssh_config)))
        return Connection(
            host="127.0.0.1",
            port=self.sshd.port,
            user=self.sshd.user,
            config=config,
            connect_kwargs={
                "key_filename": str(self.sshd.client_key),
                "allow_agent": False,
                "look_for_keys": False,
            },
        )

    def run_as_user(self, command: str) -> subprocess.CompletedProcess[str]:
        """A shell command as the login user, for checks outside the tasks under test."""
        return subprocess.run(
            ["runuser", "-u", self.sshd.user, "--", "env", *self._env(), "sh", "-c", command],
            capture_output=True,
            text=True,
            cwd=self.home,
        )

    def _env(self) -> list[str]:
        env = {**self.cluster.client_env(), "HOME": str(self.home), "USER": self.sshd.user}
        return [f"{k}={v}" for k, v in env.items()]

    def wait_for_state(self, job_id: str, states: set[str], timeout: float = 60) -> str:
        """Poll squeue/sacct (as the user) until the job is in one of `states`."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            out = self.run_as_user(
                f"squeue -h -t all -j {job_id} -o %T 2>/dev/null || true; "
                f"sacct -n -X -P -j {job_id} -o State 2>/dev/null || true"
            ).stdout.split()
            last = out[0] if out else ""
            if last in states:
                return last
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not in {states} after {timeout}s (last: {last!r})")
