"""Pulling the image on the host, with its progress streamed back as it happens.

A 20 GB NGC image takes minutes; `docker pull -q` said nothing all that time.
The pull now runs `docker pull` under a pseudo-terminal (script(1), util-linux),
because that is the only way docker pull prints byte counts, and copies what it
prints to the command's stdout while it runs; bootstrap/pull_progress.py reads
it on this side (PullOutput routes the stream there).

Why the CLI and not the Engine API's /images/create JSON stream (`curl
--unix-socket`), whose numbers are exact: the CLI is what reads `docker login`
credentials and credential helpers (/root/.docker/config.json) and hands them to
dockerd; the API takes them only in an X-Registry-Auth header we would have to
rebuild from that file and every helper, or pull private NGC images without
them. The terminal format is docker's human one, but it has been the same since
Docker 1.x, and a line this side cannot read costs only its progress line,
never the pull.

What the host does, in the one command of the step that needs the image:
- `docker manifest inspect -v` first, bounded to 10 s, for the total size
  (skipped for Docker Hub, which counts manifest reads as pulls against its rate
  limit; `--insecure` where dockerd itself treats the registry as insecure).
- A pull that sends nothing for `stall_s` seconds is stopped with one line:
  docker pull waits forever on a registry that stops answering mid-layer.
- If nobody reads the output any more (fab was killed, the link dropped), the
  pull is stopped: nobody would see it end, and a run started meanwhile would
  race it for the container. Nothing was changed yet (the old container is
  removed only after the pull); the next run pulls again.
- Without script(1) the pull runs as before, silently.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bootstrap.pull_progress import PullProgress, go_arch, manifest_layer_sizes
from bootstrap.shell import Sh, sh

if TYPE_CHECKING:
    from bootstrap.steps.base import HostContext

PULL_STALL_S = 300  # a pull with nothing new for this long is stopped
# The whole command's bound where it may pull: the stall check bounds a stuck
# pull; this only catches a dockerd that hangs elsewhere.
PULL_COMMAND_TIMEOUT_S = 6 * 3600
MANIFEST_TIMEOUT_S = 10
DOCKER_HUB = "docker.io"
POLL_S = 0.2  # how often the host copies new output and checks for a stall

MANIFEST_MARK = "@@pull-manifest"
STREAM_MARK = "@@pull-stream"
DONE_MARK = "@@pull-done"


def registry_of(image: str) -> str:
    """The registry an image reference names ('nvcr.io', '127.0.0.1:15000'), as docker
    reads it: a first component with '.' or ':', or 'localhost'; else Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def insecure_registry(registry: str, docker_info: dict[str, Any] | None) -> bool:
    """Does dockerd pull from `registry` over plain HTTP (docker info's RegistryConfig:
    insecure-registries, by name or by CIDR; 127.0.0.0/8 is in by default)?"""
    config = (docker_info or {}).get("RegistryConfig") or {}
    index = (config.get("IndexConfigs") or {}).get(registry) or {}
    if index.get("Secure") is False:
        return True
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for cidr in config.get("InsecureRegistryCIDRs") or []:
        try:
            if address in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


def manifest_command(image: str, docker_info: dict[str, Any] | None) -> Sh:
    """What prints the image's manifest for the total size (or nothing)."""
    registry = registry_of(image)
    if registry == DOCKER_HUB:
        return Sh(":  # Docker Hub counts manifest reads as pulls: no total up front")
    insecure = Sh("--insecure ") if insecure_registry(registry, docker_info) else Sh("")
    return sh("timeout {seconds} docker manifest inspect {insecure}-v -- {image} 2>/dev/null",
              seconds=MANIFEST_TIMEOUT_S, insecure=insecure, image=image)


