"""A TCP relay that a test can cut: a backend outage that only its own cluster sees.

PostgreSQL, RabbitMQ and Redis are shared by every test worker (and by other
checkouts on the machine): the fault suite never stops them. Instead each
cluster reaches them through a `CuttableRelay`, whose `cut()` resets every relayed
connection and every new one until `restore()`, as a crashed or unreachable
server would look from the cluster. `hold_replies()` keeps relaying what the
clients send but holds back what the server answers (a confirm or a reply lost
on the way back) until the next `cut()` or `restore()`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CuttableRelay:
    """Relay `127.0.0.1:port` to `target`; `cut()` and `restore()` the link.

    Runs an asyncio loop in a daemon thread; every method is called from the
    test's thread.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cut_count = 0
        self._is_cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        #: Set while the server's bytes flow back to the clients.
        self._answering: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._thread.start()
        self._server = self._call(self._listen())
        return self.port

    def cut(self) -> None:
        """Reset every relayed connection; refuse (accept and reset) new ones."""
        self._call(self._cut())
        self.cut_count += 1

    def restore(self) -> None:
        """Relay new connections again (and the held answers, if any)."""
        self._is_cut = False
        self._loop.call_soon_threadsafe(self._answers_flow)

    def hold_replies(self) -> None:
        """Keep relaying to the server; hold every byte it sends back, on every
        connection, until `cut()` (which drops them) or `restore()`."""
        self._call(self._hold())

    def close(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _hold(self) -> None:
        self._answers().clear()

    def _answers(self) -> asyncio.Event:
        if self._answering is None:
            self._answering = asyncio.Event()
            self._answering.set()
        return self._answering

    def _answers_flow(self) -> None:
        self._answers().set()

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _cut(self) -> None:
        self._is_cut = True
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()
        self._answers().set()  # the held answers went with their connections

    async def _close(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._is_cut:
            _reset(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_w)
            return
        if self._is_cut:  # cut while connecting
            _reset(client_w)
            _reset(server_w)
            return
        pair = {client_w, server_w}
        self._writers |= pair
        try:
            await asyncio.gather(
                _pump(client_r, server_w), _pump(server_r, client_w, self._answers())
            )
        finally:
            self._writers -= pair
            for writer in pair:
                writer.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event | None = None
) -> None:
    try:
        while data := await reader.read(65536):
            if flowing is not None:
                await flowing.wait()
                if writer.transport.is_closing():  # cut while held
                    return
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dead peer's kernel answers."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


@contextmanager
def relays(targets: dict[str, tuple[str, int]]) -> Iterator[dict[str, CuttableRelay]]:
    """Start one relay per named target; close them all afterwards."""
    started: dict[str, CuttableRelay] = {}
    try:
        for name, (host, port) in targets.items():
            relay = CuttableRelay(host, port)
            relay.start()
            started[name] = relay
        yield started
    finally:
        for relay in started.values():
            relay.close()
