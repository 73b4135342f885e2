"""The kvstore client: one connection per request, a timeout per attempt, and retries.

>>> client = KVClient("10.0.0.2", 7000, timeout=1.0, retries=3)   # doctest: +SKIP
>>> client.set("colour", "green"); client.get("colour")           # doctest: +SKIP
'green'

``python -m kvstore.client --host H --port P set k v | get k | bench N`` prints
one JSON object; it exits 0, or 2 when the server did not answer in time, 3
when it could not be reached.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

__all__ = ["KVClient", "KVError", "KVTimeout", "KVUnavailable", "main"]


class KVError(Exception):
    """The server answered with an error, or could not be asked."""


class KVTimeout(KVError, TimeoutError):
    """No answer within the timeout, on every attempt."""


class KVUnavailable(KVError, ConnectionError):
    """The server could not be reached (refused, unreachable), on every attempt."""


class KVClient:
    """Talks to one kvstore server; every request is retried ``retries`` times after the first attempt."""

    def __init__(self, host: str, port: int, *, timeout: float = 2.0, retries: int = 2, backoff: float = 0.1) -> None:
        self.host, self.port = host, port
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.attempts = 0  # attempts made by the last request

    def set(self, key: str, value: str) -> None:
        answer = self.request(f"SET {key} {value}")
        if answer != "OK":
            raise KVError(answer)

    def get(self, key: str) -> str | None:
        answer = self.request(f"GET {key}")
        if answer == "NOT_FOUND":
            return None
        if not answer.startswith("VALUE "):
            raise KVError(answer)
        return answer[len("VALUE ") :]

    def request(self, line: str) -> str:
        """Send one request line and return the answer line, retrying timeouts and connection failures."""
        if "\n" in line:
            raise ValueError("a request is one line")
        error: OSError | None = None
        for attempt in range(1 + self.retries):
            self.attempts = attempt + 1
            if attempt:
                time.sleep(self.backoff * attempt)
            try:
                return self._once(line)
            except OSError as caught:  # TimeoutError included
                error = caught
                print(f"attempt {attempt + 1} failed: {type(caught).__name__}: {caught}", file=sys.stderr, flush=True)
        if isinstance(error, TimeoutError):
            raise KVTimeout(f"{self.host}:{self.port} did not answer within {self.timeout} s") from error
        raise KVUnavailable(f"{self.host}:{self.port} unreachable: {error}") from error

    def _once(self, line: str) -> str:
        deadline = time.monotonic() + self.timeout
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(line.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError("the server closed the connection")
                answer += chunk
        return answer.decode().rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvstore.client")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--retries", type=int, default=2)
    commands = parser.add_subparsers(dest="command", required=True)
    set_ = commands.add_parser("set")
    set_.add_argument("key")
    set_.add_argument("value")
    get = commands.add_parser("get")
    get.add_argument("key")
    bench = commands.add_parser("bench", help="time N requests (alternating SET and GET)")
    bench.add_argument("count", type=int)
    args = parser.parse_args(argv)

    client = KVClient(args.host, args.port, timeout=args.timeout, retries=args.retries)
    started = time.monotonic()
    try:
        if args.command == "set":
            client.set(args.key, args.value)
            result: dict[str, object] = {"ok": True}
        elif args.command == "get":
            result = {"value": client.get(args.key)}
        else:
            for n in range(args.count):
                if n % 2 == 0:
                    client.set(f"k{n}", f"v{n}")
                else:
                    assert client.get(f"k{n - 1}") == f"v{n - 1}"
            result = {"count": args.count}
    except KVTimeout as error:
        print(json.dumps({"error": "timeout", "detail": str(error), "attempts": client.attempts}))
        return 2
    except KVUnavailable as error:
        print(json.dumps({"error": "unavailable", "detail": str(error), "attempts": client.attempts}))
        return 3
    result.update(seconds=time.monotonic() - started, attempts=client.attempts)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