def pull_command(image: str, *, manifest: Sh, stall_s: int = PULL_STALL_S) -> Sh:
    """Shell that pulls `image` unless the host has it, streaming docker pull's terminal
    output between MANIFEST_MARK/STREAM_MARK and DONE_MARK lines (see PullOutput).
    Fails with "ERROR: cannot pull IMAGE: <docker's or the registry's answer>"."""
    # script(1) runs its command with $SHELL -c: the command is shell text, one word
    # here. It notes docker's pid, for a stop that reaches docker itself.
    pull = sh('echo $$ > "$wb_pull/docker.pid"; exec docker pull -- {image}', image=image).text
    return sh("""
wb_image={image}
if ! docker image inspect -- "$wb_image" >/dev/null 2>&1; then
  if ! command -v script >/dev/null 2>&1; then
    # No script(1): no terminal for docker pull, so no progress; the pull as it was.
    if ! wb_out=$(docker pull -q -- "$wb_image" 2>&1); then
      echo "ERROR: cannot pull $wb_image: $(printf '%s\\n' "$wb_out" | tail -n 1 | sed 's/^Error response from daemon: //')"; exit 1
    fi
  else
    echo "@@pull-manifest"
    {manifest}
    echo; echo "@@pull-stream"
    wb_pull=$(mktemp -d) || {{ echo "ERROR: cannot pull $wb_image: no temp directory"; exit 1; }}
    export wb_pull
    : > "$wb_pull/log"
    # docker pull prints byte counts only to a terminal: script gives it one and logs
    # what it prints as it comes (-f); the loop below copies the log to stdout.
    ( SHELL=/bin/sh script -qefc {pull} "$wb_pull/log" </dev/null >/dev/null 2>&1
      echo $? > "$wb_pull/rc" ) &
    wb_job=$!
    wb_sent=0; wb_still=0; wb_why=; wb_stall={stall_s}
    while :; do
      if [ -s "$wb_pull/rc" ]; then wb_end=1; else wb_end=; fi
      wb_size=$(wc -c < "$wb_pull/log")
      if [ "$wb_size" -gt "$wb_sent" ]; then
        # A write that fails: nobody reads any more (fab killed, link lost).
        tail -c +$((wb_sent + 1)) "$wb_pull/log" | head -c $((wb_size - wb_sent)) || {{ wb_why=gone; break; }}
        wb_sent=$wb_size; wb_still=0
      elif [ -z "$wb_end" ]; then
        wb_still=$((wb_still + 1))
        [ "$wb_still" -ge {stall_polls} ] && {{ wb_why=stalled; break; }}
      fi
      [ -n "$wb_end" ] && break
      sleep {poll}
    done
    if [ -n "$wb_why" ]; then
      # docker pull ends on TERM, and dockerd stops a pull nobody waits for.
      wb_docker=$(cat "$wb_pull/docker.pid" 2>/dev/null)
      if [ -n "$wb_docker" ]; then
        kill "$wb_docker" 2>/dev/null
        wb_n=0; while kill -0 "$wb_docker" 2>/dev/null && [ $wb_n -lt 50 ]; do sleep 0.2; wb_n=$((wb_n + 1)); done
        kill -0 "$wb_docker" 2>/dev/null && kill -9 "$wb_docker"
      fi
    fi
    wait "$wb_job"
    wb_rc=$(cat "$wb_pull/rc" 2>/dev/null)
    echo
    if [ "$wb_why" = gone ]; then rm -rf "$wb_pull"; exit 1; fi
    if [ "$wb_why" = stalled ]; then
      echo "@@pull-done failed"
      echo "ERROR: cannot pull $wb_image: nothing came from the registry for ${{wb_stall}}s; stopped the pull"
      rm -rf "$wb_pull"; exit 1
    fi
    if [ "${{wb_rc:-1}}" != 0 ] || ! docker image inspect -- "$wb_image" >/dev/null 2>&1; then
      echo "@@pull-done failed"
      wb_esc=$(printf '\\033')
      wb_last=$(tr '\\r' '\\n' < "$wb_pull/log" | sed -e "s/$wb_esc\\[[0-9;]*[A-Za-z]//g" -e 's/^Error response from daemon: //' | grep -v -e '^Script started on' -e '^Script done on' -e '^[[:space:]]*$' | tail -n 1)
      echo "ERROR: cannot pull $wb_image: ${{wb_last:-docker pull exited ${{wb_rc:-?}}}}"
      rm -rf "$wb_pull"; exit 1
    fi
    echo "@@pull-done ok"
    rm -rf "$wb_pull"
  fi
fi""", image=image, manifest=manifest, pull=pull, stall_s=stall_s,
              stall_polls=max(1, round(stall_s / POLL_S)), poll=str(POLL_S))


