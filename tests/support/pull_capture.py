"""Capture what a real pull from the test registry sends back, for the unit tests of
bootstrap/pull_progress.py and bootstrap/image_pull.py (tests/data/docker-pull/).

    sudo .venv/bin/python -m tests.support.pull_capture      # rewrites tests/data/docker-pull/

Each capture is the stdout of image_pull.pull_command run on a real test host
over real SSH (Remote.run), as the chunks arrived, with the seconds since the
command was sent: the unit tests replay it against a clock of those seconds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bootstrap.image_pull import manifest_command, pull_command
from bootstrap.remote import Remote
from tests.support import registry, testhosts
from tests.support.bootstrap_run import REPO, connect
from tests.support.testhosts import TestHost

OUT = REPO / "tests/data/docker-pull"
THROTTLE_MBIT = 20
MULTI = f"{registry.ADDRESS}/multi-standin:1"  # a manifest list: amd64 and arm64


def capture(host: TestHost, image: str) -> dict[str, Any]:
    """Pull `image` on `host` through the step's own command; the chunks as they came."""
    info = host.docker_info()
    chunks: list[tuple[float, str]] = []
    remote = Remote(connect(host))
    remote.connect(10)
    started = time.monotonic()
    try:
        result = remote.run(pull_command(image, manifest=manifest_command(image, info)),
                            on_stdout=lambda text: chunks.append(
                                (round(time.monotonic() - started, 3), text)))
    finally:
        remote.close()
    return {"image": image, "architecture": info["Architecture"],
            "exit_code": result.exit_code, "chunks": chunks}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wb-pull-capture-") as scratch:
        store = registry.seed_store(Path(scratch))
        layered = store.images[registry.LAYERED]
        host = testhosts.start_host(image=False)
        try:
            served = registry.serve(store, host)
            (OUT / "registry-config.json").write_text(
                json.dumps(host.docker_info()["RegistryConfig"], indent=1) + "\n")
            served.throttle(THROTTLE_MBIT)
            fresh = capture(host, registry.LAYERED)
            fresh["layer_sizes"] = list(layered.layer_sizes)
            (OUT / "layered-fresh.json").write_text(json.dumps(fresh, indent=1) + "\n")
            missing = capture(host, f"{registry.ADDRESS}/clara-standin:no-such-tag")
            (OUT / "missing-tag.json").write_text(json.dumps(missing, indent=1) + "\n")
            # The layered image starts with the clara stand-in's layer: "Already exists".
            host.exec(f"docker rmi {registry.LAYERED} >/dev/null && "
                      f"docker pull -q {registry.CLARA} >/dev/null")
            again = capture(host, registry.LAYERED)
            again["layer_sizes"] = list(layered.layer_sizes)
            (OUT / "layered-base-present.json").write_text(json.dumps(again, indent=1) + "\n")
            served.unthrottle()
            # A manifest list, as multi-platform NGC images have: the python stand-in
            # stands for arm64.
            host.exec(f"docker pull -q {registry.PYTHON} >/dev/null && "
                      f"docker manifest create --insecure {MULTI} {registry.CLARA} "
                      f"{registry.PYTHON} >/dev/null && "
                      f"docker manifest annotate --arch arm64 {MULTI} {registry.PYTHON} && "
                      f"docker manifest push --insecure {MULTI} >/dev/null")
            listing = host.out(f"docker manifest inspect --insecure -v {MULTI}")
            (OUT / "manifest-list.json").write_text(json.dumps({
                "image": MULTI, "text": listing,
                "amd64": list(store.images[registry.CLARA].layer_sizes),
                "arm64": list(store.images[registry.PYTHON].layer_sizes)}, indent=1) + "\n")
        finally:
            testhosts.stop_host(host)
    print(f"wrote {', '.join(sorted(p.name for p in OUT.iterdir()))} in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
