"""A real single-node Slurm cluster on loopback, for tests.

Everything a cluster needs runs from Debian's own packages, each daemon in
the foreground under our Popen so teardown knows exactly what it started:

- munged on its own socket and key (never /run/munge), as the munge user;
- MariaDB (mariadbd as mysql) with a fresh datadir on a loopback port;
- slurmdbd, so sacct answers once a job has left the queue and
  AccountingStorageEnforce=associations makes accounts a cluster-side rule;
- slurmctld and slurmd, with a "gpu" GRES of two stand-in character devices.

All config, state, logs and sockets sit under one temp dir; every port is
picked free at start. Slurm's client commands find the cluster through
SLURM_CONF (see `client_env`), which the loopback sshd hands to every login
session.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.loopback_sshd import free_loopback_port, wait_for_port

DAEMONS = {
    "munged": "/usr/sbin/munged",
    "mariadbd": "/usr/sbin/mariadbd",
    "mariadb-install-db": "/usr/bin/mariadb-install-db",
    "mariadb": "/usr/bin/mariadb",
    "slurmdbd": "/usr/sbin/slurmdbd",
    "slurmctld": "/usr/sbin/slurmctld",
    "slurmd": "/usr/sbin/slurmd",
    "sacctmgr": "/usr/bin/sacctmgr",
    "sbatch": "/usr/bin/sbatch",
    "sshd": "/usr/sbin/sshd",
    "ch-run": "/usr/bin/ch-run",
    "ch-image": "/usr/bin/ch-image",
    "busybox": "/bin/busybox",
}

CLUSTER_NAME = "wbtest"
PARTITION = "gpu"
PARTITION_MAX_TIME = "02:00:00"
GPUS_ON_NODE = 2
# Accounts the test user holds. "research" is the one jobs name; "lapsed" is
# the user's default account and is kept off the partition (AllowAccounts), so
# a job that names no account is refused by slurmctld itself, the way
# clusters that bill each job to a named allocation refuse it.
ACCOUNT = "research"
DEFAULT_ACCOUNT = "lapsed"


def missing_real_parts() -> list[str]:
    """What this machine lacks to run the real cluster (empty when all is there)."""
    missing = [name for name, path in DAEMONS.items() if not os.access(path, os.X_OK)]
    if os.geteuid() != 0:
        missing.append("root (daemons run as munge/mysql/slurm and jobs as a test user)")
    for user in ("munge", "slurm", "mysql"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(f"system user {user}")
    return missing


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _wait_until(
    check: Callable[[], bool], timeout: float, what: str, logs: Sequence[Path] = ()
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tails = "\n".join(
        f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists()
    )
    raise RuntimeError(f"{what} not ready within {timeout}s\n{tails}")


@dataclass
class SlurmCluster:
    """munge + MariaDB + slurmdbd + slurmctld + slurmd, all on 127.0.0.1."""

    user: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wb-slurm-")))
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "run" / "munge.socket"

    def client_env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    # -- start ---------------------------------------------------------------

    def start(self) -> None:
        # The test user and every daemon user must reach files under root.
        self.root.chmod(0o755)
        for sub in ("etc", "log", "dev"):
            (self.root / sub).mkdir()
        (self.root / "log").chmod(0o777)
        self._start_munge()
        self._write_slurm_conf()
        self._start_mariadb()
        self._start_slurmdbd()
        self._add_associations()
        self._start_slurmctld_and_slurmd()

    def _spawn(self, name: str, argv: list[str], user: str | None = None) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": str(self.conf)}
        # Popen switches user itself rather than through runuser, so the pid we
        # hold is the daemon's (runuser waits 2 s after passing on a SIGTERM).
        ids: dict[str, object] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with open(self.log(name + ".stdio"), "ab") as stdio:
            self.processes[name] = subprocess.Popen(
                argv, env=env, stdout=stdio, stderr=stdio, start_new_session=True, **ids
            )  # type: ignore[call-overload]

    def _start_munge(self) -> None:
        base = self.root / "munge"
        for sub in ("", "etc", "run", "lib", "log"):
            path = base / sub
            path.mkdir(exist_ok=True)
            _chown(path, "munge")
            path.chmod(0o700)
        (base / "run").chmod(0o755)  # clients (slurm, the test user) reach the socket
        base.chmod(0o755)
        key = base / "etc" / "munge.key"
        key.write_bytes(os.urandom(1024))
        _chown(key, "munge")
        key.chmod(0o400)
        self._spawn(
            "munged",
            [
                DAEMONS["munged"],
                "--foreground",
                "--num-threads=10",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--log-file={base / 'log' / 'munged.log'}",
                f"--pid-file={base / 'run' / 'munged.pid'}",
                f"--seed-file={base / 'lib' / 'munged.seed'}",
            ],
            user="munge",
        )
        _wait_until(self.munge_socket.exists, 10, "munged", [self.log("munged.stdio")])

    def _write_slurm_conf(self) -> None:
        self.ctld_port = free_loopback_port()
        self.slurmd_port = free_loopback_port()
        self.dbd_port = free_loopback_port()
        self.db_port = free_loopback_port()
        state = self.root / "state"
        spool = self.root / "spool"
        for path in (state, spool):
            path.mkdir()
        _chown(state, "slurm")
        # Stand-in GPUs: slurmd only checks that File= paths exist as devices.
        gpu_files = []
        for index in range(GPUS_ON_NODE):
            dev = self.root / "dev" / f"fakegpu{index}"
            subprocess.run(["mknod", str(dev), "c", "1", "3"], check=True)
            gpu_files.append(dev)
        node_line = (
            f"NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000"
            f" Gres=gpu:{GPUS_ON_NODE} State=UNKNOWN"
        )
        partition_line = (
            f"PartitionName={PARTITION} Nodes={self.hostname} Default=YES"
            f" MaxTime={PARTITION_MAX_TIME} AllowAccounts={ACCOUNT} State=UP"
        )
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        self.conf.write_text(
            f"""ClusterName={CLUSTER_NAME}
