"""An image pull's progress, read from what `docker pull` prints on a terminal.

On a terminal, docker pull redraws one line per layer ("a0953332d645:
Downloading  196.6kB/19.47MB") with cursor movements; to a pipe it prints only
each layer's changes of state, no byte counts. bootstrap/image_pull.py gives it
a terminal on the host and streams that screen output here. This module turns
it into what a user far away needs to see: at most one line every
PROGRESS_INTERVAL_S seconds,

    pulling nvcr.io/nvidia/pytorch:25.01-py3: 3.1/19.8 GB, 12/31 layers, 84 MB/s

and one at the end,

    pulled nvcr.io/nvidia/pytorch:25.01-py3: 19.8 GB in 4m02s

Bytes are the compressed layers, what crosses the link: the total comes from
the image's manifest where the host could read it (`docker manifest inspect`),
else from the layers' own totals once every layer has started (until then the
line says "so far"). Layers the host already has ("Already exists") count as
done and are not part of the bytes.

Pure: text in, lines out through `emit`; the clock is a parameter, so the tests
replay a pull captured from the test registry (tests/data/).
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

PROGRESS_INTERVAL_S = 5.0  # at most one progress line per host this often
RATE_WINDOW_S = 10.0  # the rate is what moved in the last this many seconds

# Cursor movements and line erases (CSI sequences) between the redrawn lines.
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LAYER_LINE = re.compile(r"^(?P<id>[0-9a-f]{12}): (?P<rest>.*)$")
# docker's units.HumanSize: 4 significant digits, decimal units ("196.6kB", "19.47MB").
_SIZE = r"(\d+(?:\.\d+)?)([kMGTPE]?B)"
_COUNTS = re.compile(_SIZE + r"(?:/" + _SIZE + r")?")
_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
          "EB": 10**18}
# What script(1) writes around a session in its log, depending on its version.
_SCRIPT_NOTES = ("Script started on", "Script done on")
# Go's names for the CPU (image platforms) from the kernel's (docker info's Architecture).
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "i386": "386"}


def _bytes(number: str, unit: str) -> int:
    return round(float(number) * _UNITS[unit])


@dataclass(frozen=True)
class ScreenLine:
    """One line docker pull drew: a layer's (layer: 12 hex digits of its digest) or
    another (layer None: "Digest: ...", "Error response from daemon: ...")."""

    text: str
    layer: str | None = None
    status: str = ""
    current: int | None = None
    total: int | None = None


def parse_line(text: str) -> ScreenLine:
    m = _LAYER_LINE.match(text)
    if m is None:
        return ScreenLine(text)
    rest = m["rest"]
    counts = _COUNTS.search(rest)
    status = (rest[:counts.start()] if counts else rest).split("[", 1)[0].strip()
    current = total = None
    if counts:
        current = _bytes(counts[1], counts[2])
        if counts[3]:
            total = _bytes(counts[3], counts[4])
    return ScreenLine(text, m["id"], status, current, total)


class Screen:
    """Splits the terminal stream into the lines drawn, whatever the chunks' borders."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> list[ScreenLine]:
        text = self._pending + text
        # A line ends at \r or \n; the rest may be a line (or an escape) cut in two.
        end = max(text.rfind("\r"), text.rfind("\n"))
        self._pending = text[end + 1:]
        return self._lines(text[:end + 1])

    def flush(self) -> list[ScreenLine]:
        rest, self._pending = self._pending, ""
        return self._lines(rest)

    @staticmethod
    def _lines(text: str) -> list[ScreenLine]:
        found = []
        for raw in re.split(r"[\r\n]", _CSI.sub("", text)):
            line = raw.strip()
            if line and not line.startswith(_SCRIPT_NOTES):
                found.append(parse_line(line))
        return found


def go_arch(kernel_arch: str) -> str:
    """'amd64' for 'x86_64': how image platforms name the CPU docker info reports."""
    return _GO_ARCH.get(kernel_arch, kernel_arch)


