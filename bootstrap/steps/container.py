"""Step 6: the workbench container runs, detached, with the nvidia runtime.

JupyterLab is published on host 8890 (container 8888), AIAA on 5000, the
workspace directory is mounted at /workspace, restart unless-stopped. The
Jupyter token is made once on the host (~/.config/gpu-workbench/jupyter_token,
mode 600) and reaches the container through an env file, never a command line.
A running container is left alone unless its image, ports or settings differ.
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

import shlex

from bootstrap.container import (
    AIAA_PORT,
    JUPYTER_CONTAINER_PORT,
    JUPYTER_HOST_PORT,
    ContainerSpec,
    differences,
    needs_replace,
)
from bootstrap.facts import TOKEN_DIR, TOKEN_FILE
from bootstrap.steps.base import HostContext, StepFailed, StepOutcome, changed, ok

q = shlex.quote


def workspace_path(workspace: str, home: str) -> str:
    if workspace == "~":
        return home
    if workspace.startswith("~/"):
        return f"{home}/{workspace[2:]}"
    return workspace


def spec_for(ctx: HostContext) -> ContainerSpec:
    o = ctx.options
    return ContainerSpec(name=o.container_name, image=o.image,
                         workspace=workspace_path(o.workspace, ctx.facts.home))


def run(ctx: HostContext) -> StepOutcome:
    f = ctx.facts
    spec = spec_for(ctx)
    reasons = differences(spec, f.container, f.token)
    if not reasons:
        _add_notes(ctx, f.token or "")
        return ok(f"{spec.name} running {spec.image}")
    replace = needs_replace(reasons)
    verb = ("replace" if f.container else "create") if replace else "start"
    why = f"from {spec.image}" if verb == "create" else f"({', '.join(reasons)})"
    if ctx.options.check:
        return ctx.would(f"{verb} {spec.name} {why}")

    owner = f"{q(f.user)}:{q(f.group)}"
    script = [f"""
set -u
cfg={q(f.home)}/{TOKEN_DIR}
for d in {q(f.home)}/.config "$cfg"; do
  [ -d "$d" ] || {{ mkdir -m 700 "$d" && chown {owner} "$d"; }} || exit 1
done
if [ ! -s {q(f.home)}/{TOKEN_FILE} ]; then
  # 32 random bytes as hex; written under umask 077, then renamed into place.
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > "$cfg/.jupyter_token.tmp") &&
    chown {owner} "$cfg/.jupyter_token.tmp" && mv -f "$cfg/.jupyter_token.tmp" {q(f.home)}/{TOKEN_FILE} ||
    {{ echo "ERROR: cannot write the Jupyter token"; exit 1; }}
fi
token=$(cat {q(f.home)}/{TOKEN_FILE})
(umask 077; printf 'JUPYTER_TOKEN=%s\\n' "$token" > "$cfg/container.env") && chown {owner} "$cfg/container.env"
token_sha=$(printf '%s' "$token" | sha256sum | cut -c1-12)
ws={q(spec.workspace)}
[ -d "$ws" ] || {{ mkdir -p "$ws" && chown {owner} "$ws"; }} || {{ echo "ERROR: cannot create $ws"; exit 1; }}
"""]
    if replace:
        # Pull before removing: a bad image name or a registry outage must not
        # cost the user the container they have.
        script.append(
            f"if ! docker image inspect {q(spec.image)} >/dev/null 2>&1; then "
            f"if ! out=$(docker pull -q {q(spec.image)} 2>&1); then "
            f'echo "ERROR: cannot pull {spec.image}: $(echo "$out" | tail -n 1)"; exit 1; fi; fi')
        script.append(f"docker rm -f {q(spec.name)} >/dev/null 2>&1 || true")
        script.append("if ! out=$(" + spec.run_command("$cfg/container.env", "$token_sha")
                      + ' 2>&1); then echo "ERROR: docker run failed: $(echo "$out" | tail -n 1)"; '
                      "exit 1; fi")
    else:
        script.append(f'if ! out=$(docker start {q(spec.name)} 2>&1); then '
                      'echo "ERROR: docker start failed: $(echo "$out" | tail -n 1)"; exit 1; fi')
    # Running right after `docker run -d` is not enough: a bad command dies a
    # moment later and the restart policy brings it back, so "running" alone
    # proves nothing. Healthy: a second later, the same start is still running.
    script.append(f"""
look() {{ docker inspect -f '{{{{.State.Running}}}} {{{{.State.Restarting}}}} {{{{.State.StartedAt}}}}' {q(spec.name)} 2>/dev/null; }}
n=0; until look | grep -q '^true false ' || [ $n -ge 50 ]; do sleep 0.2; n=$((n + 1)); done
first=$(look); sleep 1; second=$(look)
case "$first" in "true false "*) ;; *) first=none ;; esac
if [ "$first" != "$second" ]; then
  echo "ERROR: container {spec.name} exited: $(docker logs --tail 3 {q(spec.name)} 2>&1 | tr '\\n' ' ')"; exit 1
fi
echo "@@token"; echo "$token"
""")
    result = ctx.remote.run("\n".join(script), timeout=3600)  # may pull a 20 GB image
    if not result.ok:
        raise StepFailed(result.error_line())
    token = result.sections().get("token", "").strip()
    _add_notes(ctx, token)
    done = {"create": "created", "replace": "replaced", "start": "started"}[verb]
    return changed(f"{done} {spec.name} {why}")


def _add_notes(ctx: HostContext, token: str) -> None:
    c = ctx.remote.connection
    key = c.connect_kwargs.get("key_filename")
    if isinstance(key, list | tuple):
        key = key[0] if key else None
    key_opt = f"-i {q(str(key))} " if key else ""
    port_opt = f"-p {c.port} " if c.port != 22 else ""
    ctx.notes.extend([
        f"JupyterLab: http://localhost:{JUPYTER_HOST_PORT}/lab?token={token}",
        f"AIAA:       http://localhost:{AIAA_PORT}/",
        f"tunnel:     ssh {key_opt}{port_opt}-L {JUPYTER_CONTAINER_PORT}:localhost:"
        f"{JUPYTER_CONTAINER_PORT} -L {JUPYTER_HOST_PORT}:localhost:{JUPYTER_HOST_PORT} "
        f"-L {AIAA_PORT}:localhost:{AIAA_PORT} {c.user}@{c.host}",
    ])
