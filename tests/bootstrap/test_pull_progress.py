"""Pull progress from what a real pull sent back (tests/data/docker-pull/, captured by
tests/support/pull_capture.py from the test registry over real SSH), replayed
against a clock of the seconds at which each chunk arrived."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bootstrap.image_pull import (
    DOCKER_HUB,
    PullOutput,
    insecure_registry,
    manifest_command,
    registry_of,
)
from bootstrap.pull_progress import (
    PullProgress,
    Screen,
    duration,
    human_bytes,
    human_pair,
    human_rate,
    manifest_layer_sizes,
    parse_line,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "docker-pull"


def capture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def replay(data: dict[str, Any], *, interval: float,
           chunks: list[tuple[float, str]] | None = None
           ) -> tuple[PullOutput, list[tuple[float, str]]]:
    """Feed a capture to PullOutput at its own times; (the reader, [(time, line)])."""
    clock = Clock()
    lines: list[tuple[float, str]] = []
    output = PullOutput(data["image"], lambda line: lines.append((clock.now, line)),
                        architecture=data["architecture"], interval=interval, clock=clock)
    for at, text in chunks if chunks is not None else data["chunks"]:
        clock.now = at
        output.feed(text)
    return output, lines


def progress_numbers(line: str) -> tuple[float, int]:
    m = re.search(r": ([\d.]+)/[\d.]+ MB, (\d)/6 layers", line)
    assert m, line
    return float(m[1]), int(m[2])


LAYERED = capture("layered-fresh")
TOTAL = sum(LAYERED["layer_sizes"])
PROGRESS = re.compile(
    r"pulling 127\.0\.0\.1:15000/layered-standin:1: \d+\.\d/41\.1 MB, [0-6]/6 layers, "
    r"(\d+(\.\d)? MB/s|extracting)")


@pytest.mark.parametrize("interval", [1.0, 5.0])
def test_a_line_per_interval_at_most_then_size_and_time(interval: float) -> None:
    output, lines = replay(LAYERED, interval=interval)
    *progress, (_, last) = lines
    assert human_bytes(TOTAL) == "41.1 MB"
    assert progress, "a 17 s pull shows progress"
    for _, line in progress:
        assert PROGRESS.fullmatch(line), line
    times = [0.0] + [at for at, _ in progress]
    # The pull began with the first chunk (t=0 in the capture): no line before an
    # interval has passed, none sooner than an interval after the one before.
    assert all(b - a >= interval for a, b in itertools.pairwise(times)), times
    assert len(progress) <= LAYERED["chunks"][-1][0] / interval
    numbers = [progress_numbers(line) for _, line in progress]
    assert numbers == sorted(numbers), "bytes and layers only grow"
    took = duration(LAYERED["chunks"][-1][0] - LAYERED["chunks"][0][0])
    assert last == f"pulled 127.0.0.1:15000/layered-standin:1: 41.1 MB in {took}"
    assert output.summary == f"41.1 MB in {took}"
    assert output.progress is not None and output.progress.bytes_done() == TOTAL


def test_chunk_borders_do_not_matter() -> None:
    """SSH hands stdout over in pieces of any size: an escape sequence or a line may be
    cut anywhere. Cut finer, the lines come at the same times, each whole, and the
    pull ends the same; only a line due in the middle of a chunk sees less of it."""
    _, whole = replay(LAYERED, interval=1.0)
    for size in (1, 7, 4096):
        pieces = [(at, text[i:i + size]) for at, text in LAYERED["chunks"]
                  for i in range(0, len(text), size)]
        _, cut = replay(LAYERED, interval=1.0, chunks=pieces)
        assert [at for at, _ in cut] == [at for at, _ in whole]
        assert cut[-1] == whole[-1]
        for (_, line), (_, full) in zip(cut[:-1], whole[:-1], strict=True):
            assert PROGRESS.fullmatch(line), line
            assert progress_numbers(line) <= progress_numbers(full)


def test_a_layer_the_host_has_counts_as_done_not_as_bytes() -> None:
    data = capture("layered-base-present")
    text = "".join(chunk for _, chunk in data["chunks"])
    assert ": Already exists" in text  # the clara stand-in's layer, pulled before
    output, lines = replay(data, interval=1.0)
    pulled = sum(data["layer_sizes"][1:])
    assert human_bytes(pulled) == "40.0 MB"
    assert lines[-1][1].startswith("pulled 127.0.0.1:15000/layered-standin:1: 40.0 MB in ")
    assert lines[-1][1].endswith(", 1 of 6 layers already here")
    first = lines[0][1]
    assert "/40.0 MB, 1/6 layers" in first, first
    assert output.progress is not None and output.progress.bytes_total() == pulled


def test_without_a_manifest_the_total_waits_for_every_layer_to_start() -> None:
    """Docker Hub images (no manifest read) or a manifest that could not be read."""
    text = "".join(chunk for _, chunk in LAYERED["chunks"])
    start = text.index("@@pull-manifest\n") + len("@@pull-manifest\n")
    end = text.index("\n@@pull-stream\n")
    # The same chunks at the same times, less the manifest's characters.
    chunks, at = [], 0
    for when, chunk in LAYERED["chunks"]:
        kept = "".join(c for i, c in enumerate(chunk, at) if not start <= i < end)
        chunks.append((when, kept))
        at += len(chunk)
    assert "".join(c for _, c in chunks) == text[:start] + text[end:]
    _, lines = replay(LAYERED, interval=1.0, chunks=chunks)
    progress = [line for _, line in lines[:-1]]
    assert any(" so far, " in line for line in progress), progress
    # Once the last layer shows its size, the total is docker's (4 digits per layer).
    assert "/41.1 MB, " in progress[-1], progress
    assert lines[-1][1].startswith("pulled 127.0.0.1:15000/layered-standin:1: 41.1 MB in ")


def test_a_missing_tag_prints_no_progress_and_keeps_the_registrys_answer() -> None:
    data = capture("missing-tag")
    assert data["exit_code"] == 1
    output, lines = replay(data, interval=1.0)
    assert lines == [] and output.summary is None
    assert output.progress is not None
    assert output.progress.last_text == (
        "Error response from daemon: manifest for 127.0.0.1:15000/clara-standin:no-such-tag "
        "not found: manifest unknown: manifest unknown")
    text = "".join(chunk for _, chunk in data["chunks"])
    assert text.rstrip("\n").splitlines()[-1] == (
        "ERROR: cannot pull 127.0.0.1:15000/clara-standin:no-such-tag: manifest for "
        "127.0.0.1:15000/clara-standin:no-such-tag not found: manifest unknown: "
        "manifest unknown")


def test_the_manifest_of_this_hosts_platform_gives_the_sizes() -> None:
    single = "".join(chunk for _, chunk in LAYERED["chunks"])
    single = single[single.index("\n") + 1:single.index("\n@@pull-stream\n")]
    sizes = manifest_layer_sizes(single, "amd64")
    assert sizes is not None and sorted(sizes.values()) == sorted(LAYERED["layer_sizes"])
    assert all(re.fullmatch(r"[0-9a-f]{12}", layer) for layer in sizes)
    listing = capture("manifest-list")
    amd64 = manifest_layer_sizes(listing["text"], "amd64")
    arm64 = manifest_layer_sizes(listing["text"], "arm64")
    assert amd64 is not None and list(amd64.values()) == listing["amd64"]
    assert arm64 is not None and list(arm64.values()) == listing["arm64"]
    assert manifest_layer_sizes(listing["text"], "s390x") is None
    assert manifest_layer_sizes("", "amd64") is None
    assert manifest_layer_sizes("no such manifest", "amd64") is None


def test_which_registries_get_a_manifest_read_and_how() -> None:
    info = {"RegistryConfig": json.loads((DATA / "registry-config.json").read_text())}
    assert registry_of("127.0.0.1:15000/clara-standin:1") == "127.0.0.1:15000"
    assert registry_of("nvcr.io/nvidia/pytorch:25.01-py3") == "nvcr.io"
    assert registry_of("projectmonai/monailabel:0.8.5") == DOCKER_HUB
    assert registry_of("busybox") == DOCKER_HUB
    assert registry_of("localhost/x:1") == "localhost"
    assert insecure_registry("127.0.0.1:15000", info)  # dockerd's default 127.0.0.0/8
    assert insecure_registry("localhost:5000", info)
    assert not insecure_registry("nvcr.io", info)
    assert not insecure_registry("10.0.0.5:5000", info)
    assert not insecure_registry("127.0.0.1:15000", None)
    named = {"RegistryConfig": {"IndexConfigs": {"registry.lab:5000": {"Secure": False}}}}
    assert insecure_registry("registry.lab:5000", named)
    assert str(manifest_command("127.0.0.1:15000/x:1", info)) == (
        "timeout 10 docker manifest inspect --insecure -v -- 127.0.0.1:15000/x:1 2>/dev/null")
    assert str(manifest_command("nvcr.io/nvidia/pytorch:25.01-py3", info)) == (
        "timeout 10 docker manifest inspect -v -- nvcr.io/nvidia/pytorch:25.01-py3 2>/dev/null")
    assert str(manifest_command("projectmonai/monailabel:0.8.5", info)).startswith(":")


def test_screen_lines_as_docker_draws_them() -> None:
    assert parse_line("a0953332d645: Downloading  196.6kB/19.47MB") == parse_line(
        "a0953332d645: Downloading  196.6kB/19.47MB")
    line = parse_line("a0953332d645: Downloading  196.6kB/19.47MB")
    assert (line.layer, line.status, line.current, line.total) == (
        "a0953332d645", "Downloading", 196_600, 19_470_000)
    # A terminal over 110 columns gets a bar, and over 50 the time left.
    wide = parse_line("a0953332d645: Extracting [=====>       ]  2.1GB/4.301GB 1m2s")
    assert (wide.status, wide.current, wide.total) == ("Extracting", 2_100_000_000,
                                                       4_301_000_000)
    assert parse_line("a0953332d645: Pull complete").status == "Pull complete"
    assert parse_line("Digest: sha256:abc").layer is None
    screen = Screen()
    assert screen.feed("\x1b[1A\x1b[2K\rab12cd34ef56: Wait") == []
    assert [x.status for x in screen.feed("ing \r\x1b[1B")] == ["Waiting"]
    assert screen.feed("Script done on 2026-11-23 [COMMAND_EXIT_CODE=\"0\"]\n") == []


def test_a_line_is_due_only_when_the_interval_has_passed() -> None:
    clock = Clock()
    lines: list[str] = []
    progress = PullProgress("img", lines.append, interval=2.0, clock=clock)
    progress.set_manifest({"ab12cd34ef56": 10_000_000})
    for second in range(7):
        clock.now = second + 0.5
        progress.feed(f"ab12cd34ef56: Downloading  {second + 1}MB/10MB\r")
    assert lines == ["pulling img: 3.0/10.0 MB, 0/1 layers, 1.0 MB/s",
                     "pulling img: 5.0/10.0 MB, 0/1 layers, 1.0 MB/s",
                     "pulling img: 7.0/10.0 MB, 0/1 layers, 1.0 MB/s"]
    clock.now = 250.0
    progress.feed("ab12cd34ef56: Pull complete\r\n")
    assert progress.finish() == "10.0 MB in 4m10s"
    assert lines[-1] == "pulled img: 10.0 MB in 4m10s"


def test_numbers_as_a_user_reads_them() -> None:
    assert human_pair(3.1e9, 19.8e9) == "3.1/19.8 GB"
    assert human_pair(512e3, 41.1e6) == "0.5/41.1 MB"
    assert human_bytes(812_000) == "812 kB" and human_bytes(19.8e9) == "19.8 GB"
    assert human_rate(84e6) == "84 MB/s" and human_rate(5.6e6) == "5.6 MB/s"
    assert human_rate(310e3) == "310 kB/s" and human_rate(12) == "12 B/s"
    assert duration(7.12) == "7.1s" and duration(242) == "4m02s" and duration(3900) == "1h05m"
