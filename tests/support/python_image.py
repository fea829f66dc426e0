"""Test images with Python: a stand-in for NGC framework images, and one for MLflow.

The test hosts have no internet, so images are made here and `docker import`ed:

- python stand-in (`PYTHON_STANDIN`): the busybox Clara stand-in (its `jupyter`
  serves 8888 and checks the token) plus the box's own Debian python3.11
  (interpreter, the shared libraries it and its extension modules link, the
  standard library without tests/idle/tkinter) and pip. About 25 MB; built
  once per box into BASE_DIR and imported per host (about a second).
- MLflow stand-in: the python stand-in plus MLflow installed from wheels
  (`pip download mlflow==MLFLOW_VERSION`, cached in BASE_DIR/mlflow-wheels;
  CI has PyPI). The libraries the tracking server never imports (pyarrow,
  scipy, scikit-learn, matplotlib and their helpers: about 440 MB) are left
  out, so the per-host import stays small. Built once per box.

Both are real Python and real pip/MLflow; only the GPU libraries are missing.
"""



from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

from tests.support.testhosts import BASE_DIR, TestHost, _lock, ensure_standin_rootfs

PYTHON_STANDIN = "local/python-standin:1"
IMAGE_LAYOUT = "v3"  # bump when what goes into the tars changes: cached tars are rebuilt
MLFLOW_VERSION = "3.17.2"
PYTHON = "/usr/bin/python3.11"
PYLIB = "/usr/lib/python3.11"
# Not needed to run pip or a server, and most of the size.
PYLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
              "pydoc_data", "config-3.11-x86_64-linux-gnu")
# What the MLflow server never imports (measured: it answers /health and the
# REST API without them).
MLFLOW_SKIP = ("pyarrow", "scipy", "sklearn", "scikit_learn", "matplotlib", "fontTools",
               "fonttools", "PIL", "pillow", "contourpy", "kiwisolver", "skops", "scipy.libs",
               "pillow.libs", "scikit_learn.libs")


def python_missing() -> str | None:
    """Why the python stand-in cannot be built here, or None."""
    if not Path(PYTHON).exists():
        return f"{PYTHON} missing (Debian package python3.11)"
    if not Path("/usr/lib/python3/dist-packages/pip").is_dir():
        return "Debian's pip missing (apt package python3-pip)"
    return None


def _shared_libs(paths: list[str]) -> set[str]:
    libs: set[str] = set()
    for chunk in range(0, len(paths), 50):
        out = subprocess.run(["ldd", *paths[chunk:chunk + 50]], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs.add(parts[2])
            elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
                libs.add(parts[0])
    return libs


def _add_tree(tar: tarfile.TarFile, src: Path, arcname: str, skip: tuple[str, ...] = ()) -> None:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = info.name[len(arcname):].lstrip("/")
        top = rel.split("/", 1)[0]
        dist_info_of = top.split("-", 1)[0] if top.endswith(".dist-info") else None
        if top in skip or dist_info_of in skip or "/__pycache__" in f"/{rel}":
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    tar.add(str(src), arcname=arcname, filter=keep)


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o755) -> None:
    data = textwrap.dedent(text).encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _python_members(tar: tarfile.TarFile) -> None:
    """The box's python3.11 and pip, as Debian lays them out."""
    dynload = sorted(str(p) for p in Path(PYLIB, "lib-dynload").glob("*.so"))
    # manylinux wheels (numpy, pydantic-core) take the C++ runtime from the system.
    cxx = [str(p) for p in map(Path, ("/lib/x86_64-linux-gnu/libstdc++.so.6",
                                      "/lib/x86_64-linux-gnu/libgcc_s.so.1")) if p.exists()]
    for lib in sorted(_shared_libs([PYTHON, *dynload, *cxx]) | set(cxx)):
        real = os.path.realpath(lib)
        tar.add(real, arcname=lib.lstrip("/"))  # the name the loader asks for, real bytes
    tar.add(PYTHON, arcname="usr/bin/python3.11")
    for link in ("usr/bin/python3", "usr/bin/python"):
        info = tarfile.TarInfo(link)
        info.type = tarfile.SYMTYPE
        info.linkname = "python3.11"
        tar.addfile(info)
    _add_tree(tar, Path(PYLIB), "usr/lib/python3.11", PYLIB_SKIP)
    # Debian's pip, with the wheels it loads its vendored libraries from.
    _add_tree(tar, Path("/usr/lib/python3/dist-packages/pip"), "usr/lib/python3/dist-packages/pip")
    wheels = Path("/usr/share/python-wheels")
    if wheels.is_dir():
        _add_tree(tar, wheels, "usr/share/python-wheels")
    _add_text(tar, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
    _add_text(tar, "etc/group", "root:x:0:\n", 0o644)
    for d in ("root", "usr/local/lib/python3.11/dist-packages"):
        info = tarfile.TarInfo(d)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)


