"""What a `slurm.jupyter` job does on its node: a token, a free port, the server, its endpoint.

The token is made on the node, from /dev/urandom, into a file only the user
can read (node-local scratch, and a copy in the shared jobs dir for the login
node to read); Jupyter reads it from that file (JUPYTER_TOKEN_FILE), so it is
never on a command line, in the job's environment, in the batch script or in
the job's log (jupyter_server prints a token it did not generate as "...").

The server listens on the node's Slurm address (NodeAddr: what the login
node reaches it by), on a port the kernel picks free. When it has its port,
the job writes `ADDR PORT PATH NODE` to the endpoint file next to the token;
`slurm.jupyter` on the login node reads both (cluster.jupyter_session). The
job's EXIT trap removes them, so a token outlives its server nowhere.

Layout, shared (the jobs dir, on the home filesystem login and compute nodes
share): JOBS_DIR/jupyter/JOBID/{token,endpoint}, the directory 0700, the
files 0600. Node-local: SCRATCH/jupyter/{token,port,runtime/}.
"""

from __future__ import annotations

from bootstrap.shell import Sh, sh, words
from cluster.job import join_path

# Runs in the container (or the venv) with the Python that has Jupyter:
#   python3 -c LAUNCHER SCRATCH ADDR ROOT
# Binds a port the kernel says is free on ADDR, records it, then becomes the
# server on that port (port_retries=0: it serves there or fails, never elsewhere).
# JupyterLab when installed, else the plain jupyter_server. Its runtime dir holds
# files with the token, one of them (jpserver-PID-open.html) of mode 0644: it is
# under SCRATCH/jupyter, 0700, where no one else can reach it.
LAUNCHER = """\
import importlib.util, os, socket, sys
scratch, addr, root = sys.argv[1:4]
here = os.path.join(scratch, "jupyter")
family, kind, _, _, where = socket.getaddrinfo(addr, 0, type=socket.SOCK_STREAM)[0]
with socket.socket(family, kind) as probe:
    probe.bind(where)
    port = probe.getsockname()[1]
lab = importlib.util.find_spec("jupyterlab") is not None
app, path = ("jupyterlab", "/lab") if lab else ("jupyter_server", "/")
with open(os.path.join(here, ".port"), "w") as f:
    f.write(f"{port} {path}\\n")
os.rename(os.path.join(here, ".port"), os.path.join(here, "port"))
os.environ["JUPYTER_TOKEN_FILE"] = os.path.join(here, "token")
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(here, "runtime")
argv = [sys.executable, "-m", app, "--no-browser", f"--ip={addr}", f"--port={port}",
        "--ServerApp.port_retries=0"]
if root:
    argv.append(f"--ServerApp.root_dir={root}")
os.execv(sys.executable, argv)
"""


def state_root(jobs_dir: str) -> str:
    """Where each Jupyter job keeps its token and endpoint, one directory per job id."""
    return join_path(jobs_dir, "jupyter")


def state_dir(jobs_dir: str, job_id: str) -> str:
    return join_path(state_root(jobs_dir), job_id)


def launcher_argv(scratch: Sh, root: Sh | None) -> list[Sh]:
    """The command the job runs where Jupyter is: scratch and root as the run sees them."""
    return [words(["python3", "-c", LAUNCHER]), scratch, Sh('"$wb_addr"'),
            root if root is not None else sh("{none}", none="")]


def serve(run_line: Sh, root: Sh) -> list[Sh]:
    """Batch script lines: token and address, the run in the background, the endpoint
    once the server has its port, then wait for it (its exit is the job's)."""
    return [
        Sh("# The token: made here, readable by this user only, never on a command line."),
        sh('state={root}/"$SLURM_JOB_ID"', root=root),
        Sh('mkdir -p -- "$state" "$scratch"/jupyter'),
        Sh('wb_remove+=("$state")'),
        Sh('chmod 700 -- "$state" "$scratch"/jupyter'),
        Sh("("),
        Sh("  umask 077"),
        Sh("  od -An -N32 -tx1 /dev/urandom | tr -d ' \\n' >\"$scratch\"/jupyter/token"),
        Sh('  cp -- "$scratch"/jupyter/token "$state"/.token'),
        Sh('  mv -- "$state"/.token "$state"/token'),
        Sh(")"),
        Sh("# The address the login node reaches this node by: Slurm's NodeAddr."),
        Sh('wb_addr=$(scontrol show node -o "${SLURMD_NODENAME:-$(hostname)}" 2>/dev/null'
           " | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p')"),
        Sh('[ -n "$wb_addr" ] || wb_addr=$(hostname)'),
        Sh(""),
        run_line + Sh(" &"),
        Sh("wb_server=$!"),
        Sh('while kill -0 "$wb_server" 2>/dev/null && [ ! -s "$scratch"/jupyter/port ]; do'),
        Sh("  sleep 1"),
        Sh("done"),
        Sh('if [ -s "$scratch"/jupyter/port ]; then'),
        Sh('  read -r wb_port wb_path <"$scratch"/jupyter/port'),
        Sh('  ( umask 077; printf "%s %s %s %s\\n" "$wb_addr" "$wb_port" "$wb_path"'
           ' "${SLURMD_NODENAME:-$(hostname)}" >"$state"/.endpoint )'),
        Sh('  mv -- "$state"/.endpoint "$state"/endpoint'),
        Sh('  echo "gpu-workbench: Jupyter starting on $wb_addr:$wb_port"'
           ' "(token in $state/token, mode 600)" >&2'),
        Sh("fi"),
        Sh('wait "$wb_server"'),
    ]
