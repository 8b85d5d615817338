"""Relay TCP or Unix-socket connections: `python netns_relay.py LISTEN TARGET`.

LISTEN and TARGET are `tcp:HOST:PORT` or `unix:PATH`. A filesystem Unix socket is
reachable from every network namespace, so a pair of relays (one run with
`ip netns exec`) joins a port of the host's loopback and a port of a namespace's
loopback without giving the namespace any other interface. Runs until killed.
"""

from __future__ import annotations

import asyncio
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _open(spec: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(rest)
    host, _, port = rest.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def main(listen: str, target: str) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await _open(target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, target_writer), _pump(target_reader, writer))
        writer.close()
        target_writer.close()

    kind, _, rest = listen.partition(":")
    if kind == "unix":
        server = await asyncio.start_unix_server(relay, rest)
    else:
        host, _, port = rest.rpartition(":")
        server = await asyncio.start_server(relay, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
