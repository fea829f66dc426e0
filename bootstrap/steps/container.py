"""Step 6: the workbench container runs, detached, with the nvidia runtime.

--image names a preset (components/images.py) or any image. A preset brings
its ports (each published container -> host) and its JupyterLab start; any
other image gets JupyterLab on host 8890 (container 8888) and AIAA on 5000.
The workspace directory is mounted at /workspace, restart unless-stopped. The
Jupyter token is made once on the host (~/.config/gpu-workbench/jupyter_token,
mode 600), or is the one given (--jupyter-token / WORKBENCH_JUPYTER_TOKEN,
copied over SFTP), and reaches the container through an env file, never a
command line. A running container is left alone unless its image, ports or
settings differ. An image the host lacks is pulled first, in the same command,
with its progress printed as it goes (bootstrap/image_pull.py).
"""

# ruff: noqa: E501  (embedded shell scripts stay on one line each, as a shell reader expects)

from __future__ import annotations

from typing import Any

from bootstrap.container_spec import (
    TOKEN_DIR,
    TOKEN_FILE,
    ContainerSpec,
    differences,
    needs_replace,
    spec_for_image,
    workspace_path,
)
from bootstrap.facts import DOCKER_INFO, LOGIN, Fact, json_object_or_none
from bootstrap.image_pull import PULL_COMMAND_TIMEOUT_S, pull_for
from bootstrap.remembered_image import REMEMBERED_IMAGE, remember_command
from bootstrap.shell import LINES, Sh, replace_container, sh
from bootstrap.steps.base import HostContext, Step, StepFailed, StepOutcome, changed, ok
from bootstrap.user_site import INSTALLED_PACKAGES

# Where a given token lands first (SFTP, as the login user), to be moved into place.
TOKEN_UPLOAD = ".gpu-workbench-token.new"

CONTAINER: Fact[dict[str, Any] | None] = Fact(
    "container",
    lambda o: sh("docker inspect --type container {name} --format '{{{{json .}}}}' "
                 "2>/dev/null || echo absent", name=o.container_name),
    json_object_or_none)
# Whether the host has the image, for --check to say a pull would come first. The
# change script looks again on the host before it pulls.
IMAGE_PRESENT: Fact[bool] = Fact(
    "image_present",
    lambda o: sh("if docker image inspect -- {image} >/dev/null 2>&1; then echo yes; else echo no; fi",
                 image=o.image_ref),
    lambda text: text.strip() == "yes")
HOST_TOKEN: Fact[str | None] = Fact(
    "token", lambda _: sh('cat "$home"/{token_file} 2>/dev/null', token_file=TOKEN_FILE),
    lambda text: text.strip() or None, needs=(LOGIN,))


def spec_for(ctx: HostContext) -> ContainerSpec:
    o = ctx.options
    # Packages installed by an earlier run keep their user site in the container, so a
    # rerun without --pip neither replaces the container nor hides them.
    return spec_for_image(o.container_name, o.image_ref, o.preset,
                          workspace_path(o.workspace, ctx.fact(LOGIN).home),
                          packages=bool(o.requirements)
                          or ctx.fact(INSTALLED_PACKAGES) is not None)


def image_note(ctx: HostContext) -> str:
    """Where the image came from, when --image did not name it."""
    remembered = ctx.fact(REMEMBERED_IMAGE)
    if ctx.options.image_source == "host":
        return " (the image this host was bootstrapped with last; --image to change it)"
    if remembered.problem:
        return f" ({remembered.problem}; the default image instead)"
    return ""


def must_remember(ctx: HostContext) -> bool:
    """--image was given and the host remembers another (or none)."""
    return (ctx.options.image_source == "given"
            and ctx.fact(REMEMBERED_IMAGE).image != ctx.options.image)


