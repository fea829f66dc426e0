"""Run a task's hosts at the same time: `fab -H a,b,c bootstrap`.

Plain Fabric 3 calls a task once per -H host, one host after the other. Far
from the cloud region a host's bootstrap is mostly waiting on round trips, so
hosts are better run side by side. This Executor (picked by `fabric.yaml` at
the project root: `tasks.executor_class`) runs the per-host calls of one task
in a bounded pool of threads, then the task's post-tasks (the recap) once,
after every host has finished.

Pool size: `workbench.parallel` in fabric.yaml (default 8), or the environment
variable FABRIC_WORKBENCH_PARALLEL=N (Invoke's config loading); 1 gives the
old one-after-the-other behaviour.

What makes it safe to run hosts in threads:
- `bootstrap.runner.bootstrap_host` keeps a host's state in its own objects;
  each call gets its own Connection.
- The run log (bootstrap.tasks.RunLog) is created here, before any thread
  starts, so every call appends to the same log (a check-then-create inside
  the threads could lose a host's report).
- Invoke's config is loaded for the task once, in the main thread; threads
  only read it.
- Output is written a whole line at a time under a lock, so the lines of
  different hosts interleave but never mix (each line starts with its host).
- A host whose task raises does not stop the others: the error is printed as
  `HOST: error: ...`, the recap still runs, and the run exits non-zero.
"""

from __future__ import annotations

import io
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from fabric.executor import Executor
from fabric.tasks import ConnectionCall
from invoke import Call
from invoke.exceptions import Exit

DEFAULT_POOL = 8
CONFIG_SECTION = "workbench"
CONFIG_KEY = "parallel"


class LineAtomicStream(io.TextIOBase):
    """A stream that writes whole lines only, one thread at a time.

    print() writes the text and the newline in two calls; two threads printing
    at once could otherwise yield "line-a line-b\\n\\n". Each thread's partial
    line waits in a thread-local buffer until its newline arrives.
    """

    def __init__(self, target: TextIO, lock: threading.Lock) -> None:
        super().__init__()
        self._target = target
        self._lock = lock
        self._local = threading.local()

    def _buffer(self) -> list[str]:
        buf: list[str] | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = []
            self._local.buf = buf
        return buf

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        buf = self._buffer()
        buf.append(text)
        if "\n" in text:
            joined = "".join(buf)
            head, _, tail = joined.rpartition("\n")
            buf.clear()
            if tail:
                buf.append(tail)
            with self._lock:
                self._target.write(head + "\n")
                self._target.flush()
        return len(text)

    def flush(self) -> None:
        # A flush without a newline (a prompt) goes out as it is.
        buf = self._buffer()
        with self._lock:
            if buf:
                self._target.write("".join(buf))
                buf.clear()
            self._target.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()


def pool_size(config: Any) -> int:
    """`workbench.parallel` from Invoke's config (fabric.yaml, FABRIC_WORKBENCH_PARALLEL)."""
    section = config.get(CONFIG_SECTION) or {}
    raw = section.get(CONFIG_KEY, DEFAULT_POOL) if hasattr(section, "get") else DEFAULT_POOL
    try:
        size = int(raw)
    except (TypeError, ValueError) as exc:
        raise Exit(f"{CONFIG_SECTION}.{CONFIG_KEY} (FABRIC_WORKBENCH_PARALLEL) must be a "
                   f"whole number, not {raw!r}", code=2) from exc
    if size < 1:
        raise Exit(f"{CONFIG_SECTION}.{CONFIG_KEY} (FABRIC_WORKBENCH_PARALLEL) must be at "
                   f"least 1, not {size}", code=2)
    return size


def run_bounded(jobs: list[Callable[[], None]], size: int) -> None:
    """Run jobs on at most `size` daemon threads; return when all have ended.

    Daemon threads, not concurrent.futures: on Ctrl-C the main thread leaves at
    once, as a sequential fab run would (the remote scripts ignore SIGHUP and
    finish their step on the host), instead of waiting for every host at exit.
    """
    work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    for job in jobs:
        work.put(job)

    def worker() -> None:
        while True:
            try:
                job = work.get_nowait()
            except queue.Empty:
                return
            job()

    threads = [threading.Thread(target=worker, daemon=True, name=f"fab-host-{i}")
               for i in range(min(size, len(jobs)))]
    for t in threads:
        t.start()
    for t in threads:
        # join with a timeout so KeyboardInterrupt reaches the main thread.
        while t.is_alive():
            t.join(0.2)


def _host_label(call: ConnectionCall) -> str:
    kwargs = call.init_kwargs or {}
    return str(kwargs.get("host", "?"))


