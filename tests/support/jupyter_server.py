"""A real jupyter_server on this box, for the idle check's Jupyter rules.

The venv holds the same pins as the systemd hosts' /opt/jupyter (systemd_rootfs.
PIP_REQUIREMENTS: jupyter_server and ipykernel from PyPI), built once with pip and
cached under /var/cache/gpu-workbench (or $WORKBENCH_JUPYTER_VENV_CACHE) by a hash of
the pins. A server starts in about 2 s on a port of its own with a token of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.systemd_rootfs import PIP_REQUIREMENTS, locked

CACHE = Path(os.environ.get("WORKBENCH_JUPYTER_VENV_CACHE", "/var/cache/gpu-workbench"))
WS_CLIENT = Path(__file__).with_name("jupyter_ws.py")


def venv_path() -> Path:
    key = hashlib.sha256(json.dumps(PIP_REQUIREMENTS).encode()).hexdigest()[:12]
    return CACHE / f"jupyter-venv-{key}"


def ensure_venv() -> Path:
    """The cached venv with jupyter_server and ipykernel; built on first use (~15 s)."""
    venv = venv_path()
    done = venv / ".complete"
    if done.exists():
        return venv
    with locked(CACHE / ".jupyter-venv.lock"):
        if done.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       capture_output=True, timeout=120)
        proc = subprocess.run([str(venv / "bin/pip"), "install", "--quiet", *PIP_REQUIREMENTS],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"pip install {' '.join(PIP_REQUIREMENTS)} failed: "
                               f"{proc.stderr.strip()[-1500:]}")
        done.touch()
    return venv


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class JupyterServer:
    url: str
    token: str
    venv: Path
    process: subprocess.Popen[bytes]
    home: Path

    def api(self, method: str, path: str, *, track: bool = True) -> Any:
        """A call as a browser would make it (tracked), or as the idle check does."""
        sep = "&" if "?" in path else "?"
        url = f"{self.url}{path}" + ("" if track else f"{sep}no_track_activity=1")
        request = urllib.request.Request(url, method=method,
                                         data=b"{}" if method == "POST" else None,
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def start_kernel(self, timeout: float = 60) -> str:
        """A kernel as a notebook gets it: started, connected once (it answers
        kernel_info and goes idle), disconnected."""
        kernel_id: str = self.api("POST", "/api/kernels")["id"]
        self.client(kernel_id, "open").wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.api("GET", f"/api/kernels/{kernel_id}", track=False)
            if state["execution_state"] == "idle":
                return kernel_id
            time.sleep(0.2)
        raise TimeoutError(f"kernel {kernel_id} not idle after {timeout:g} s")

    def client(self, kernel_id: str, *args: str) -> subprocess.Popen[str]:
        """tests/support/jupyter_ws.py with this venv's python: `run CODE` or `hold`."""
        proc = subprocess.Popen([str(self.venv / "bin/python"), str(WS_CLIENT), self.url,
                                 self.token, kernel_id, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line not in ("busy", "connected", "idle"):
            proc.kill()
            why = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"jupyter_ws {args[0]}: {line!r} {why}")
        return proc


@contextlib.contextmanager
def jupyter_server(tmp: Path) -> Iterator[JupyterServer]:
    venv = ensure_venv()
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp / "jupyter-home"
    (home / "root").mkdir(parents=True)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "LANG": "C.UTF-8"}
    log = open(tmp / "jupyter.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [str(venv / "bin/jupyter"), "server", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={home / 'root'}",
         "--allow-root", "--ServerApp.port_retries=0"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    server = JupyterServer(f"http://127.0.0.1:{port}", token, venv, process, home)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.api("GET", "/api/status", track=False)
                break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not start: "
                                       + (tmp / "jupyter.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
