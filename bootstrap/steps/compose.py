"""Step 5: `docker compose` (the v2 CLI plugin) works; installed if it does not.

Order of preference: the distribution's package (docker-compose-plugin from
Docker's apt repo, docker-compose-v2 on Ubuntu), after an `apt-get update` if
neither has a candidate yet; else the static binary from Compose's GitHub
release, checked against its published sha256.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

from bootstrap.facts import Fact, path_or_none
from bootstrap.shell import Sh, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok

COMPOSE_RELEASE = "v2.29.7"
APT_PACKAGES = ("docker-compose-plugin", "docker-compose-v2")

# After the line that sets $wb_packages (APT_PACKAGES) and $wb_release (COMPOSE_RELEASE).
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
  url=https://github.com/docker/compose/releases/download/$wb_release/docker-compose-linux-$(uname -m)
  mkdir -p "$dir"; tmp=$(mktemp "$dir/.docker-compose.XXXXXX"); trap 'rm -f "$tmp" "$tmp.sha"' EXIT
  fetch() { curl -fsSL --retry 3 -o "$1" "$2" 2>/dev/null || wget -q -O "$1" "$2"; }
  fetch "$tmp" "$url" && fetch "$tmp.sha" "$url.sha256" || {
    echo "ERROR: no apt package for compose and cannot download $url"; exit 1; }
  [ "$(sha256sum "$tmp" | cut -c1-64)" = "$(cut -c1-64 "$tmp.sha")" ] || {
    echo "ERROR: $url does not match its published sha256"; exit 1; }
  chmod 755 "$tmp" && mv -f "$tmp" "$dir/docker-compose"
  method="$url"
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
    script = sh("wb_packages={packages}; wb_release={release}",
                packages=" ".join(APT_PACKAGES), release=COMPOSE_RELEASE) + INSTALL
    result = ctx.remote.run(script, timeout=900)
    if not result.ok:
        raise StepFailed(result.error_line())
    return changed(f"installed: {result.sections().get('installed', '').strip()}")


STEP = Step("compose", run, facts=(COMPOSE_VERSION, HAS_APT))