def _ensure_run_log(config: Any) -> None:
    """Create the bootstrap's run log before threads start (see module doc)."""
    try:
        from bootstrap.tasks import RUN_LOG_KEY, RunLog
    except ImportError:  # a fabfile without the bootstrap tasks
        return
    if not isinstance(config.get(RUN_LOG_KEY), RunLog):
        config[RUN_LOG_KEY] = RunLog()


class ParallelExecutor(Executor):
    """Fabric's Executor, with the hosts of each task run in a bounded thread pool."""

    def execute(self, *tasks: Any) -> dict[Any, Any]:
        calls = self.normalize(tasks)
        direct = list(calls)
        expanded = self.expand_calls(calls)
        try:
            dedupe = self.config.tasks.dedupe
        except AttributeError:
            dedupe = True
        calls = self.dedupe(expanded) if dedupe else expanded
        self.config.load_shell_env()
        size = pool_size(self.config)
        results: dict[Any, Any] = {}
        failures: list[str] = []
        i = 0
        while i < len(calls):
            group = [calls[i]]
            # The per-host calls of one task sit next to each other (expand_calls
            # puts pre-tasks before them and post-tasks after them).
            while (i + len(group) < len(calls)
                   and isinstance(calls[i], ConnectionCall)
                   and isinstance(calls[i + len(group)], ConnectionCall)
                   and calls[i + len(group)].task is calls[i].task):
                group.append(calls[i + len(group)])
            i += len(group)
            if len(group) == 1 or size == 1:
                for call in group:
                    try:
                        results[call.task] = self._run_call(call, direct)
                    except Exit:
                        raise
                    except Exception as exc:
                        if not isinstance(call, ConnectionCall) or len(group) == 1:
                            raise
                        # Sequential (size 1) keeps the parallel rule: the others go on.
                        failures.append(self._report_failure(call, exc))
            else:
                failures.extend(self._run_group(group, direct, results, size))
        if failures:
            raise Exit(f"error on {len(failures)} host(s): {', '.join(failures)}", code=2)
        return results

    def _prepare(self, call: Call) -> Any:
        """What invoke's Executor does before a call: config for its task, a context."""
        self.config.load_collection(self.collection.configuration(call.called_as))
        self.config.load_shell_env()
        return call.make_context(self.config)

    def _run_call(self, call: Call, direct: list[Call]) -> Any:
        context = self._prepare(call)
        result = call.task(context, *call.args, **call.kwargs)
        if call in direct and call.autoprint:
            print(result)
        return result

    def _report_failure(self, call: ConnectionCall, exc: BaseException) -> str:
        host = _host_label(call)
        message = exc.message if isinstance(exc, Exit) else f"{type(exc).__name__}: {exc}"
        print(f"{host}: error: {message}", file=sys.stderr, flush=True)
        return host

    def _run_group(self, group: list[Call], direct: list[Call], results: dict[Any, Any],
                   size: int) -> list[str]:
        # Config and contexts are made here, in the main thread; threads only run.
        _ensure_run_log(self.config)
        contexts = [self._prepare(call) for call in group]
        failures: list[str] = []
        lock = threading.Lock()
        out_lock = threading.Lock()
        saved = sys.stdout, sys.stderr
        sys.stdout = LineAtomicStream(saved[0], out_lock)
        sys.stderr = LineAtomicStream(saved[1], out_lock)

        def job_for(call: Call, context: Any) -> Callable[[], None]:
            def job() -> None:
                try:
                    result = call.task(context, *call.args, **call.kwargs)
                    with lock:
                        results[call.task] = result
                except BaseException as exc:  # one host's error never stops the rest
                    host = self._report_failure(call, exc)
                    with lock:
                        failures.append(host)
            return job

        try:
            run_bounded([job_for(c, ctx) for c, ctx in zip(group, contexts, strict=True)],
                        size)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved
        _order_reports(self.config, contexts)
        return failures


def _order_reports(config: Any, contexts: list[Any]) -> None:
    """Recap in -H order, not in the order the hosts happened to finish."""
    try:
        from bootstrap.tasks import RUN_LOG_KEY
    except ImportError:
        return
    log = config.get(RUN_LOG_KEY)
    reports = getattr(log, "reports", None)
    if not isinstance(reports, list):
        return
    order = {}
    for i, c in enumerate(contexts):
        port = "" if getattr(c, "port", 22) == 22 else f":{c.port}"
        order[f"{getattr(c, 'user', '')}@{getattr(c, 'host', '')}{port}"] = i
    reports.sort(key=lambda r: order.get(getattr(r, "host", ""), len(order)))
