"""Remote POSIX sh snippets shared by the steps.

Each step sends one script per change, so these are text builders, not
commands: a step joins what it needs and pays one round trip for all of it.
Scripts print "ERROR: ..." and exit non-zero when they fail.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import base64
import hashlib
import shlex

q = shlex.quote

# Service manager: systemd when it is PID 1, else the SysV init script (what
# Debian's docker.io ships; also what the test hosts use).
DOCKERD_FUNCTIONS = r"""
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then wb_systemd=1; else wb_systemd=; fi
wb_docker_up() { docker info >/dev/null 2>&1; }
wb_docker_start() {
  if [ -n "$wb_systemd" ]; then systemctl start docker; else service docker start >/dev/null; fi
}
wb_docker_stop() {
  # docker.socket would start dockerd again on the next client call.
  if [ -n "$wb_systemd" ]; then systemctl stop docker.socket docker 2>/dev/null || systemctl stop docker
  else service docker stop >/dev/null; fi
}
wb_docker_reload() {
  # SIGHUP makes dockerd reread daemon.json (runtimes are reloadable; data-root is not).
  if [ -n "$wb_systemd" ]; then systemctl reload docker && echo "systemctl reload docker"
  elif service docker reload >/dev/null 2>&1; then echo "service docker reload"
  elif [ -s /var/run/docker.pid ] && kill -HUP "$(cat /var/run/docker.pid)"; then
    # Debian's /etc/init.d/docker has no reload action; this is what it would do.
    echo "SIGHUP to dockerd; its init script has no reload"
  else echo "ERROR: cannot reload dockerd: no systemd, no reload action, no /var/run/docker.pid"; return 1
  fi
}
wb_wait_for() {  # wb_wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  wb_n=$(( $1 * 5 )); shift
  while [ "$wb_n" -gt 0 ]; do "$@" && return 0; sleep 0.2; wb_n=$((wb_n - 1)); done
  return 1
}
"""


def atomic_write(path: str, content: bytes, *, expected_sha256: str | None,
                 new_mode: str = "644", new_owner: str | None = None,
                 validate: str | None = None) -> str:
    """Replace `path` with `content`: temp file in the same directory, its sha256
    checked against the content's, validated, fsynced, old file backed up (and the
    backup checked), then renamed over it.

    expected_sha256 is the file's hash when we read it (None: it did not exist).
    If it changed since, nothing is written: we never overwrite what we did not
    see. `validate` is a shell command run with the temp file as "$1".
    A new file gets new_mode/new_owner; an existing one keeps its mode and owner.

    Every step is checked: a write that fails (a full disk: ENOSPC) or lands
    other bytes, a backup that cannot be made, a rename that fails, each leaves
    the old file byte for byte and exits 5 with one line naming the file, and for
    a full disk the mount that is full ("no space left on /etc (...)").
    """
    expected = expected_sha256 or "absent"
    payload = base64.b64encode(content).decode()
    want = hashlib.sha256(content).hexdigest()
    validate_block = ""
    if validate:
        validate_block = f"""
  wb_validate() {{ {validate}; }}
  if ! wb_out=$(wb_validate "$tmp" 2>&1); then
    echo "ERROR: new $p failed validation, old file kept: $(echo "$wb_out" | tail -n 3 | tr '\\n' ' ')"
    exit 4
  fi"""
    owner_cmd = f'chown {q(new_owner)} "$tmp"' if new_owner else ":"
    return f"""(
  LC_ALL=C; export LC_ALL  # tool errors in English: ENOSPC is recognised by its text
  p={q(path)}
  # A symlinked file (dotfiles repo) is written where it points; the link stays.
  if [ -L "$p" ]; then p=$(readlink -f "$p"); fi
  d=$(dirname "$p"); b=$(basename "$p"); tmp=; bk=
  if [ -e "$p" ]; then wb_kept="the old file is unchanged"; else wb_kept="no file was written"; fi
  wb_fail() {{  # wb_fail WHAT ERROR: one line, the old file kept (the EXIT trap removes tmp)
    [ -n "$bk" ] && rm -f "$bk"
    case "$2" in
      *"No space left on device"*)
        # The mount that holds $d (the last line: the top one where mounts are stacked).
        wb_mnt=$(findmnt -n -o TARGET -T "$d" 2>/dev/null | tail -n 1); wb_mnt=${{wb_mnt:-$d}}
        wb_fs=$(findmnt -n -o FSTYPE -T "$d" 2>/dev/null | tail -n 1); wb_fs=${{wb_fs:-unknown}}
        wb_free=$(stat -f -c '%f %S' "$d" 2>/dev/null | awk '{{print $1 * $2}}')
        echo "ERROR: $p not written: no space left on $wb_mnt ($wb_fs, ${{wb_free:-?}} bytes free; $1 failed); $wb_kept" ;;
      *) echo "ERROR: $p not written: $1 failed: $(printf '%s' "$2" | tail -n 1); $wb_kept" ;;
    esac
    exit 5
  }}
  wb_sync() {{  # fsync one file (sync FILE: coreutils 8.24+); a failure is a failed write
    if ! wb_e=$(sync "$1" 2>&1); then
      case "$wb_e" in *"extra operand"*) sync ;; *) wb_fail "$2" "$wb_e" ;; esac
    fi
  }}
  if ! wb_e=$(mkdir -p "$d" 2>&1); then wb_fail "creating $d" "$wb_e"; fi
  if [ -e "$p" ]; then cur=$(sha256sum "$p" | cut -c1-64); else cur=absent; fi
  if [ "$cur" != {q(expected)} ]; then
    echo "ERROR: $p changed since it was read; nothing written (run again)"; exit 3
  fi
  rm -f "$d/.$b.wb-"??????  # temp files of a writer that was killed (not by us: see Remote.run)
  if ! tmp=$(mktemp "$d/.$b.wb-XXXXXX" 2>&1); then t=$tmp; tmp=; wb_fail "creating a temp file" "$t"; fi
  trap 'rm -f "$tmp"' EXIT
  if ! wb_e=$( {{ printf '%s' {q(payload)} | base64 -d > "$tmp"; }} 2>&1 ); then
    wb_fail "writing the temp file ({len(content)} bytes)" "$wb_e"
  fi
  wb_sync "$tmp" "writing the temp file ({len(content)} bytes)"
  wb_got=$(sha256sum "$tmp" | cut -c1-64)
  if [ "$wb_got" != {want} ]; then
    wb_fail "checking the temp file" "it holds other bytes than meant (sha256 $wb_got)"
  fi
  if [ -e "$p" ]; then
    if ! wb_e=$(chmod --reference="$p" "$tmp" 2>&1 && chown --reference="$p" "$tmp" 2>&1); then
      wb_fail "copying mode and owner" "$wb_e"
    fi
  elif ! wb_e=$(chmod {q(new_mode)} "$tmp" 2>&1 && {owner_cmd} 2>&1); then
    wb_fail "setting mode and owner" "$wb_e"
  fi{validate_block}
  if [ -e "$p" ]; then
    # No backup, no write: the backup is made and checked before the old file goes.
    wb_bk="$p.bak-$(date -u +%Y%m%dT%H%M%SZ)"; n=1
    while [ -e "$wb_bk" ]; do wb_bk="$p.bak-$(date -u +%Y%m%dT%H%M%SZ)-$n"; n=$((n + 1)); done
    bk=$wb_bk
    if ! wb_e=$(cp -p "$p" "$bk" 2>&1); then wb_fail "writing the backup $bk" "$wb_e"; fi
    wb_sync "$bk" "writing the backup $bk"
    if [ "$(sha256sum "$bk" | cut -c1-64)" != "$cur" ]; then
      wb_fail "checking the backup $bk" "it is not a copy of $p"
    fi
  fi
  if ! wb_e=$(mv -f "$tmp" "$p" 2>&1); then wb_fail "renaming the temp file over $p" "$wb_e"; fi
  trap - EXIT
  if [ -n "$bk" ]; then echo "@@backup"; echo "$bk"; fi
  sync "$d" 2>/dev/null || sync
)"""


# How a new daemon.json is checked before it replaces the old one: dockerd
# itself where it can (--validate, dockerd >= 23); 20.10 cannot, so at least
# the bytes that landed on disk are parsed by a second parser (ours wrote them
# with json.dumps). Decided on the host, when writing, so reading facts does
# not pay for `dockerd --help`.
VALIDATE_DAEMON_JSON = (
    'if dockerd --help 2>&1 | grep -q -- "--validate"; then '
    'dockerd --validate --config-file "$1"; '
    'elif command -v python3 >/dev/null 2>&1; then python3 -m json.tool "$1" >/dev/null; fi'
)


def sha256_hex(data: bytes | None) -> str | None:
    """The hash atomic_write compares against; None for a file that does not exist."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def replace_container(image: str, name: str, run_command: str) -> list[str]:
    """Shell lines that replace container `name` with one started by `run_command`.

    The image is pulled before the old container is removed: a bad image name
    or a registry outage must not cost the user the container they have.
    """
    return [
        f"if ! docker image inspect {q(image)} >/dev/null 2>&1; then "
        f"if ! out=$(docker pull -q {q(image)} 2>&1); then "
        f'echo "ERROR: cannot pull {image}: $(echo "$out" | tail -n 1)"; exit 1; fi; fi',
        f"docker rm -f {q(name)} >/dev/null 2>&1 || true",
        "if ! out=$(" + run_command + ' 2>&1); then '
        'echo "ERROR: docker run failed: $(echo "$out" | tail -n 1)"; exit 1; fi',
    ]