SlurmctldHost={self.hostname}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=slurm
{auth}StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.pid"}
SlurmctldLogFile={self.log("slurmctld")}
SlurmdLogFile={self.log("slurmd")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=2
InactiveLimit=0
# Completed jobs leave slurmctld's memory after a few seconds, so tests see
# status fall through from squeue to sacct as it does on a busy cluster.
MinJobAge=5
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
# For slurmdbd connections this names the munge socket (Slurm's own overload).
AccountingStoragePass={self.munge_socket}
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
GresTypes=gpu
# Declares more CPUs than the VM has (config_overrides) so a job array and a
# long job can run side by side on a 2-core test machine.
SlurmdParameters=config_overrides
{node_line}
{partition_line}
"""
        )
        (self.conf.parent / "gres.conf").write_text(
            "AutoDetect=off\n"
            + "".join(f"NodeName={self.hostname} Name=gpu File={dev}\n" for dev in gpu_files)
        )
        (self.conf.parent / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")
        dbd_conf = self.conf.parent / "slurmdbd.conf"
        dbd_conf.write_text(
            f"""{auth}DbdAddr=127.0.0.1
DbdHost={self.hostname}
DbdPort={self.dbd_port}
SlurmUser=slurm
PidFile={self.root / "slurmdbd.pid"}
LogFile={self.log("slurmdbd")}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StorageLoc=slurm_acct_db
"""
        )
        # slurmdbd refuses a config that others can read (it may hold a password).
        _chown(dbd_conf, "slurm")
        dbd_conf.chmod(0o600)

    def _start_mariadb(self) -> None:
        base = self.root / "mariadb"
        base.mkdir()
        _chown(base, "mysql")
        datadir = base / "data"
        subprocess.run(
            [
                DAEMONS["mariadb-install-db"],
                "--user=mysql",
                f"--datadir={datadir}",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            check=True,
            capture_output=True,
        )
        self.db_socket = base / "mysqld.sock"
        self._spawn(
            "mariadbd",
            [
                DAEMONS["mariadbd"],
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={self.db_socket}",
                f"--pid-file={base / 'mariadbd.pid'}",
                f"--port={self.db_port}",
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                # No fsync per commit: a throwaway test database.
                "--innodb-flush-log-at-trx-commit=0",
            ],
            user="mysql",
        )
        wait_for_port(self.db_port, 30, "mariadbd", self.log("mariadbd.stdio"))
        # slurmdbd logs in over TCP as "slurm" with no password; grant it only
        # on loopback and only its own database.
        subprocess.run(
            [
                DAEMONS["mariadb"],
                f"--socket={self.db_socket}",
                "-u",
                "root",
                "-e",
                "CREATE USER 'slurm'@'127.0.0.1';"
                " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';",
            ],
            check=True,
            capture_output=True,
        )

    def _start_slurmdbd(self) -> None:
        self._spawn("slurmdbd", [DAEMONS["slurmdbd"], "-D"], user="slurm")
        wait_for_port(self.dbd_port, 30, "slurmdbd", self.log("slurmdbd"))

    def sacctmgr(self, *args: str) -> str:
        result = subprocess.run(
            [DAEMONS["sacctmgr"], "-i", *args],
            env={**os.environ, **self.client_env()},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"sacctmgr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _add_associations(self) -> None:
        self.sacctmgr("add", "cluster", CLUSTER_NAME)
        self.sacctmgr("add", "account", ACCOUNT, DEFAULT_ACCOUNT, f"cluster={CLUSTER_NAME}")
        self.sacctmgr(
            "add", "user", self.user, f"account={DEFAULT_ACCOUNT},{ACCOUNT}",
            f"defaultaccount={DEFAULT_ACCOUNT}", f"cluster={CLUSTER_NAME}",
        )  # fmt: skip

    def _start_slurmctld_and_slurmd(self) -> None:
        self._spawn("slurmctld", [DAEMONS["slurmctld"], "-D", "-f", str(self.conf)])
        wait_for_port(self.ctld_port, 30, "slurmctld", self.log("slurmctld"))
        self._spawn("slurmd", [DAEMONS["slurmd"], "-D", "-f", str(self.conf)])

        def node_idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"],
                env={**os.environ, **self.client_env()},
                capture_output=True,
                text=True,
            ).stdout.strip()
            return out == "idle"

        _wait_until(node_idle, 30, "slurm node idle", [self.log("slurmctld"), self.log("slurmd")])

    # -- stop ----------------------------------------------------------------

    def stop(self) -> None:
        if "slurmctld" in self.processes:
            # Ask Slurm to end the test user's jobs while it still can.
            subprocess.run(
                ["scancel", "-u", self.user],
                env={**os.environ, **self.client_env()},
                capture_output=True,
                timeout=10,
            )
        # Reverse start order: jobs' daemons before accounting, munge last.
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # slurmstepd of a job still running when slurmd stopped is its own
        # process group; end those of our test user only, by pid.
        leftover = subprocess.run(
            ["pgrep", "-u", self.user], capture_output=True, text=True
        ).stdout.split()
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        shutil.rmtree(self.root, ignore_errors=True)