class PullOutput:
    """Reads a step's stdout as it arrives (Remote.run's on_stdout) and hands the pull's
    part to a PullProgress: the manifest between MANIFEST_MARK and STREAM_MARK, then
    docker pull's screen until DONE_MARK. Everything else passes by."""

    def __init__(self, image: str, emit: Callable[[str], None], *, architecture: str,
                 interval: float, clock: Callable[[], float] | None = None) -> None:
        self.image = image
        self.emit = emit
        self.architecture = go_arch(architecture)
        self.interval = interval
        self.clock = clock
        self.progress: PullProgress | None = None
        self.summary: str | None = None  # "41.0 MB in 16.2s" once the pull succeeded
        self._state = "before"
        self._buffer = ""

    def feed(self, chunk: str) -> None:
        self._buffer += chunk
        while True:
            if self._state == "before":
                at = self._buffer.find(MANIFEST_MARK + "\n")
                if at < 0:
                    self._buffer = self._buffer[-len(MANIFEST_MARK):]
                    return
                self.progress = PullProgress(self.image, self.emit, interval=self.interval,
                                             clock=self.clock or time.monotonic)
                self._buffer = self._buffer[at + len(MANIFEST_MARK) + 1:]
                self._state = "manifest"
            elif self._state == "manifest":
                at = self._buffer.find("\n" + STREAM_MARK + "\n")
                if at < 0:
                    return
                assert self.progress is not None
                self.progress.set_manifest(
                    manifest_layer_sizes(self._buffer[:at], self.architecture))
                self._buffer = self._buffer[at + len(STREAM_MARK) + 2:]
                self._state = "stream"
            elif self._state == "stream":
                assert self.progress is not None
                mark = "\n" + DONE_MARK + " "
                at = self._buffer.find(mark)
                if at < 0:
                    # Hold back what could be the start of the mark.
                    keep = len(mark)
                    self.progress.feed(self._buffer[:-keep])
                    self._buffer = self._buffer[-keep:]
                    return
                end = self._buffer.find("\n", at + len(mark))
                if end < 0:
                    return
                self.progress.feed(self._buffer[:at])
                if self._buffer[at + len(mark):end].strip() == "ok":
                    self.summary = self.progress.finish()
                self._buffer = self._buffer[end + 1:]
                self._state = "after"
            else:
                self._buffer = ""
                return


def pull_for(ctx: HostContext, image: str, step: str, docker_info: dict[str, Any] | None
             ) -> tuple[Sh, PullOutput]:
    """The pull of `image` for a step's change script, and the reader of its output
    (pass its feed as Remote.run's on_stdout). Progress lines carry host and step:
    `wb@10.201.1.2  container: pulling IMAGE: ...`, one whole line each.
    docker_info: the step's DOCKER_INFO fact (its raw dict), for the platform and
    the registry's security."""
    raw = docker_info
    label = ctx.remote.label
    watch = PullOutput(image, lambda line: ctx.emit(f"{label}  {step}: {line}"),
                       architecture=(raw or {}).get("Architecture", ""),
                       interval=ctx.options.pull_progress_seconds)
    pull = pull_command(image, manifest=manifest_command(image, raw),
                        stall_s=ctx.options.pull_stall_seconds)
    return pull, watch
