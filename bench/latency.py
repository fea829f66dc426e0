"""Added link latency for test hosts: netem where the kernel has it, else a TCP proxy.

`tc qdisc add dev VETH root netem delay 100ms` is the honest way, but netem
is not in every kernel (this sandbox's answers "Specified qdisc kind is
unknown"). The fallback is the approach of scripts/bench-bootstrap, as one
asyncio loop for any number of hosts: a proxy on loopback that holds every
chunk rtt/2 in each direction, and one rtt before the first byte (TCP's own
handshake, which a proxy would otherwise answer at once). Order is kept;
bandwidth is not limited. Both tools under test connect through the same
proxy, so both pay the same delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time


def netem_available() -> bool:
    """Try netem on a throwaway veth pair (needs root)."""
    names = ("wbbnq0", "wbbnq1")
    subprocess.run(["ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1]],
                   capture_output=True)
    try:
        proc = subprocess.run(["tc", "qdisc", "add", "dev", names[0], "root", "netem",
                               "delay", "1ms"], capture_output=True)
        return proc.returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", names[0]], capture_output=True)


def netem_delay(dev: str, one_way_ms: int, netns: str | None = None) -> None:
    """Delay every packet leaving `dev` (call for both ends of a veth)."""
    argv = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", f"{one_way_ms}ms"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    subprocess.run(argv, check=True, capture_output=True)


class DelayProxies:
    """Delaying TCP proxies on 127.0.0.1, one port per target, all on one event loop."""

    def __init__(self, one_way_s: float) -> None:
        self.one_way_s = one_way_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="delay-proxy")
        self._thread.start()
        self._servers: list[asyncio.Server] = []

    def add(self, target: tuple[str, int]) -> int:
        """Start a proxy to `target`; return its loopback port."""
        fut = asyncio.run_coroutine_threadsafe(self._serve(target), self.loop)
        server = fut.result(timeout=10)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, target: tuple[str, int]) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # TCP's handshake is one round trip before any byte moves.
            await asyncio.sleep(2 * self.one_way_s)
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except OSError:
                writer.close()
                return
            try:
                await asyncio.gather(self._pump(reader, up_writer),
                                     self._pump(up_reader, writer), return_exceptions=True)
            except asyncio.CancelledError:  # close() while a connection is still open
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def sender() -> None:
            while True:
                due, data = await queue.get()
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    with contextlib.suppress(OSError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return
                dst.write(data)
                with contextlib.suppress(OSError):
                    await dst.drain()

        task = asyncio.ensure_future(sender())
        try:
            while data := await src.read(65536):
                queue.put_nowait((time.monotonic() + self.one_way_s, data))
        except OSError:
            pass
        queue.put_nowait((time.monotonic() + self.one_way_s, b""))
        await task

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
