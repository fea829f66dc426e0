"""Python for the cluster tests: a JupyterLab wheelhouse, a charliecloud image with it, and
a real Lmod module for Python; built once per box.

- A wheelhouse: JupyterLab and every dependency as wheels for CPython 3.11 on
  x86_64, from PyPI (`pip download`), cached under CACHE_DIR. The same wheels
  fill the charliecloud image and, in a job, the venv that `runtime: none`
  builds with `pip install --no-index --find-links`.
- A charliecloud image directory: the busybox image of slurm_login_node, the
  box's Debian python3.11 (tests/support/python_image.py's members) and
  JupyterLab installed from that wheelhouse into its dist-packages. Real
  JupyterLab and jupyter_server; only the GPU libraries are missing.
- A modulefile tree for the real Lmod (Debian's `lmod`): `python/3.11` puts a
  directory holding `python3` (Debian's /usr/bin/python3.11) first on PATH and
  sets WORKBENCH_TEST_PYTHON_MODULE, so a job shows that the module, not the
  box's PATH, gave it its Python.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.python_image import PYTHON, _python_members, _shared_libs, python_missing
from tests.support.real_parts import skip_or_fail
from tests.support.slurm_login_node import build_busybox_image

CACHE_DIR = Path(os.environ.get("WORKBENCH_SLURM_JUPYTER_CACHE",
                                "/var/cache/gpu-workbench/slurm-jupyter"))
JUPYTERLAB = "jupyterlab==4.6.6"
JUPYTER_SERVER = "jupyter_server==2.21.1"
IMAGE_LAYOUT = "v2"  # bump when what goes into the image changes
LMOD_INIT = Path("/etc/profile.d/lmod.sh")
PYTHON_MODULE = "python/3.11"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def wheelhouse() -> Path:
    """JupyterLab's wheels (downloaded once per box); skips (or fails in CI) without PyPI."""
    wheels = CACHE_DIR / f"wheels-{JUPYTERLAB.replace('==', '-')}"
    with _locked():
        if (wheels / ".complete").exists():
            return wheels
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--dest", str(wheels), "--only-binary=:all:", "--python-version", "3.11",
                "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
        for platform in ("manylinux_2_36_x86_64", "manylinux_2_28_x86_64",
                         "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"):
            argv += ["--platform", platform]
        # The box's pip.conf may add mirrors; PyPI and these pins decide here.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        env.pop("PIP_FIND_LINKS", None)
        proc = subprocess.run([*argv, JUPYTERLAB, JUPYTER_SERVER], capture_output=True,
                              text=True, timeout=600, env=env)
        if proc.returncode != 0:
            shutil.rmtree(wheels, ignore_errors=True)
            skip_or_fail("cannot download JupyterLab's wheels (pip download needs PyPI): "
                         + (proc.stderr.strip().splitlines() or ["?"])[-1])
        (wheels / ".complete").write_text("")
    return wheels


def jupyter_image() -> Path:
    """The charliecloud image directory with python3.11 and JupyterLab (built once per box)."""
    why = python_missing()
    if why:
        skip_or_fail(why)
    wheels = wheelhouse()
    image = CACHE_DIR / f"image-{IMAGE_LAYOUT}-{JUPYTERLAB.replace('==', '-')}"
    with _locked():
        if (image / ".complete").exists():
            return image
        shutil.rmtree(image, ignore_errors=True)
        build = CACHE_DIR / ".image-build"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir()
        base = build_busybox_image(build)
        tar_path = build / "python.tar"
        with tarfile.open(tar_path, "w") as tar:
            _python_members(tar)
        with tarfile.open(tar_path) as tar:
            # Our own tar of the box's files: links and modes as written.
            tar.extractall(base, filter="fully_trusted")
        site = base / "usr/local/lib/python3.11/dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        env.pop("PIP_FIND_LINKS", None)
        proc = subprocess.run(
            [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-index", "--find-links", str(wheels), "--target", str(site), JUPYTERLAB],
            capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0:
            raise RuntimeError("pip install jupyterlab into the image failed: "
                               + proc.stderr.strip()[-500:])
        # `pip --target` leaves a wheel's data files in the target; Jupyter looks for
        # them under sys.prefix (/usr): JupyterLab's assets, the server's extension
        # configs; the scripts go where a Debian pip would put them.
        for data, where in (("share", "usr/share"), ("etc", "usr/etc"), ("bin", "usr/local/bin")):
            if (site / data).is_dir():
                (base / where).mkdir(parents=True, exist_ok=True)
                shutil.copytree(site / data, base / where, symlinks=True, dirs_exist_ok=True)
                shutil.rmtree(site / data)
        # System libraries the wheels' extension modules link (libffi, ...).
        modules = [str(p) for p in site.rglob("*.so*") if p.is_file()]
        for lib in sorted(_shared_libs(modules)):
            target = base / lib.lstrip("/")
            if not lib.startswith(str(site)) and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib), target)
        # Mount points ch-run needs in a read-only image: the jobs' binds, $HOME.
        (base / "workspace" / "wheelhouse").mkdir(parents=True, exist_ok=True)
        (base / ".complete").write_text("")
        base.rename(image)
        shutil.rmtree(build, ignore_errors=True)
    return image


def lmod_missing() -> str | None:
    if not LMOD_INIT.exists():
        return f"{LMOD_INIT} missing (Debian package lmod; scripts/install-test-deps)"
    return python_missing()


def python_modulefiles(root: Path) -> Path:
    """A MODULEPATH directory whose `python/3.11` puts Debian's python3.11 first on PATH."""
    bin_dir = root / "python-3.11" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to(PYTHON)
    modulefiles = root / "modulefiles"
    (modulefiles / "python").mkdir(parents=True)
    (modulefiles / "python" / "3.11.lua").write_text(
        'help([[Debian\'s Python 3.11, for gpu-workbench\'s cluster tests]])\n'
        f'prepend_path("PATH", "{bin_dir}")\n'
        f'setenv("WORKBENCH_TEST_PYTHON_MODULE", "{PYTHON_MODULE}")\n'
    )
    for path in (root, bin_dir.parent, bin_dir, modulefiles, modulefiles / "python"):
        path.chmod(0o755)
    return modulefiles
