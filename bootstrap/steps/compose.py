"""Step 5: `docker compose` (the v2 CLI plugin) works; installed if it does not.

Order of preference: the distribution's package (docker-compose-plugin from
Docker's apt repo, docker-compose-v2 on Ubuntu), after an `apt-get update` if
neither has a candidate yet; else the static binary from Compose's GitHub
release, checked against the sha256 pinned here, per version and
architecture (a digest fetched from the same place as the binary proves
nothing). An architecture without a pin is refused.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

from bootstrap.facts import Fact, path_or_none
from bootstrap.shell import LINES, Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

COMPOSE_RELEASE = "v2.29.7"
APT_PACKAGES = ("docker-compose-plugin", "docker-compose-v2")
DOWNLOAD_BASE = "https://github.com/docker/compose/releases/download"
# sha256 of the release assets docker-compose-linux-<uname -m>, (release, arch) -> hex.
# Source: periareon/rules_docker_compose docker_compose/private/versions.bzl @63f1b825,
# generated from the release's checksums.txt; the same values are pinned independently
# by other projects (e.g. the docker:27.3.1 image's Dockerfile); read 2026-11-23.
# A new release needs new pins here, from its checksums.txt, checked the same way.
COMPOSE_SHA256: dict[tuple[str, str], str] = {
    ("v2.29.7", "x86_64"): "383ce6698cd5d5bbf958d2c8489ed75094e34a77d340404d9f32c4ae9e12baf0",
    ("v2.29.7", "aarch64"): "6e9fbd5daa20dca5d7d89145081ae8155d68ef2928b497d9f85b54fe0f9dbb2c",
}

# After the lines that set $wb_packages (APT_PACKAGES), $wb_release (COMPOSE_RELEASE),
# $wb_base (DOWNLOAD_BASE), $wb_pinned and wb_pin (the pinned digest per architecture).
INSTALL = Sh(r"""
method=
if command -v apt-get >/dev/null 2>&1; then
  wb_pick() {
    for p in $wb_packages; do
      c=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
      if [ -n "$c" ] && [ "$c" != "(none)" ]; then echo "$p"; return 0; fi
    done
    return 1
  }
  pkg=$(wb_pick) || { apt-get update -qq >/dev/null 2>&1; pkg=$(wb_pick) || pkg=; }
  if [ -n "$pkg" ]; then
    log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=120 "$pkg" >"$log" 2>&1; then
      echo "ERROR: apt-get install $pkg failed: $(grep -E '^E:' "$log" | tail -n 1)"; rm -f "$log"; exit 1
    fi
    rm -f "$log"; method="apt package $pkg"
  fi
fi
if [ -z "$method" ]; then
  dir=/usr/local/lib/docker/cli-plugins
  arch=$(uname -m)
  want=$(wb_pin "$arch") || {
    echo "ERROR: no sha256 pinned for Docker Compose $wb_release on $arch (pinned: $wb_pinned); not downloading it: install the docker-compose-plugin package instead"; exit 1; }
  url=$wb_base/$wb_release/docker-compose-linux-$arch
  mkdir -p "$dir"; tmp=$(mktemp "$dir/.docker-compose.XXXXXX"); trap 'rm -f "$tmp"' EXIT
  fetch() { curl -fsSL --retry 3 -o "$1" "$2" 2>/dev/null || wget -q -O "$1" "$2"; }
  fetch "$tmp" "$url" || {
    echo "ERROR: no apt package for compose and cannot download $url"; exit 1; }
  got=$(sha256sum "$tmp" | cut -c1-64)
  [ "$got" = "$want" ] || {
    echo "ERROR: $url: sha256 $got is not the pinned $want; not installed"; exit 1; }
  chmod 755 "$tmp" && mv -f "$tmp" "$dir/docker-compose"
  method="$url (sha256 pinned in code)"
fi
if ! v=$(docker compose version 2>&1); then echo "ERROR: docker compose still fails: $v"; exit 1; fi
echo "@@installed"; echo "$v via $method"
""")


def _parse_compose(text: str) -> str | None:
    """The first line of `docker compose version` when it worked, else None."""
    lines = text.splitlines()
    return lines[0] if lines and lines[-1] == "rc=0" else None


COMPOSE_VERSION: Fact[str | None] = Fact(
    "compose",
    lambda _: Sh('if wb_c=$(docker compose version 2>&1); then echo "$wb_c" | head -n 1; '
                 "echo rc=0; else echo rc=1; fi"),
    _parse_compose)
HAS_APT: Fact[bool] = Fact(
    "apt", lambda _: Sh("command -v apt-get || echo absent"),
    lambda text: path_or_none(text) is not None)


def run(ctx: HostContext) -> StepOutcome:
    version = ctx.fact(COMPOSE_VERSION)
    if version:
        return ok(version)
    if ctx.options.check:
        via = "apt" if ctx.fact(HAS_APT) else f"GitHub release {COMPOSE_RELEASE}"
        return ctx.would(f"install the docker compose plugin (via {via})")
    pins = {arch: digest for (release, arch), digest in COMPOSE_SHA256.items()
            if release == COMPOSE_RELEASE}
    # The pinned digest per architecture, as a shell function: `wb_pin ARCH` prints it.
    cases = LINES.join([sh("    {arch}) echo {digest} ;;", arch=arch, digest=digest)
                        for arch, digest in pins.items()])
    script = LINES.join([
        sh("wb_packages={packages}; wb_release={release}; wb_base={base}; wb_pinned={pinned}",
           packages=" ".join(APT_PACKAGES), release=COMPOSE_RELEASE, base=DOWNLOAD_BASE,
           pinned=", ".join(pins) or "none"),
        Sh('wb_pin() {\n  case "$1" in'), cases, Sh("    *) return 1 ;;\n  esac\n}"),
        INSTALL,
    ])
    result = ctx.remote.run(script, timeout=900)
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed(f"installed: {result.sections().get('installed', '').strip()}")


STEP = Step("compose", run, facts=(COMPOSE_VERSION, HAS_APT))
