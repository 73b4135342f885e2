"""The kvstore server: one asyncio TCP server, one dict.

Protocol, one request per line, one answer per line::

    SET key value   ->  OK
    GET key         ->  VALUE value   |   NOT_FOUND
    anything else   ->  ERROR <why>

``python -m kvstore.server --host 0.0.0.0 --port 7000`` prints
``listening on HOST:PORT`` once it accepts connections (``--port 0``: any free port).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

__all__ = ["Store", "main", "serve"]


class Store:
    """The data, and the answer to one request line."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def handle(self, line: str) -> str:
        command, _, rest = line.strip().partition(" ")
        if command == "SET":
            key, _, value = rest.partition(" ")
            if not key or not value:
                return "ERROR usage: SET key value"
            self.data[key] = value
            return "OK"
        if command == "GET":
            if not rest or " " in rest:
                return "ERROR usage: GET key"
            return f"VALUE {self.data[rest]}" if rest in self.data else "NOT_FOUND"
        return f"ERROR unknown command {command!r}"


async def serve(host: str, port: int) -> None:
    store = Store()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((store.handle(line.decode(errors="replace")) + "\n").encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, host, port)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kvstore.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=7000)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
