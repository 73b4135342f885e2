"""``python -m pynetns.impair.nfqueue``: bind, print ``ready``, work until SIGTERM/SIGINT (standard library only)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from ...errors import InvalidValue, NfqueueError
from .engine import Engine

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pynetns.impair.nfqueue",
        description="Delay and drop the packets iptables sends to NFQUEUE queues (a userspace netem). "
        "Prints 'ready' once the queues are bound; stops on SIGTERM or SIGINT.",
    )
    parser.add_argument("--queue", type=int, action="append", required=True, help="queue number (repeatable)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every packet")
    parser.add_argument("--jitter", type=float, default=0.0, help="seconds of random variation around --delay")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of packets dropped (0.1 is 10%%)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random generator")
    parser.add_argument("--distribution", choices=["uniform", "normal"], default="uniform", help="of the jitter")
    parser.add_argument("--in-order", action="store_true", help="never let a jittered packet overtake another")
    parser.add_argument("--queue-maxlen", type=int, default=10000, help="packets the kernel holds per queue")
    parser.add_argument("--fail-open", action="store_true", help="accept, undelayed, what a full queue cannot hold")
    parser.add_argument("--gso", action="store_true", help="queue GSO super-packets whole instead of segmenting")
    parser.add_argument("--rcvbuf", type=int, default=8 * 1024 * 1024, help="netlink socket receive buffer, bytes")
    parser.add_argument("--verbose", "-v", action="count", default=0, help="log more to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bind, print ``ready``, work until SIGTERM/SIGINT, print stats to stderr; the exit status."""
    args = _parser().parse_args(argv)
    try:
        engine = Engine(
            args.queue, args.delay, args.jitter, args.loss, args.seed, distribution=args.distribution,
            in_order=args.in_order, queue_maxlen=args.queue_maxlen, fail_open=args.fail_open,
            gso=args.gso, rcvbuf=args.rcvbuf,
        )  # fmt: skip
    except InvalidValue as error:
        print(f"pynetns.impair.nfqueue: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="pynetns.impair.nfqueue: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: engine.stop())
    try:
        with engine:
            with contextlib.suppress(BrokenPipeError):
                print("ready", flush=True)
            engine.run()
    except NfqueueError as error:
        print(f"pynetns.impair.nfqueue: error: {error}", file=sys.stderr)
        return 1
    print(f"pynetns.impair.nfqueue: stats {engine.stats}", file=sys.stderr)
    return 0
