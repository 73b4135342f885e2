"""The tc backend: ``tc`` commands that put an :class:`~pynetns.impairment.Impairment` on an interface.

Stateless: every method returns argv tuples; nothing here runs a process. Run
them in order, each checked — every command succeeds whatever the device
carried before (see :meth:`Tc.impair`) — or as lines of one ``tc -batch -``
(:meth:`Tc.batch_command`, with :meth:`Tc.impair_args`). It is the Host's
``shaping`` role (``Host(shaping="tc")``, the default).

>>> from pynetns.impairment import Impairment
>>> for argv in Tc().impair("eth0", Impairment(delay="50ms", loss="1%", rate="1mbit"), netns="c1"):
...     print(" ".join(argv))
tc -n c1 qdisc replace dev eth0 root handle 7fff: pfifo
tc -n c1 qdisc replace dev eth0 root handle 1: netem delay 50ms loss 1%
tc -n c1 qdisc add dev eth0 parent 1:1 handle 2: tbf rate 1mbit burst 16384 latency 50ms

What goes on the device (a qdisc shapes what the device *sends*):

- delay, jitter, loss, duplicate, corrupt only: a root ``netem`` (handle ``1:``);
- rate only: a root ``tbf`` token bucket (handle ``1:``) — no netem needed, so a
  rate limit also works on kernels built without netem;
- both: the root ``netem`` with a ``tbf`` child (``2:`` under class ``1:1``): packets
  are delayed first and then paced at the rate, so propagation delay and
  queueing add up as on a real link (with tbf on top they would overlap).

The rate limiter is tbf rather than netem's own ``rate`` option so the same
limiter is used with or without netem. Its bucket (``burst``) holds 10 ms at
the rate but at least 16 KiB (a jumbo frame; TCP's 64 KiB GSO packets are
split by tbf), and its queue (``latency``) 50 ms at the rate beyond the burst;
the netem queue (``limit``, 1000 packets by default) grows to twice the
bandwidth-delay product when both are set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from ..impairment import Impairment, format_rate
from ..validation import interface_name, namespace_name
from .base import Argv, ShapingBackend

__all__ = ["CHILD_HANDLE", "PLACEHOLDER_HANDLE", "ROOT_HANDLE", "Tc"]

#: the handle of the root qdisc pynetns installs (netem, or tbf for a rate alone)
ROOT_HANDLE = "1:"
#: the handle of the tbf under netem's class ``1:1`` when both are needed
CHILD_HANDLE = "2:"
#: the handle of the plain pfifo that stands in for a moment while the tree is rebuilt
#: (below 8000:, where the kernel's automatic handles start, so never taken by chance)
PLACEHOLDER_HANDLE = "7fff:"

#: the tbf bucket: this many seconds at the rate, but at least MIN_BURST bytes
BURST_TIME = 0.01
MIN_BURST = 16384
#: how long a packet may wait in the tbf queue beyond the burst
TBF_LATENCY = "50ms"
#: netem's default queue, in packets
NETEM_LIMIT = 1000
_FULL_FRAME = 1514


class Tc(ShapingBackend):
    """Commands for iproute2's ``tc``: install, remove and show an impairment on one device."""

    name: ClassVar[str] = "tc"
    program: ClassVar[str] = "tc"

    def command(self, args: Sequence[str], *, netns: str | None = None) -> Argv:
        """``tc`` with ``args``, run in the named namespace ``netns`` (``tc -n``) or the caller's."""
        return ("tc", *self._where(netns), *args)

    def batch_command(self, *, netns: str | None = None) -> Argv:
        """``tc [-n NETNS] -batch -``: the commands' arguments, one a line, on stdin (stops at the first failure)."""
        return ("tc", *self._where(netns), "-batch", "-")

    @staticmethod
    def _where(netns: str | None) -> Argv:
        if netns is None:
            return ()
        return ("-n", namespace_name("netns", netns))

    def impair_args(self, device: str, impairment: Impairment) -> tuple[Argv, ...]:
        """The arguments of :meth:`impair`'s commands.

        The tree is rebuilt rather than edited: a placeholder ``pfifo`` replaces
        whatever root is there (dropping its children), then the new root
        replaces the placeholder and the child, if any, is added. A plain
        ``replace`` would edit a root of the same kind in place and keep a
        stale child, and fails outright when the kind differs under the same
        handle.
        """
        interface_name("device", device)
        if not impairment:
            return self.clear_args(device)
        commands = [self._placeholder(device)]
        rate = () if impairment.rate is None else self._tbf_args(impairment.rate)
        if impairment.needs_netem:
            netem = ("netem", *impairment.netem_args(), *self._netem_limit(impairment))
            commands.append(("qdisc", "replace", "dev", device, "root", "handle", ROOT_HANDLE, *netem))
            if rate:
                parent = f"{ROOT_HANDLE.rstrip(':')}:1"
                commands.append(("qdisc", "add", "dev", device, "parent", parent, "handle", CHILD_HANDLE, *rate))
        else:
            commands.append(("qdisc", "replace", "dev", device, "root", "handle", ROOT_HANDLE, *rate))
        return tuple(commands)

    def clear_args(self, device: str) -> tuple[Argv, ...]:
        """The arguments of :meth:`clear`'s commands.

        ``tc qdisc del … root`` alone fails on a device that has only its default
        qdisc ("Cannot delete qdisc with handle of zero"), so a placeholder is put
        there first.
        """
        interface_name("device", device)
        return (self._placeholder(device), ("qdisc", "del", "dev", device, "root"))

    def probe_args(self, device: str) -> tuple[Argv, Argv]:
        """A netem root on ``device`` (refused by a kernel without ``sch_netem``), and its removal."""
        interface_name("device", device)
        return (("qdisc", "replace", "dev", device, "root", "handle", "7ffe:", "netem"),
                ("qdisc", "del", "dev", device, "root"))  # fmt: skip

    def show_args(self, device: str) -> Argv:
        interface_name("device", device)
        return ("-j", "qdisc", "show", "dev", device)

    def impair(self, device: str, impairment: Impairment, *, netns: str | None = None) -> tuple[Argv, ...]:
        """The commands that make ``device`` carry exactly ``impairment`` (:meth:`clear` if it is empty)."""
        return tuple(self.command(args, netns=netns) for args in self.impair_args(device, impairment))

    def clear(self, device: str, *, netns: str | None = None) -> tuple[Argv, ...]:
        """The commands that give ``device`` back its default qdisc, whether or not it was impaired."""
        return tuple(self.command(args, netns=netns) for args in self.clear_args(device))

    def qdisc_delete(self, device: str, *, netns: str | None = None) -> Argv:
        """``tc qdisc del dev DEVICE root``: fails if the device has only its default qdisc."""
        return self.command(self.clear_args(device)[-1], netns=netns)

    def qdisc_show(self, device: str, *, netns: str | None = None) -> Argv:
        """``tc -j qdisc show dev DEVICE``; parse its output with :meth:`Impairment.from_tc_json`."""
        return self.command(self.show_args(device), netns=netns)

    @staticmethod
    def _placeholder(device: str) -> Argv:
        return ("qdisc", "replace", "dev", device, "root", "handle", PLACEHOLDER_HANDLE, "pfifo")

    @staticmethod
    def _tbf_args(rate: int) -> Argv:
        burst = max(MIN_BURST, math.ceil(rate / 8 * BURST_TIME))
        return ("tbf", "rate", format_rate(rate), "burst", str(burst), "latency", TBF_LATENCY)

    @staticmethod
    def _netem_limit(impairment: Impairment) -> Argv:
        if impairment.rate is None or impairment.delay is None:
            return ()
        in_flight = impairment.rate / 8 * (impairment.delay + (impairment.jitter or 0)) / _FULL_FRAME
        limit = math.ceil(2 * in_flight)
        return ("limit", str(limit)) if limit > NETEM_LIMIT else ()