def ensure_python_rootfs() -> Path:
    """The python stand-in's rootfs tar (built once per box)."""
    tar_path = BASE_DIR / f"python-standin-{IMAGE_LAYOUT}.tar"
    base = ensure_standin_rootfs()
    with _lock():
        if tar_path.exists():
            return tar_path
        tmp = tar_path.with_suffix(".tmp")
        with tarfile.open(base) as src, tarfile.open(tmp, "w") as tar:
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member) if member.isfile() else None)
            _python_members(tar)
        tmp.rename(tar_path)
    return tar_path


def import_python_image(host: TestHost, *tags: str) -> None:
    """Import the python stand-in on the host as PYTHON_STANDIN and each of tags."""
    tar_path = ensure_python_rootfs()
    host.exec(f"docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "
              f"--change 'CMD [\"jupyter\"]' {tar_path} {PYTHON_STANDIN} >/dev/null")
    for tag in tags:
        host.exec(f"docker tag {PYTHON_STANDIN} {tag}")


def build_wheel(directory: Path, name: str = "wbtiny", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (PEP 427), written with zipfile: no network, no build tool."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n").encode(),
        f"{dist}.dist-info/WHEEL": (b"Wheel-Version: 1.0\nGenerator: gpu-workbench-tests\n"
                                    b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


# --- MLflow ---------------------------------------------------------------------

def mlflow_wheels() -> Path | str:
    """The wheel set for MLFLOW_VERSION (downloaded once per box), or why not."""
    wheels = BASE_DIR / f"mlflow-wheels-{MLFLOW_VERSION}"
    with _lock():
        if (wheels / ".complete").exists():
            return wheels
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--only-binary=:all:", "--python-version", "3.11", "--platform",
             "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
             "--platform", "manylinux_2_17_x86_64", "-d", str(wheels),
             f"mlflow=={MLFLOW_VERSION}"],
            capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return ("cannot download the MLflow wheels (pip download mlflow needs PyPI): "
                    + (proc.stderr.strip().splitlines() or ["?"])[-1])
        (wheels / ".complete").write_text("")
    return wheels


def ensure_mlflow_rootfs() -> Path | str:
    """The MLflow stand-in rootfs tar (built once per box), or why it cannot be."""
    tar_path = BASE_DIR / f"mlflow-standin-{MLFLOW_VERSION}-{IMAGE_LAYOUT}.tar"
    if tar_path.exists():
        return tar_path
    wheels = mlflow_wheels()
    if isinstance(wheels, str):
        return wheels
    base = ensure_python_rootfs()
    with _lock():
        if tar_path.exists():
            return tar_path
        site = Path(tempfile.mkdtemp(prefix="mlflow-site-", dir=BASE_DIR))
        try:
            t0 = time.monotonic()
            proc = subprocess.run(
                [PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "--no-index", "--find-links", str(wheels), "--target", str(site),
                 f"mlflow=={MLFLOW_VERSION}"],
                capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                return "pip install mlflow failed: " + proc.stderr.strip()[-300:]
            (BASE_DIR / "mlflow-install-seconds").write_text(f"{time.monotonic() - t0:.1f}\n")
            tmp = tar_path.with_suffix(".tmp")
            site_dir = "usr/local/lib/python3.11/dist-packages"
            with tarfile.open(base) as src, tarfile.open(tmp, "w") as tar:
                have = set()
                for member in src.getmembers():
                    if member.name != site_dir:  # added below, with MLflow in it
                        tar.addfile(member, src.extractfile(member) if member.isfile() else None)
                        have.add(member.name)
                # System libraries the wheels' extension modules link (librt, ...).
                modules = [str(p) for p in site.rglob("*.so*") if p.is_file()]
                for lib in sorted(_shared_libs(modules)):
                    if not lib.startswith(str(site)) and lib.lstrip("/") not in have:
                        tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
                skip = MLFLOW_SKIP + tuple(p.name for p in site.glob("bin"))
                _add_tree(tar, site, site_dir, skip)
                _add_text(tar, "usr/local/bin/mlflow",
                          '#!/bin/sh\nexec python3 -m mlflow "$@"\n')
            tmp.rename(tar_path)
        finally:
            shutil.rmtree(site, ignore_errors=True)
    return tar_path


def import_mlflow_image(host: TestHost, tag: str) -> None:
    tar_path = ensure_mlflow_rootfs()
    if isinstance(tar_path, str):
        raise RuntimeError(tar_path)
    host.exec(f"docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "
              f"{tar_path} {tag} >/dev/null", timeout=300)
