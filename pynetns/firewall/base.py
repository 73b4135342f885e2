"""What every firewall object declares, and the names its rules' comments carry.

>>> owner_of("pynetns:ab12 portmap/tcp/any/8080-8080"), owner_of("someone else's rule")
(('pynetns:ab12', 'portmap/tcp/any/8080-8080'), None)
"""

from __future__ import annotations

import re

from ..backends.base import Family, FirewallRule, FirewallState, ListedRule
from ..errors import InvalidValue
from ..host import Host
from ..namespace import Namespace
from ..placement import Placed
from .site import HostPath, Site

__all__ = ["FORWARDING", "Declared", "check_tag", "owner_of"]

#: the sysctl that turns on forwarding, per IP version
FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
_TAG = re.compile(r"pynetns:[A-Za-z0-9_.-]{1,40}")


def check_tag(tag: str) -> str:
    """An owner tag as firewall comments carry it: ``pynetns:`` and 1-40 of ``[A-Za-z0-9_.-]``."""
    if not _TAG.fullmatch(tag):
        raise InvalidValue("tag", tag, "a firewall tag must be 'pynetns:' and 1-40 of [A-Za-z0-9_.-]")
    return tag


def owner_of(comment: str) -> tuple[str, str] | None:
    """The (tag, object id) a rule's comment names, or ``None`` for a rule of no pynetns object."""
    words = comment.split()
    return (words[0], words[1]) if len(words) >= 2 and _TAG.fullmatch(words[0]) else None


class Declared(Placed):
    """What a firewall object declares: its rules, its id, its checks, the host path it needs.

    The transaction (:mod:`.transaction`) reads the firewall and writes these;
    :class:`~pynetns.firewall.objects.Firewalled` adds ``create()``, ``delete()`` and ``exists()``.
    """

    namespace: Namespace | None
    host: Host
    tag: str | None
    #: whether the object's traffic is forwarded (so ``ip_forward`` must be on)
    forwards = True

    # -- what each object declares -----------------------------------------

    @property
    def family(self) -> Family:
        raise NotImplementedError

    @property
    def object_id(self) -> str:
        """The identity written in every rule's comment (after the host's tag)."""
        raise NotImplementedError

    def _main_rules(self, path: HostPath) -> list[FirewallRule]:
        """The rules for the host's firewall backend (NAT, isolation)."""
        raise NotImplementedError

    def _forward_rules(self) -> list[FirewallRule]:
        """Accepts for an xtables FORWARD chain that may drop (see the module docstring)."""
        return []

    def _check(self, site: Site, state: FirewallState) -> None:
        """Refuse to create (raise) if something already holds what this object needs."""

    def _path(self, site: Site) -> HostPath:
        return HostPath()

    def _stale_ports(self) -> list[tuple[int, str | None]]:
        """The UDP host ports (and addresses) whose conntrack entries the transaction drops after a change."""
        return []

    # -- shared -------------------------------------------------------------

    @property
    def owner_tag(self) -> str:
        return check_tag(self._tag(self.tag))

    def _comment(self, extra: str = "") -> str:
        return f"{self.owner_tag} {self.object_id}{extra}"

    def _site(self) -> Site:
        return Site(self._in(self.namespace))

    def _mine(self, state: FirewallState) -> list[ListedRule]:
        me = (self.owner_tag, self.object_id)
        return [rule for rule in state.owned() if owner_of(rule.comment) == me]

    def rules(self) -> list[FirewallRule]:
        """The rules :meth:`create` adds (the backend's, then forwarding), without running anything."""
        return self._main_rules(HostPath()) + self._forward_rules()
