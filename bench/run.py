"""Bootstrap benchmark: `fab bootstrap` (parallel executor) against an Ansible playbook
doing the same steps, on real sshd + dockerd test hosts, with and without added latency.

    scripts/bench                    # full run; writes docs/bench.md
    scripts/bench --sizes 1,8 --reps 1 --no-write   # shorter, prints only

Each cold run gets fresh hosts (a host that was bootstrapped once is no longer
cold); the second run follows on the same hosts. Fabric and Ansible alternate
(A B A B) so drift on the box (page cache, CPU heat) hits both alike. After
every run the end state is checked on every host, the same check for both
tools (`end_state_problems`); a run whose end state is wrong fails the benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import hosts as bench_hosts
from bench.latency import DelayProxies, netem_available, netem_delay
from bench.markdown import replace_section, section_of
from tests.support import testhosts

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLAYBOOK = REPO / "bench/ansible/bootstrap.yml"
ANSIBLE_CFG = REPO / "bench/ansible/ansible.cfg"
IMAGE = testhosts.STANDIN_IMAGE
# Steps compared: everything `fab bootstrap` does on these hosts except the GPU
# check (no GPU here) and the Azure data-root move (not in the playbook).
FAB_FLAGS = ["bootstrap", "--image", IMAGE, "--skip-check"]
TOKEN_FILE = ".config/gpu-workbench/jupyter_token"
# docs/bench.md sections written by other benchmarks (bench/status.py).
OTHER_BENCH_SECTIONS = ("## scripts/status",)


@dataclass
class Link:
    """How the tools reach a set of hosts at a given added one-way delay."""

    one_way_ms: int
    method: str  # "none", "netem", "proxy"
    targets: dict[str, tuple[str, int]] = field(default_factory=dict)  # host name -> addr
    proxies: DelayProxies | None = None


@contextmanager
def link_to(hosts: list[testhosts.TestHost], one_way_ms: int, use_netem: bool
            ) -> Iterator[Link]:
    if one_way_ms == 0:
        yield Link(0, "none", {h.name: (h.ip, 22) for h in hosts})
        return
    if use_netem:
        for h in hosts:  # both directions: each end of the veth delays what it sends
            netem_delay(f"{h.name}o", one_way_ms)
            netem_delay("eth0", one_way_ms, netns=h.name)
        yield Link(one_way_ms, "netem", {h.name: (h.ip, 22) for h in hosts})
        return
    proxies = DelayProxies(one_way_ms / 1000)
    try:
        targets = {h.name: ("127.0.0.1", proxies.add((h.ip, 22))) for h in hosts}
        yield Link(one_way_ms, "proxy", targets, proxies)
    finally:
        proxies.close()


@dataclass
class RunResult:
    tool: str
    wall_s: float
    commands: int  # per host (max over hosts)
    changed: int  # per host (max over hosts)
    cpu_s: float = 0.0  # CPU the tool's process tree used on the controller


def _timed(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str],
                                                          float, float]:
    """Run a tool; its wall time and the CPU its waited-for process tree used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def _env(home: str) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": home, "LANG": "C.UTF-8"}


