"""Fixtures for the slurm tasks: a real login node (sshd) in front of a real Slurm.

One session-wide cluster serves every slow test (it starts in about 4 s);
tests keep apart by job name and their own directories in the user's home.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import Connection

from tests.support.loopback_sshd import LoopbackSshd
from tests.support.slurm_cluster import SlurmCluster
from tests.support.slurm_login_node import LoginNode, build_busybox_image, require_real_parts
from tests.support.slurm_python_parts import python_modulefiles

LOGIN_USER = "wbslurm"


@pytest.fixture(scope="session")
def login_node() -> Iterator[LoginNode]:
    require_real_parts()
    base = Path(tempfile.mkdtemp(prefix="wb-slurm-login-"))
    base.chmod(0o755)
    home = base / "home"
    cluster = SlurmCluster(user=LOGIN_USER)
    # ch-image keeps its build storage in /var/tmp/$USER.ch unless told;
    # keep it in our temp dir so teardown removes it.
    session_env = {
        **cluster.client_env(),
        "CH_IMAGE_STORAGE": str(base / "ch-image" / "storage"),
        # Where the site's modules are, as a cluster's /etc/profile.d sets it:
        # python/3.11 for the `runtime: none` jobs (tests.support.slurm_python_parts.py).
        "MODULEPATH": str(python_modulefiles(base / "modules")),
        # The box's own pip.conf adds mirrors and a find-links dir; a job's pip
        # reads the job's wheelhouse or PyPI, as on a cluster without them.
        "PIP_CONFIG_FILE": "/dev/null",
    }
    sshd = LoopbackSshd(root=base / "sshd", user=LOGIN_USER, home=home, session_env=session_env)
    try:
        # The user must exist before slurmdbd gets its association.
        sshd.start()
        # ch-image refuses a storage dir it did not make; give it a parent it may write.
        storage_parent = Path(session_env["CH_IMAGE_STORAGE"]).parent
        storage_parent.mkdir()
        shutil.chown(storage_parent, LOGIN_USER, LOGIN_USER)
        cluster.start()
        image = build_busybox_image(base)
        yield LoginNode(sshd=sshd, cluster=cluster, home=home, busybox_image=image)
    finally:
        cluster.stop()
        sshd.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def conn(login_node: LoginNode) -> Iterator[Connection]:
    connection = login_node.connect()
    try:
        yield connection
    finally:
        connection.close()