def run(ctx: HostContext) -> StepOutcome:
    login = ctx.fact(LOGIN)
    running = ctx.fact(CONTAINER)
    host_token = ctx.fact(HOST_TOKEN)
    spec = spec_for(ctx)
    given = ctx.options.jupyter_token
    token = given or host_token
    reasons = differences(spec, running, token)
    note = image_note(ctx)
    if not reasons:
        _add_services(ctx, spec, token or "")
        if not must_remember(ctx):
            return ok(f"{spec.name} running {spec.image}{note}")
        if ctx.options.check:
            return ctx.would(f"remember --image {ctx.options.image} for runs without --image")
        owner = sh("{user}:{group}", user=login.user, group=login.group)
        result = ctx.remote.run(remember_command(login.home, owner, ctx.options.image))
        if not result.ok:
            raise StepFailed(result.error_line())
        return changed(f"{spec.name} running {spec.image}; remembered --image "
                       f"{ctx.options.image} for runs without --image")
    replace = needs_replace(reasons)
    verb = ("replace" if running else "create") if replace else "start"
    why = f"from {spec.image}" if verb == "create" else f"({', '.join(reasons)})"
    # The facts asked about --image's image; a remembered one was not asked about.
    present = ctx.fact(IMAGE_PRESENT) if ctx.options.image_source != "host" else None
    if ctx.options.check:
        pulling = ("" if not replace or present
                   else f" (pulling {spec.image} first)" if present is False
                   else f" (pulling {spec.image} first if the host lacks it)")
        return ctx.would(f"{verb} {spec.name} {why}{pulling}{note}")

    home = login.home
    owner = sh("{user}:{group}", user=login.user, group=login.group)
    upload = f"{home}/{TOKEN_UPLOAD}"
    move_given = Sh("")
    if given is not None and given != host_token:
        ctx.remote.put_private(given.encode(), upload)
        # The token we were given, copied over SFTP, replaces the host's own.
        move_given = sh("chown {owner} {upload} && chmod 600 {upload} && "
                        "mv -f {upload} {home}/{token_file} || "
                        '{{ echo "ERROR: cannot move the given Jupyter token into place"; exit 1; }}',
                        owner=owner, upload=upload, home=home, token_file=TOKEN_FILE)
    script = [sh("""
set -u
cfg={home}/{token_dir}
for d in {home}/.config "$cfg"; do
  [ -d "$d" ] || {{ mkdir -m 700 "$d" && chown {owner} "$d"; }} || exit 1
done
{move_given}
if [ ! -s {home}/{token_file} ]; then
  # 32 random bytes as hex; written under umask 077, then renamed into place.
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > "$cfg/.jupyter_token.tmp") &&
    chown {owner} "$cfg/.jupyter_token.tmp" && mv -f "$cfg/.jupyter_token.tmp" {home}/{token_file} ||
    {{ echo "ERROR: cannot write the Jupyter token"; exit 1; }}
fi
token=$(cat {home}/{token_file})
(umask 077; printf 'JUPYTER_TOKEN=%s\\n' "$token" > "$cfg/container.env") && chown {owner} "$cfg/container.env"
token_sha=$(printf '%s' "$token" | sha256sum | cut -c1-12)
ws={workspace}
[ -d "$ws" ] || {{ mkdir -p "$ws" && chown {owner} "$ws"; }} || {{ echo "ERROR: cannot create $ws"; exit 1; }}
""", home=home, token_dir=TOKEN_DIR, token_file=TOKEN_FILE, owner=owner, move_given=move_given,
        workspace=spec.workspace)]
    pull_output = None
    if replace:
        info = ctx.fact(DOCKER_INFO)
        pull, pull_output = pull_for(ctx, spec.image, STEP_NAME,
                                     info.raw if info is not None else None)
        script.extend(replace_container(
            pull, spec.name,
            spec.run_command(Sh('"$cfg/container.env"'), Sh('"$token_sha"'))))
    else:
        script.append(sh("if ! out=$(docker start {name} 2>&1); then "
                         'echo "ERROR: docker start failed: $(echo "$out" | tail -n 1)"; exit 1; fi',
                         name=spec.name))
    # Running right after `docker run -d` is not enough: a bad command dies a
    # moment later and the restart policy brings it back, so "running" alone
    # proves nothing. Healthy: a second later, the same start is still running.
    script.append(sh("""
look() {{ docker inspect -f '{{{{.State.Running}}}} {{{{.State.Restarting}}}} {{{{.State.StartedAt}}}}' {name} 2>/dev/null; }}
n=0; until look | grep -q '^true false ' || [ $n -ge 50 ]; do sleep 0.2; n=$((n + 1)); done
first=$(look); sleep 1; second=$(look)
case "$first" in "true false "*) ;; *) first=none ;; esac
if [ "$first" != "$second" ]; then
  echo "ERROR: container" {name} "exited: $(docker logs --tail 3 {name} 2>&1 | tr '\\n' ' ')"; exit 1
fi
echo "@@token"; echo "$token"
""", name=spec.name))
    if must_remember(ctx):
        script.append(remember_command(home, owner, ctx.options.image))
    result = ctx.remote.run(LINES.join(script), timeout=PULL_COMMAND_TIMEOUT_S,
                            on_stdout=pull_output.feed if pull_output else None)
    if not result.ok:
        raise StepFailed(result.error_line())
    token = result.sections().get("token", "").strip()
    _add_services(ctx, spec, token)
    done = {"create": "created", "replace": "replaced", "start": "started"}[verb]
    pulled = f"; pulled {pull_output.summary}" if pull_output and pull_output.summary else ""
    return changed(f"{done} {spec.name} {why}{pulled}{note}")


def _add_services(ctx: HostContext, spec: ContainerSpec, token: str) -> None:
    """What the container serves, for the URLs and the tunnel printed at the end."""
    # The stack's tunnel_command forwards 8888 too (a JupyterLab started by hand).
    ctx.tunnel_extra.add(8888)
    for _, host_port, purpose in spec.ports:
        if purpose == "JupyterLab":
            ctx.add_service(purpose, f"http://localhost:{host_port}/lab?token={token}",
                            host_port)
        else:
            ctx.add_service(purpose, f"http://localhost:{host_port}/", host_port)


STEP_NAME = "container"
STEP = Step(STEP_NAME, run, facts=(LOGIN, CONTAINER, IMAGE_PRESENT, DOCKER_INFO, HOST_TOKEN,
                                    REMEMBERED_IMAGE, INSTALLED_PACKAGES))
