"""The tc backend: ``tc`` commands that put an :class:`~pynetns.impairment.Impairment` on an interface.

Stateless: every method returns argv tuples; nothing here runs a process. Run
them in order, each checked — every command succeeds whatever the device
carried before (see :meth:`Tc.impair`).

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
from typing import ClassVar

from ..impairment import Impairment, format_rate
from ..validation import interface_name, namespace_name
from .base import Argv

__all__ = ["Tc", "ROOT_HANDLE", "CHILD_HANDLE", "PLACEHOLDER_HANDLE"]

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


class Tc:
    """Commands for iproute2's ``tc``: install, remove and show an impairment on one device."""

    name: ClassVar[str] = "tc"
    program: ClassVar[str] = "tc"

    def command(self, args: Argv, *, netns: str | None = None) -> Argv:
        """``tc`` with ``args``, run in the named namespace ``netns`` (``tc -n``) or the caller's."""
        if netns is not None:
            namespace_name("netns", netns)
        return ("tc", *(("-n", netns) if netns is not None else ()), *args)

    def impair(self, device: str, impairment: Impairment, *, netns: str | None = None) -> tuple[Argv, ...]:
        """The commands that make ``device`` carry exactly ``impairment`` (:meth:`clear` if it is empty).

        The tree is rebuilt rather than edited: a placeholder ``pfifo`` replaces
        whatever root is there (dropping its children), then the new root
        replaces the placeholder and the child, if any, is added. A plain
        ``replace`` would edit a root of the same kind in place and keep a
        stale child, and fails outright when the kind differs under the same
        handle.
        """
        interface_name("device", device)
        if not impairment:
            return self.clear(device, netns=netns)
        commands = [self._placeholder(device, netns)]
        rate = () if impairment.rate is None else self._tbf_args(impairment.rate)
        if impairment.needs_netem:
            netem = ("netem", *impairment.netem_args(), *self._netem_limit(impairment))
            commands.append(
                self.command(("qdisc", "replace", "dev", device, "root", "handle", ROOT_HANDLE, *netem), netns=netns)
            )
            if rate:
                parent = f"{ROOT_HANDLE.rstrip(':')}:1"
                commands.append(
                    self.command(
                        ("qdisc", "add", "dev", device, "parent", parent, "handle", CHILD_HANDLE, *rate), netns=netns
                    )
                )
        else:
            commands.append(
                self.command(("qdisc", "replace", "dev", device, "root", "handle", ROOT_HANDLE, *rate), netns=netns)
            )
        return tuple(commands)

    def clear(self, device: str, *, netns: str | None = None) -> tuple[Argv, ...]:
        """The commands that give ``device`` back its default qdisc, whether or not it was impaired.

        ``tc qdisc del … root`` alone fails on a device that has only its default
        qdisc ("Cannot delete qdisc with handle of zero"), so a placeholder is put
        there first.
        """
        interface_name("device", device)
        return (self._placeholder(device, netns), self.qdisc_delete(device, netns=netns))

    def qdisc_delete(self, device: str, *, netns: str | None = None) -> Argv:
        """``tc qdisc del dev DEVICE root``: fails if the device has only its default qdisc."""
        interface_name("device", device)
        return self.command(("qdisc", "del", "dev", device, "root"), netns=netns)

    def qdisc_show(self, device: str, *, netns: str | None = None) -> Argv:
        """``tc -j qdisc show dev DEVICE``; parse its output with :meth:`Impairment.from_tc_json`."""
        interface_name("device", device)
        return self.command(("-j", "qdisc", "show", "dev", device), netns=netns)

    def _placeholder(self, device: str, netns: str | None) -> Argv:
        return self.command(
            ("qdisc", "replace", "dev", device, "root", "handle", PLACEHOLDER_HANDLE, "pfifo"), netns=netns
        )

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
