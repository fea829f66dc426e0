"""A real image registry for the test hosts: Debian's `docker-registry` (Docker's
distribution 2.8), so the container step pulls real layers over HTTP.

One store per test session: a temp directory that a seed host fills once by
`docker push`ing the stand-in images (see STORE_IMAGES). Each test host then
serves that store itself, `docker-registry serve` inside its own namespaces on
127.0.0.1:15000: a loopback registry, which dockerd pulls from over plain HTTP
without any daemon.json change (its default insecure-registry range is
127.0.0.0/8), and the same image reference on every host. Stopping one host's
registry (a registry that is down) touches no other host, and the registry
dies with its host. A registry only reads its store on a pull, so many hosts
serve one store side by side.

`throttle` limits the host's loopback with a token bucket (tc tbf), so that a
pull of a few tens of MB takes long enough to show progress, to be stopped
half-way, or to be frozen mid-layer (`pause`: SIGSTOP, a registry that hangs).
netem is not in this box's kernel; tbf is.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import python_image, testhosts
from tests.support.testhosts import STANDIN_IMAGE, TestHost

REGISTRY_BINARY = "docker-registry"
PORT = 15000
ADDRESS = f"127.0.0.1:{PORT}"  # inside each test host's own network namespace
CLARA = f"{ADDRESS}/clara-standin:1"  # the busybox stand-in: one layer, about 1 MB
PYTHON = f"{ADDRESS}/python-standin:1"  # python3.11 + pip: one layer, about 20 MB
LAYERED = f"{ADDRESS}/layered-standin:1"  # the busybox stand-in + LAYERS layers
LAYERS = 5
LAYER_BYTES = 8_000_000  # random, so gzip cannot shrink what crosses the link
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def missing_real_parts() -> str | None:
    """Why a registry cannot run here (beyond what test hosts need), or None."""
    if shutil.which(REGISTRY_BINARY) is None:
        return ("missing docker-registry (apt package docker-registry; "
                "sudo scripts/install-test-deps)")
    if shutil.which("tc") is None and not Path("/usr/sbin/tc").exists():
        return "missing tc (apt package iproute2)"
    return None


@dataclass(frozen=True)
class StoredImage:
    """An image as the registry holds it: what a pull has to move."""

    ref: str
    layer_sizes: tuple[int, ...]  # compressed bytes per layer, as in its manifest
    digest: str  # the manifest digest

    @property
    def compressed_bytes(self) -> int:
        return sum(self.layer_sizes)


@dataclass
class RegistryStore:
    """The session's registry storage and its config; images pushed by `seed_store`."""

    root: Path
    images: dict[str, StoredImage] = field(default_factory=dict)

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def config(self) -> Path:
        return self.root / "config.yml"

    def write_config(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        # The distribution config format (version 0.1); JSON is YAML.
        self.config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}},
            "http": {"addr": ADDRESS},
        }, indent=2) + "\n")


@dataclass
class ServedRegistry:
    """`docker-registry serve` running inside one test host."""

    host: TestHost
    pid: int  # in the host's PID namespace

    @property
    def log(self) -> Path:
        return self.host.dir / "registry.log"

    def answers(self) -> bool:
        return self.host.exec(f"curl -sf -o /dev/null http://{ADDRESS}/v2/",
                              check=False).returncode == 0

    def stop(self) -> None:
        """The registry is down: nothing listens on its port any more."""
        self.host.exec(f"kill {self.pid} 2>/dev/null; while kill -0 {self.pid} 2>/dev/null; do sleep 0.05; done")

    def pause(self) -> None:
        """The registry hangs: connections stay open, nothing more is sent (SIGSTOP)."""
        self.host.exec(f"kill -STOP {self.pid}")

    def resume(self) -> None:
        self.host.exec(f"kill -CONT {self.pid}")

    def throttle(self, mbit: int) -> None:
        """Limit the host's loopback, where the registry serves, to `mbit` Mbit/s.

        A token bucket passes no packet larger than its burst, and loopback's MTU
        is 64 KiB: the MTU comes down to Ethernet's first.
        """
        self.host.exec(f"ip link set lo mtu 1500 && tc qdisc replace dev lo root tbf rate {mbit}mbit burst 32kb latency 400ms")

    def unthrottle(self) -> None:
        self.host.exec("tc qdisc del dev lo root 2>/dev/null; ip link set lo mtu 65536")


def serve(store: RegistryStore, host: TestHost) -> ServedRegistry:
    """Start the registry on the store inside `host`; return once it answers."""
    pid = int(host.out(
        f"setsid {REGISTRY_BINARY} serve {store.config} >>{host.dir}/registry.log 2>&1 </dev/null & echo $!"))
    served = ServedRegistry(host, pid)
    deadline = time.monotonic() + 30
    while not served.answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"registry on {host.name} does not answer: "
                               f"{served.log.read_text(errors='replace')[-500:]}")
        time.sleep(0.1)
    return served


def stored_image(host: TestHost, ref: str) -> StoredImage:
    """What the registry serving on `host` holds for `ref` (its v2 manifest)."""
    name, tag = ref.removeprefix(f"{ADDRESS}/").rsplit(":", 1)
    url = f"http://{ADDRESS}/v2/{name}/manifests/{tag}"
    manifest = json.loads(host.out(f"curl -sf -H 'Accept: {MANIFEST_V2}' {url}"))
    digest = host.out(f"curl -sfI -H 'Accept: {MANIFEST_V2}' {url} | tr -d '\\r' | "
                      "sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'").strip()
    return StoredImage(ref, tuple(layer["size"] for layer in manifest["layers"]), digest)


def seed_store(root: Path) -> RegistryStore:
    """A new store holding the stand-in images, pushed by a seed host that is then removed.

    clara-standin and (where the box has python3.11) python-standin are the
    images the other tests import; layered-standin is the clara stand-in plus
    LAYERS layers of random bytes, each a `docker commit`: a multi-layer image
    that still starts as the workbench container.
    """
    store = RegistryStore(root)
    store.write_config()
    seed = testhosts.start_host()  # has the clara stand-in imported
    try:
        serve(store, seed)
        pushes = [(STANDIN_IMAGE, CLARA)]
        if python_image.python_missing() is None:
            python_image.import_python_image(seed)
            pushes.append((python_image.PYTHON_STANDIN, PYTHON))
        seed.exec(f"""set -e
img={STANDIN_IMAGE}
for i in $(seq {LAYERS}); do
  docker run --name wb-layer-$i $img sh -c "head -c {LAYER_BYTES} /dev/urandom > /layer-$i.bin"
  docker commit wb-layer-$i local/layered-standin:$i >/dev/null
  docker rm wb-layer-$i >/dev/null
  img=local/layered-standin:$i
done""", timeout=300)
        pushes.append((f"local/layered-standin:{LAYERS}", LAYERED))
        for local, ref in pushes:
            seed.exec(f"docker tag {local} {ref} && docker push {ref} >/dev/null", timeout=300)
            store.images[ref] = stored_image(seed, ref)
    finally:
        testhosts.stop_host(seed)
    return store
