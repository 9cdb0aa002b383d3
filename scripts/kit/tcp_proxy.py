"""A TCP forwarder that can add latency and drop connections, for network fault tests.

This machine's kernel has no ``netem``, so latency between a "host" and a server is
injected here: every chunk read from one side is written to the other ``latency`` seconds
later (order kept, each direction on its own). :meth:`TcpProxy.drop_connections` closes
every forwarded connection at once, as a dead link or a restarted middlebox would, and
:meth:`TcpProxy.pause` holds every byte (new connections too) until :meth:`resume`. It runs
its own event loop in a daemon thread, so synchronous tests and campaigns can drive it::

    with TcpProxy(("127.0.0.1", redis_port), latency=0.05) as proxy:
        client = redis.Redis(port=proxy.port)      # every round trip now takes 100 ms more
        proxy.drop_connections()                   # the client sees a reset and reconnects
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024


class TcpProxy:
    """Forward ``listen`` to ``target`` with optional latency; drop or pause on demand.

    :param target: ``(host, port)`` to connect each accepted connection to.
    :param listen_host: the address to listen on (a namespace's veth address, or loopback).
    :param listen_port: the port to listen on; 0 picks a free one (see :attr:`port`).
    :param latency: seconds added to every chunk, each direction (a round trip: twice).
    """

    def __init__(self, target: tuple[str, int], *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, latency: float = 0.0) -> None:
        self.target = target
        self.listen_host = listen_host
        self.port: int = listen_port
        self.latency = latency
        self.connections: int = 0  #: accepted so far
        self.dropped: int = 0  #: closed by drop_connections()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"cascadeui-proxy-{target[1]}")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()

    def start(self) -> None:
        """Listen (in the proxy's thread) and return once connections are accepted."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        mine = {writer}
        self._writers.add(writer)
        try:
            await self._open.wait()
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            mine.add(up_writer)
            self._writers.add(up_writer)
            self.connections += 1
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass  # the target refused, or the proxy closes: the client sees the reset
        finally:
            for w in mine:
                self._writers.discard(w)
                if w.transport is not None:
                    w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk delivered ``latency`` after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._open.wait()
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(_CHUNK)
                await queue.put((loop.time() + self.latency, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            writer.close()

    def drop_connections(self) -> int:
        """Close every forwarded connection now (both sides); how many were open."""
        async def drop() -> int:
            writers = list(self._writers)
            for w in writers:
                transport = w.transport
                if transport is not None:
                    transport.abort()  # a reset, not a polite close
            return len(writers) // 2

        count = asyncio.run_coroutine_threadsafe(drop(), self._loop).result(10)
        self.dropped += count
        return count

    def pause(self) -> None:
        """Hold every byte and every new connection until :meth:`resume` (a black hole)."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        """Stop listening, drop every connection, stop the thread; idempotent."""
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                if w.transport is not None:
                    w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()
            await asyncio.sleep(0.01)  # let the aborted transports finish closing

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