def run_fabric(hosts: list[testhosts.TestHost], link: Link, home: str,
               pool: int) -> RunResult:
    targets = ",".join(f"{h.user}@{link.targets[h.name][0]}:{link.targets[h.name][1]}"
                       for h in hosts)
    argv = [str(BIN / "fab"), "-H", targets, "-i", str(hosts[0].key_path), *FAB_FLAGS]
    env = _env(home) | {"FABRIC_WORKBENCH_PARALLEL": str(pool)}
    proc, wall, cpu = _timed(argv, env)
    if proc.returncode != 0:
        raise RuntimeError(f"fab failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    recap = re.findall(r"changed=(\d+)\s.*?(\d+) ssh commands", proc.stdout)
    if len(recap) != len(hosts):
        raise RuntimeError(f"recap shows {len(recap)} of {len(hosts)} hosts:\n{proc.stdout}")
    return RunResult("fabric", wall, max(int(c) for _, c in recap),
                     max(int(ch) for ch, _ in recap), cpu)


def write_inventory(hosts: list[testhosts.TestHost], link: Link, path: Path) -> None:
    lines = ["[workbench]"]
    for h in hosts:
        addr, port = link.targets[h.name]
        lines.append(f"{h.name} ansible_host={addr} ansible_port={port} "
                     f"ansible_user={h.user} ansible_ssh_private_key_file={h.key_path}")
    path.write_text("\n".join(lines) + "\n")


def run_ansible(hosts: list[testhosts.TestHost], link: Link, home: str) -> RunResult:
    inventory = Path(home) / "inventory.ini"
    write_inventory(hosts, link, inventory)
    # A fresh ControlPath directory per run: the second run must open its own
    # SSH connections, as fab's does, not reuse the first run's masters.
    control_dir = tempfile.mkdtemp(prefix="cp-", dir=home)
    env = _env(home) | {"ANSIBLE_CONFIG": str(ANSIBLE_CFG),
                        "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
                        "ANSIBLE_FORKS": str(max(len(hosts), 1)),
                        "ANSIBLE_LOCAL_TEMP": f"{home}/.ansible/tmp"}
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOK)]
    proc, wall, cpu = _timed(argv, env)
    _close_masters(control_dir)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-playbook failed ({proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    recap = re.findall(r"^\S+\s+: ok=(\d+)\s+changed=(\d+)", proc.stdout, re.M)
    if len(recap) != len(hosts):
        raise RuntimeError(f"recap shows {len(recap)} of {len(hosts)} hosts:\n{proc.stdout}")
    # With pipelining, every task that runs on a host is one SSH exec on the
    # shared connection (ok= counts them, changed ones included), plus one
    # per extra loop item (the 2-item directory loop).
    return RunResult("ansible", wall, max(int(ok) + 1 for ok, _ in recap),
                     max(int(ch) for _, ch in recap), cpu)


def _close_masters(control_dir: str) -> None:
    for sock in Path(control_dir).iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                       capture_output=True, timeout=10)


def _http(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def end_state_problems(host: testhosts.TestHost) -> list[str]:
    """What differs from a bootstrapped host: the same check for both tools."""
    problems = []
    runtimes = host.docker_info().get("Runtimes") or {}
    if "nvidia" not in runtimes:
        problems.append(f"docker info lists no nvidia runtime: {sorted(runtimes)}")
    bashrc = (host.read_file(f"/home/{host.user}/.bashrc") or b"").decode()
    if bashrc.splitlines().count("umask 0002") != 1:
        problems.append("~/.bashrc lacks exactly one 'umask 0002' line")
    if host.exec("docker compose version", check=False).returncode != 0:
        problems.append("docker compose version fails")
    raw = host.exec("docker inspect workbench", check=False)
    if raw.returncode != 0:
        return [*problems, "no container named workbench"]
    info = json.loads(raw.stdout)[0]
    if not info["State"]["Running"]:
        problems.append("container workbench is not running")
    if info["Config"]["Image"] != IMAGE:
        problems.append(f"container image is {info['Config']['Image']}")
    if info["HostConfig"]["RestartPolicy"]["Name"] != "unless-stopped":
        problems.append(f"restart policy {info['HostConfig']['RestartPolicy']['Name']}")
    if info["HostConfig"].get("Runtime") != "nvidia":
        problems.append(f"runtime {info['HostConfig'].get('Runtime')}")
    mounts = {m["Destination"]: m["Source"] for m in info.get("Mounts", [])}
    if mounts.get("/workspace") != f"/home/{host.user}/workspace":
        problems.append(f"/workspace is {mounts.get('/workspace')}")
    token = (host.read_file(f"/home/{host.user}/{TOKEN_FILE}") or b"").decode().strip()
    lab = f"http://{host.ip}:8890/cgi-bin/lab?token={token}"
    aiaa = f"http://{host.ip}:5000/"
    for url, what in ((lab, "JupyterLab on 8890 with the token"), (aiaa, "AIAA on 5000")):
        deadline = time.monotonic() + 10
        while (status := _http(url)) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        if status != 200:
            problems.append(f"{what} answers {status or 'nothing'}")
    return problems


def check_all(hosts: list[testhosts.TestHost], tool: str) -> None:
    bad = {h.name: p for h in hosts if (p := end_state_problems(h))}
    if bad:
        raise RuntimeError(f"{tool}: wrong end state: {bad}")


def cold_and_second(tool: str, n: int, one_way_ms: int, use_netem: bool, pool: int,
                    memory: dict[int, float] | None = None
                    ) -> tuple[RunResult, RunResult]:
    hosts = bench_hosts.start_hosts(n)
    try:
        with link_to(hosts, one_way_ms, use_netem) as link, \
                tempfile.TemporaryDirectory(prefix="wbb-home-") as home:
            runs = []
            for _ in ("cold", "second"):
                if tool == "fabric":
                    runs.append(run_fabric(hosts, link, home, pool))
                else:
                    runs.append(run_ansible(hosts, link, home))
                check_all(hosts, tool)
            if memory is not None:
                memory[n] = statistics.mean(bench_hosts.memory_kib(h) for h in hosts) / 1024
            return runs[0], runs[1]
    finally:
        bench_hosts.stop_hosts(hosts)


def machine() -> dict[str, str]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem_kib = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                       if ln.startswith("MemTotal")))
    versions = subprocess.run([str(BIN / "ansible-playbook"), "--version"],
                              capture_output=True, text=True).stdout.splitlines()[0]
    fab = subprocess.run([str(BIN / "fab"), "--version"], capture_output=True,
                         text=True).stdout.splitlines()
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cs %s"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                            "bootstrap", "fabfile.py", "components"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "code": (head or "?") + (" (plus uncommitted changes in bootstrap/)" if dirty else ""),
        "cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tools": f"{fab[0] if fab else 'fabric'}; {versions}; Python {platform.python_version()}",
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", default="0,100", help="added one-way delays, ms")
    parser.add_argument("--reps", type=int, default=2, help="A B pairs per delay (1 host)")
    parser.add_argument("--sizes", default="1,8,32", help="host counts for the parallel runs")
    parser.add_argument("--scale-delay", type=int, default=100,
                        help="one-way delay for the parallel runs, ms")
    parser.add_argument("--pool", type=int, default=32, help="fab's parallel pool size")
    parser.add_argument("--ansible-scale", action="store_true",
                        help="also run Ansible at every size (slower)")
    parser.add_argument("--out", default=str(REPO / "docs/bench.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    delays = [int(d) for d in args.delays.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]

    why = testhosts.missing_real_parts()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 2
    if shutil.which("ansible-playbook", path=str(BIN)) is None:
        print("bench: ansible-playbook missing (pip install ansible-core)", file=sys.stderr)
        return 2
    bench_hosts.cleanup_stale()
    use_netem = netem_available()
    method = ("tc netem on both ends of each host's veth" if use_netem else
              "delaying TCP proxy on loopback (tc netem: 'Specified qdisc kind is "
              "unknown' in this kernel)")
    print(f"latency: {method}", flush=True)

    pairs: dict[int, dict[str, list[tuple[RunResult, RunResult]]]] = {}
    for delay in delays:
        pairs[delay] = {"fabric": [], "ansible": []}
        for rep in range(args.reps):
            for tool in ("fabric", "ansible"):
                cold, second = cold_and_second(tool, 1, delay, use_netem, args.pool)
                pairs[delay][tool].append((cold, second))
                print(f"1 host +{delay} ms one way, {tool} #{rep + 1}: cold {cold.wall_s:.2f}s "
                      f"({cold.commands} cmds), second {second.wall_s:.2f}s "
                      f"({second.commands} cmds, changed {second.changed})", flush=True)

    scale: dict[tuple[str, int], tuple[RunResult, RunResult]] = {}
    memory: dict[int, float] = {}
    failed_runs: list[str] = []
    for n in sizes:
        for tool in ("fabric", "ansible") if args.ansible_scale else ("fabric",):
            mem = memory if tool == "fabric" else None
            try:
                cold, second = cold_and_second(tool, n, args.scale_delay, use_netem, args.pool,
                                               mem)
            except RuntimeError as exc:  # keep what was measured; say what failed
                failed_runs.append(f"{n} hosts, {tool}: {str(exc).splitlines()[0]}")
                print(f"{n} hosts, {tool}: FAILED: {exc}", flush=True)
                continue
            scale[(tool, n)] = (cold, second)
            print(f"{n} hosts +{args.scale_delay} ms, {tool}: cold {cold.wall_s:.2f}s, "
                  f"second {second.wall_s:.2f}s (controller CPU {cold.cpu_s:.1f}s / "
                  f"{second.cpu_s:.1f}s)"
                  + (f", {memory[n]:.0f} MiB per host" if n in memory and mem else ""),
                  flush=True)

    text = report(machine(), method, pairs, scale, memory, args)
    if failed_runs:
        text += "\nRuns that failed (not in the tables):\n\n" + "".join(
            f"- {f}\n" for f in failed_runs)
    print(text)
    if not args.no_write:
        out = Path(args.out)
        # Sections other benchmarks write into the same page stay as they were.
        for heading in OTHER_BENCH_SECTIONS:
            kept = section_of(out.read_text(), heading) if out.exists() else None
            if kept:
                text = replace_section(text, heading, kept)
        out.write_text(text)
        print(f"wrote {args.out}")
    return 0


def report(info: dict[str, str], method: str,
           pairs: dict[int, dict[str, list[tuple[RunResult, RunResult]]]],
           scale: dict[tuple[str, int], tuple[RunResult, RunResult]],
           memory: dict[int, float], args: argparse.Namespace) -> str:
    out = ["# Bootstrap benchmark: Fabric against Ansible", "",
           "Generated by `scripts/bench` (do not edit by hand; rerun it). "
           "Every number below is a wall time including the tool's own start "
           "(`fab` / `ansible-playbook` process), measured on real sshd + dockerd "
           "test hosts in network namespaces (tests/support/testhosts.py).", "",
           "```",
           "scripts/bench                  # as root: all of it, rewrites this page (~10 min)",
           "scripts/bench --sizes 1,8 --reps 1 --no-write   # shorter, prints only",
           "scripts/bench --help",
           "```", "",
           "Ansible settings (bench/ansible/ansible.cfg): ansible-core's ssh connection "
           "with pipelining on, ControlMaster/ControlPersist (one SSH connection per host, "
           "a fresh one per run, as fab opens its own each run), fact gathering off (the "
           "playbook needs no facts), key auth, become via passwordless sudo, forks = "
           "number of hosts, linear strategy; the playbook uses only ansible.builtin "
           "modules (community.docker would need the Docker SDK on every host).", "",
           f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, "
           f"kernel {info['kernel']}", f"- date: {info['date']}",
           f"- tools: {info['tools']}", f"- code measured: {info['code']}",
           f"- added latency: {method}",
           "- steps compared: wait/facts, umask line in ~/.bashrc, nvidia runtime merged "
           "into /etc/docker/daemon.json + dockerd reload, docker compose plugin (local apt "
           "repo), the workbench container (same image, ports 8890:8888 and 5000:5000, "
           "/workspace, restart unless-stopped, runtime nvidia, token env file). Not "
           "compared: the Azure data-root move and the GPU check (no GPU here). fab also "
           "runs its compat and packages steps, which have nothing to do here.",
           "- end state checked after every run, for both tools: nvidia in `docker info`, "
           "one umask line, `docker compose version`, the container running with its "
           "image, runtime, restart policy and mount, JupyterLab (with the token) and AIAA "
           "answering on the published ports.", "",
           "## One host, alternating Fabric and Ansible (A B A B)", "",
           f"Median of {args.reps} fresh host(s) per tool and link; commands are per host "
           "(fab: SSH commands from its recap; Ansible: task executions over its one "
           "pipelined connection).", "",
           "| one-way delay | run | Fabric | Ansible | Fabric/Ansible | Fabric cmds | "
           "Ansible cmds |", "|---|---|---|---|---|---|---|"]
    for delay, tools in pairs.items():
        for idx, label in ((0, "cold"), (1, "second")):
            f = [p[idx] for p in tools["fabric"]]
            a = [p[idx] for p in tools["ansible"]]
            fw, aw = median([r.wall_s for r in f]), median([r.wall_s for r in a])
            out.append(f"| {delay} ms | {label} | {fw:.2f} s | {aw:.2f} s | {fw / aw:.2f} | "
                       f"{f[0].commands} | {a[0].commands} |")
    if scale:
        out += ["", f"## Hosts in parallel (+{args.scale_delay} ms one way, fab pool "
                f"{args.pool})", "",
                "| hosts | tool | cold | second | cold vs 1 host | second vs 1 host | "
                "controller CPU cold / second |",
                "|---|---|---|---|---|---|---|"]
        for (tool, n), (cold, second) in scale.items():
            base = scale.get((tool, min(k for t, k in scale if t == tool)))
            rc = cold.wall_s / base[0].wall_s if base else 0
            rs = second.wall_s / base[1].wall_s if base else 0
            out.append(f"| {n} | {tool} | {cold.wall_s:.2f} s | {second.wall_s:.2f} s | "
                       f"{rc:.2f}x | {rs:.2f}x | {cold.cpu_s:.1f} s / {second.cpu_s:.1f} s |")
    if memory:
        out += ["", "Memory per bootstrapped host (PSS of sshd, dockerd, containerd, "
                "docker-proxy and the container): " +
                ", ".join(f"{v:.0f} MiB at {n} host(s)" for n, v in memory.items()) + "."]
    out += ["", "## Targets", ""]
    out += targets(pairs, scale)
    return "\n".join(out) + "\n"


def targets(pairs: dict[int, dict[str, list[tuple[RunResult, RunResult]]]],
            scale: dict[tuple[str, int], tuple[RunResult, RunResult]]) -> list[str]:
    lines = []
    far = max(pairs) if pairs else None
    if far is not None:
        second = median([p[1].wall_s for p in pairs[far]["fabric"]])
        cold_f = median([p[0].wall_s for p in pairs[far]["fabric"]])
        cold_a = median([p[0].wall_s for p in pairs[far]["ansible"]])
        lines.append(f"- second run at +{far} ms one way under 3 s: {second:.2f} s "
                     f"({'met' if second < 3 else 'missed'})")
        lines.append(f"- cold at most half of Ansible's at +{far} ms: {cold_f:.2f} s vs "
                     f"{cold_a:.2f} s = {cold_f / cold_a:.2f} "
                     f"({'met' if cold_f <= cold_a / 2 else 'missed'})")
    fab_sizes = sorted(n for t, n in scale if t == "fabric")
    if len(fab_sizes) > 1:
        lo, hi = fab_sizes[0], fab_sizes[-1]
        for idx, label in ((0, "cold"), (1, "second")):
            r = scale[("fabric", hi)][idx].wall_s / scale[("fabric", lo)][idx].wall_s
            lines.append(f"- {hi} hosts in parallel under 2x one host ({label}): {r:.2f}x "
                         f"({'met' if r < 2 else 'missed'})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