def manifest_layer_sizes(text: str, architecture: str, os: str = "linux"
                         ) -> dict[str, int] | None:
    """{layer id (12 hex digits): compressed bytes} for this platform, from what
    `docker manifest inspect -v` printed (one entry, or one per platform), or None
    where it printed nothing usable (no registry answer, no such platform)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    entries = data if isinstance(data, list) else [data]
    entries = [e for e in entries if isinstance(e, dict)]

    def platform(entry: dict[str, object]) -> dict[str, object]:
        descriptor = entry.get("Descriptor")
        found = descriptor.get("platform") if isinstance(descriptor, dict) else None
        return found if isinstance(found, dict) else {}

    matching = [e for e in entries
                if platform(e).get("architecture") == architecture
                and platform(e).get("os", os) == os]
    if not matching and len(entries) == 1 and not platform(entries[0]):
        matching = entries  # a manifest that names no platform: the only one there is
    if not matching:
        return None
    entry = matching[0]
    manifest = entry.get("SchemaV2Manifest") or entry.get("OCIManifest") or entry
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    sizes: dict[str, int] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            return None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(digest, str) or ":" not in digest or not isinstance(size, int):
            return None
        sizes[digest.split(":", 1)[1][:12]] = size
    return sizes


@dataclass
class Layer:
    size: int | None = None  # compressed bytes: the manifest's, else docker's total
    downloaded: int = 0
    done: bool = False  # extracted ("Pull complete") or already here
    present: bool = False  # "Already exists": nothing to pull


@dataclass
class PullProgress:
    """The state of one pull, and the lines it prints.

    emit gets each line without the host (the caller adds it); clock is
    time.monotonic unless a test replays a capture.
    """

    image: str
    emit: Callable[[str], None]
    interval: float = PROGRESS_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    layers: dict[str, Layer] = field(default_factory=dict)
    manifest_sizes: dict[str, int] | None = None
    last_text: str = ""  # the last line that was not a layer's: docker's error, if any
    lines_printed: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock()
        self._last_line = self.started
        self._screen = Screen()
        self._samples: deque[tuple[float, int]] = deque()

    def set_manifest(self, sizes: dict[str, int] | None) -> None:
        self.manifest_sizes = sizes
        for layer_id, size in (sizes or {}).items():
            self.layers.setdefault(layer_id, Layer()).size = size

    def feed(self, text: str) -> None:
        """Terminal output as it arrives; prints a line when one is due."""
        self._apply(self._screen.feed(text))
        now = self.clock()
        self._sample(now)
        if now - self._last_line >= self.interval and self.layers and not self._all_done():
            self._last_line = now
            self.lines_printed += 1
            self.emit(self.progress_line(now))

    def finish(self) -> str:
        """The pull succeeded: print the last line; return its "SIZE in TIME" part."""
        self._apply(self._screen.flush())
        pulled = [layer for layer in self.layers.values() if not layer.present]
        size = sum(layer.size if layer.size is not None else layer.downloaded
                   for layer in pulled)
        summary = f"{human_bytes(size)} in {duration(self.clock() - self.started)}"
        here = len(self.layers) - len(pulled)
        line = f"pulled {self.image}: {summary}"
        if here:
            line += f", {here} of {len(self.layers)} layers already here"
        self.lines_printed += 1
        self.emit(line)
        return summary

    # --- the state -----------------------------------------------------------------

    def _apply(self, lines: list[ScreenLine]) -> None:
        for line in lines:
            if line.layer is None:
                self.last_text = line.text
                continue
            layer = self.layers.setdefault(line.layer, Layer())
            status = line.status
            if line.total is not None and layer.size is None and status in (
                    "Downloading", "Extracting"):
                layer.size = line.total
            if status == "Downloading" and line.current is not None:
                layer.downloaded = line.current
            elif status in ("Verifying Checksum", "Download complete", "Extracting",
                            "Pull complete"):
                layer.downloaded = layer.size if layer.size is not None else layer.downloaded
                layer.done = layer.done or status == "Pull complete"
            elif status == "Already exists":
                layer.present = layer.done = True

    def _pulled(self) -> list[Layer]:
        return [layer for layer in self.layers.values() if not layer.present]

    def bytes_done(self) -> int:
        return sum(min(layer.downloaded, layer.size) if layer.size is not None
                   else layer.downloaded for layer in self._pulled())

    def bytes_total(self) -> int | None:
        """What the pull moves in all; None while a layer's size is still unknown."""
        sizes = [layer.size for layer in self._pulled()]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s)

    def _all_done(self) -> bool:
        return all(layer.done for layer in self.layers.values())

    def _sample(self, now: float) -> None:
        self._samples.append((now, self.bytes_done()))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Bytes per second over the last RATE_WINDOW_S (None before a second has passed)."""
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 1.0 else None

    def progress_line(self, now: float) -> str:
        done, total = self.bytes_done(), self.bytes_total()
        moved = (f"{human_pair(done, total)}" if total is not None
                 else f"{human_bytes(done)} so far")
        layers_done = sum(1 for layer in self.layers.values() if layer.done)
        parts = [moved, f"{layers_done}/{len(self.layers)} layers"]
        rate = self.rate()
        if total is not None and done >= total:
            parts.append("extracting")  # every byte is here; docker unpacks the layers
        elif rate is not None:
            parts.append(f"{human_rate(rate)}")
        return f"pulling {self.image}: {', '.join(parts)}"


# --- numbers as a user reads them ---------------------------------------------------------

def _unit(n: float) -> tuple[str, int]:
    for unit in ("GB", "MB", "kB"):
        if n >= _UNITS[unit]:
            return unit, _UNITS[unit]
    return "B", 1


def human_bytes(n: float) -> str:
    """'19.8 GB', '41.0 MB', '812 kB' (decimal units, as docker prints them)."""
    unit, scale = _unit(n)
    return f"{n / scale:.1f} {unit}" if unit in ("GB", "MB") else f"{n / scale:.0f} {unit}"


def human_pair(done: float, total: float) -> str:
    """'3.1/19.8 GB': both in the total's unit."""
    unit, scale = _unit(total)
    digits = 1 if unit in ("GB", "MB") else 0
    return f"{done / scale:.{digits}f}/{total / scale:.{digits}f} {unit}"


def human_rate(per_second: float) -> str:
    """'84 MB/s', '5.6 MB/s', '310 kB/s'."""
    unit, scale = _unit(per_second)
    value = per_second / scale
    return f"{value:.1f} {unit}/s" if value < 10 and unit != "B" else f"{value:.0f} {unit}/s"


def duration(seconds: float) -> str:
    """'7.1s', '4m02s', '1h05m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
