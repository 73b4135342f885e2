"""Names, like Docker's embedded DNS on user-defined networks: the members of a lab's network resolve each other
by namespace name and by alias, and nothing else resolves.

Done the way iproute2 offers: ``ip netns exec NAME`` mounts ``/etc/netns/NAME/hosts`` and
``/etc/netns/NAME/resolv.conf`` over ``/etc`` (in a mount namespace of the program's own), and every program
pynetns starts in a lab's namespace goes through it (:meth:`Namespace.run <pynetns.Namespace.run>`,
``popen``, ``pynetns exec``, the pytest fixtures). The hosts file lists the addresses of the namespaces on the
member's networks; the ``resolv.conf`` names no server, so no query reaches the host's resolvers (the resolver
asks the namespace's own loopback, where nothing answers); where the host's ``nsswitch.conf`` asks more than
files and DNS (``myhostname``, systemd's ``resolve``), the members get one asking only those.

The files live in a folder of the Host's runtime (``/run/pynetns/names/NAME``), which ``/etc/netns/NAME``
links to (``ip netns exec`` follows the link): one entry per namespace in ``/etc``, and after a reboot only
a link to nothing, which ``ip netns exec`` skips. They are written by :meth:`Lab.apply <pynetns.Lab.apply>`
before anything runs in the namespaces (a job of its first stage, undone with the rest if the apply fails),
rewritten in place when a later apply adds members (programs already running see the new list), and
removed by ``destroy()``, the undo and :func:`cleanup <pynetns.lab.cleanup.cleanup>` (the journal names
them): the ``NAME`` entries only where the lab made them, and ``/etc/netns`` itself when pynetns made it (a
marker file says so) and the last lab's entry is gone.

>>> from pynetns import Host, Lab
>>> lab = Lab("shop", host=Host(dry_run=True))
>>> front = lab.network("front", subnet="10.30.0.0/24")
>>> db = lab.namespace("db", networks=[front], aliases=["postgres"])
>>> web = lab.namespace("web", networks=[front])
>>> print(hosts_text(lab._state, web), end="")  # doctest: +ELLIPSIS
# the names on the networks of lab shop (...), written by pynetns
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
10.30.0.2	db postgres
10.30.0.3	web
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence

from ..errors import AlreadyExists, CommandError, InvalidValue, NotFound, PermissionDenied
from ..host import Host
from ..locking import host_lock
from ..namespace import Namespace
from ..plan import Plan, Step, attach_undo_errors, undo_errors
from ..runner import Call
from ..validation import hostname
from .compile import Job, PlanJob, write_journal
from .compile import stages as compile_stages
from .state import LabState

__all__ = [
    "FILES",
    "MARKER",
    "NamesJob",
    "claim_etc",
    "etc_lock",
    "hosts_text",
    "known_names",
    "present",
    "prune_stores",
    "release_etc",
    "remove",
    "remove_names",
    "stages",
    "valid_aliases",
    "wanted",
]

log = logging.getLogger(__name__)

#: the files a lab writes in ``/etc/netns/NAME/`` (cleanup removes them all)
FILES = ("hosts", "resolv.conf", "nsswitch.conf")
#: the file in ``/etc/netns`` saying pynetns made the folder (so the last lab's removal takes it away)
MARKER = ".pynetns"
MARKER_TEXT = "# made by pynetns: removed with the files of its last lab\n"
#: a lab has no DNS server: no ``nameserver`` line (the resolver asks the namespace's own loopback)
RESOLV_TEXT = "# written by pynetns: lab names come from /etc/hosts; no DNS server\noptions timeout:1 attempts:1\n"
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
#: ``/etc/netns`` is the machine's, whichever namespace plays a Host: one lock for it on the whole machine
LOCK_KEY = "etc-netns"


def stages(state: LabState) -> list[list[Job]]:
    """:func:`pynetns.lab.compile.stages`, with a stage writing the names files after the first (which makes the
    namespaces): before anything runs in them."""
    found = compile_stages(state)
    jobs: list[Job] = list(NamesJob.of(state))
    if jobs:
        found.insert(min(1, len(found)), jobs)
    return found


def hosts_text(state: LabState, namespace: Namespace) -> str:
    """The hosts file of ``namespace``: localhost, then every address of every member of its networks, with that
    member's name and aliases (the networks in the member's order, their members in declaration order)."""
    return _HostsTexts(state).of(namespace)


class _HostsTexts:
    """The hosts files of a lab's members, each network's lines made once: a member's text depends only on its
    networks, so a lab of N members on one network costs N lines, not N² (nor N³ with the name lookups)."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.declared = {namespace: name for name, namespace in state.namespaces.items()}
        self.lines: dict[str, list[str]] = {}
        self.texts: dict[tuple[str, ...], str] = {}
        self.networks: dict[Namespace, list[str]] = {}
        for endpoint in state.endpoints:
            self.networks.setdefault(endpoint.namespace, []).append(endpoint.network.name)
            name = self.declared.get(endpoint.namespace, endpoint.namespace.name)
            names = " ".join([name, *state.aliases.get(name, ())])
            self.lines.setdefault(endpoint.network.name, []).extend(
                f"{address.ip}\t{names}\n" for address in endpoint.addresses
            )

    def of(self, namespace: Namespace) -> str:
        networks = tuple(self.networks.get(namespace, ()))
        text = self.texts.get(networks)
        if text is None:
            # the same text for every member of the same networks: one ``tee`` writes all their files
            head = f"# the names on the networks of lab {self.state.name} ({self.state.id}), written by pynetns\n"
            text = self.texts[networks] = "".join(
                [head, LOCALHOST, *(line for net in networks for line in self.lines[net])]
            )
        return text


def nsswitch_text(text: str) -> str | None:
    """``text`` (an ``nsswitch.conf``) with its ``hosts`` line resolving by files and DNS only; None if it does
    already (or has no such line: glibc then asks DNS and files, and a lab's ``resolv.conf`` names no server).

    >>> print(nsswitch_text("passwd: files\\nhosts: files myhostname resolve [!UNAVAIL=return] dns\\n"), end="")
    passwd: files
    hosts: files dns
    >>> nsswitch_text("hosts:   files dns # the usual\\n") is None
    True
    """
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        key, colon, sources = line.partition(":")
        if colon and key.strip() == "hosts":
            named = [word for word in sources.split("#", 1)[0].split() if not word.startswith("[")]
            if set(named) <= {"files", "dns"}:
                return None
            lines[index] = "hosts: files dns\n"
            return "".join(lines)
    return None


def known_names(state: LabState) -> dict[str, str]:
    """Every name the lab's members are resolved by: name or alias → the declared name of its namespace."""
    found = {name: name for name in state.namespaces}
    for name, aliases in state.aliases.items():
        found.update(dict.fromkeys(aliases, name))
    return found


def valid_aliases(state: LabState, name: str, aliases: Sequence[str]) -> tuple[str, ...]:
    """``aliases`` of a new namespace ``name``, checked: names, each new to the lab (InvalidValue otherwise)."""
    if isinstance(aliases, str) or not isinstance(aliases, Sequence):
        raise InvalidValue("aliases", aliases, "must be a list of names, like ['postgres']")
    known = known_names(state)
    checked: list[str] = []
    for alias in aliases:
        hostname("aliases", alias)
        if alias == name:
            raise InvalidValue("aliases", alias, f"is the name of namespace {name} itself")
        if alias in checked:
            raise InvalidValue("aliases", alias, f"is given twice for namespace {name}")
        if alias in known:
            raise InvalidValue("aliases", alias, f"already names namespace {known[alias]} in this lab")
        checked.append(alias)
    return tuple(checked)


def wanted(state: LabState, host: Host) -> dict[str, str]:
    """The hosts file of every member living on ``host``, by the member's kernel name."""
    texts = _HostsTexts(state)
    return {namespace.name: texts.of(namespace) for namespace in state.namespaces.values() if namespace.host is host}


def _folder(host: Host, name: str) -> str:
    """``/etc/netns/NAME``: a link to the folder holding the namespace's names files (:func:`_store`)."""
    return f"{host.links.netns_etc}/{name}"


def _stores(host: Host) -> str:
    """The folder of the Host's runtime holding the namespaces' names files, as its commands see it."""
    runtime = host.runtime
    return runtime.command_path(runtime.folder.parent / "names")


def _store(host: Host, name: str) -> str:
    """Where the names files of namespace ``name`` are kept, which ``/etc/netns/NAME`` links to: one entry per
    namespace in ``/etc`` (an entry made in ``/etc`` can cost a millisecond, where ``/run`` costs next to
    nothing), and after a reboot nothing is left there but a link to nothing, which ``ip netns exec`` skips."""
    return f"{_stores(host)}/{name}"


def _files(host: Host, names: Iterable[str], file: str) -> list[str]:
    return [f"{_store(host, name)}/{file}" for name in names]


def _grouped(texts: dict[str, str]) -> dict[str, list[str]]:
    """The names sharing each text (members on the same networks share one hosts file's text: one ``tee``)."""
    groups: dict[str, list[str]] = {}
    for name, text in texts.items():
        groups.setdefault(text, []).append(name)
    return groups


class NamesJob(Job):
    """Write (or rewrite) the lab's names files: folders and ``resolv.conf`` for new members, hosts files where
    their text changes. Undone: new files and folders removed, rewritten ones given their old text back."""

    def __init__(self, state: LabState, texts: dict[str, str], host: Host | None = None) -> None:
        self.state, self.host = state, state.host if host is None else host
        self.texts = texts
        self.before = {name: state.names[name] for name in texts if name in state.names}
        self.fresh = [name for name in texts if name not in state.names]
        links = self.host.links
        plan = Plan()
        if self.fresh:
            stores = [_store(self.host, name) for name in self.fresh]
            plan.add(Step(links.make_dirs(stores, parents=True), undo=Step(links.remove_dirs(stores))))
            resolv = _files(self.host, self.fresh, "resolv.conf")
            plan.add(Step(links.write_files(resolv), undo=Step(links.remove_files(resolv)), input=RESOLV_TEXT))
        new = {name: texts[name] for name in self.fresh}
        for text, names in _grouped(new).items():
            files = _files(self.host, names, "hosts")
            plan.add(Step(links.write_files(files), undo=Step(links.remove_files(files)), input=text))
        if self.fresh:  # /etc/netns/NAME → its store, once the files are there
            made = [_folder(self.host, name) for name in self.fresh]
            plan.add(Step(links.link_into(stores, links.netns_etc), undo=Step(links.remove_files(made))))
        changed = {name: text for name, text in texts.items() if name in state.names and state.names[name] != text}
        for text, names in _grouped(changed).items():
            for old, same in _grouped({name: state.names[name] for name in names}).items():
                files = _files(self.host, same, "hosts")
                undo = Step(links.write_files(files), input=old)
                plan.add(Step(links.write_files(files), undo=undo, input=text))
        self.plan = plan
        self.skipped = False
        #: what failed while letting /etc/netns go after a failure (the lab's undo was then incomplete)
        self.unreleased: list[Exception] = []

    @classmethod
    def of(cls, state: LabState) -> list[NamesJob]:
        """The jobs writing what changed since the last apply: one per Host whose members' files change (their
        files are on that Host's machine)."""
        jobs: list[NamesJob] = []
        if not state.resolve_names:
            return jobs
        for host in state.hosts():
            texts = wanted(state, host)
            if any(state.names.get(name) != text for name, text in texts.items()):
                jobs.append(cls(state, texts, host))
        return jobs

    def calls(self) -> list[Call]:
        etc = self.host.links.netns_etc
        probe = [Call(self.host.links.make_dirs([etc], parents=True))] if self.fresh else []
        return probe + self.plan.calls()

    def run(self) -> None:
        links = self.host.links
        if self.fresh and self.host not in self.state.etc_netns and not self.host.dry_run:
            listing = self.host.run(links.list_dir(links.netns_etc), check=False)
            if listing.returncode != 0:  # missing: the journal says this lab may make it, before it does
                self.state.etc_netns.add(self.host)
                write_journal(self.state, [self.host])  # (the host lock: taken before the etc lock, as cleanup does)
        if self.fresh:
            self._add_nsswitch()
        try:
            self._write()
        except BaseException as error:
            attach_undo_errors(error, self.unreleased)
            if undo_errors(error):  # its undo may have left /etc/netns without its marker: destroy() and cleanup()
                self.state.etc_netns.add(self.host)  # remove it (if empty), told by the journal
                with contextlib.suppress(Exception):
                    write_journal(self.state, [self.host])
            raise
        if not self.skipped:
            self.state.names.update(self.texts)

    def _write(self) -> None:
        links = self.host.links
        with etc_lock(self.host):
            for attempt in range(3):
                if self.fresh:
                    try:
                        claim_etc(self.host, self.fresh)
                    except PermissionDenied as error:
                        # a rootless sandbox whose kernel cannot overlay /etc (before Linux 5.11), a read-only /etc
                        log.warning(
                            "lab %s: names do not resolve in its namespaces (%s cannot be written: %s)",
                            self.state.name,
                            links.netns_etc,
                            error,
                        )
                        self.skipped = True
                        return
                try:
                    PlanJob(self.host, self.plan).run()  # undoes itself if it fails
                except NotFound:
                    # /etc/netns went meanwhile (the last lab of a process the lock does not reach, in another
                    # network namespace, removed it): the plan made nothing; make it again
                    if attempt == 2 or not self.fresh:
                        self._release()
                        raise
                    continue
                except BaseException:
                    self._release()
                    raise
                break

    def _release(self) -> list[Exception]:
        """Let ``/etc/netns`` go if this lab's job leaves it with only the marker; if that failed half-way, the
        lab may have left it unmarked: its destroy and cleanup then remove it even so (when it is empty)."""
        failures = release_etc(self.host)
        if failures:
            self.state.etc_netns.add(self.host)
            self.unreleased += failures
        prune_stores(self.host)
        return failures

    def _add_nsswitch(self) -> None:
        """Where the host's ``nsswitch.conf`` resolves hosts by more than files and DNS (``myhostname``, systemd's
        ``resolve``, reached through a socket, not the network), the new members get a copy resolving by files
        and DNS only (``ip netns exec`` mounts it over ``/etc/nsswitch.conf`` too)."""
        links = self.host.links
        read = self.host.run(links.read_file(links.host_nsswitch), check=False)
        text = nsswitch_text(read.stdout) if read.returncode == 0 else None
        if text is not None:
            files = _files(self.host, self.fresh, "nsswitch.conf")
            step = Step(links.write_files(files), undo=Step(links.remove_files(files)), input=text)
            self.plan = Plan([*self.plan, step])

    def undo(self) -> list[Exception]:
        if self.skipped:
            return []
        with etc_lock(self.host):
            failures = self.plan.undo_plan().rollback(self.host.runner)
            for name in self.texts:  # its own members' only: another Host's job keeps its own
                if name in self.before:
                    self.state.names[name] = self.before[name]
                else:
                    self.state.names.pop(name, None)
            failures += self._release()
        return failures


def etc_lock(host: Host) -> contextlib.AbstractContextManager[None]:
    """The lock every process takes to make or remove ``/etc/netns`` and the folders in it."""
    return contextlib.nullcontext() if host.dry_run else host_lock(LOCK_KEY, remote=host.runtime.locker)


def claim_etc(host: Host, names: Sequence[str]) -> None:
    """Make ``/etc/netns`` (with the marker saying pynetns made it) if it is missing; refuse (AlreadyExists) if a
    folder of ``names`` is there already: it is not this lab's, so the lab neither writes in it nor removes it.

    A process the lock does not reach (another network namespace) may remove ``/etc/netns`` between the
    ``mkdir`` that found it and the listing: then it is made again."""
    links = host.links
    etc = links.netns_etc
    for attempt in range(3):
        try:
            host.run(links.make_dirs([etc]))
        except AlreadyExists:
            listing = host.run(links.list_dir(etc), check=attempt == 2)
            if listing.returncode != 0:
                continue  # gone meanwhile: make it again
            present = set(listing.stdout.split())
            taken = [name for name in names if name in present]
            if taken:
                raise AlreadyExists(
                    f"{', '.join(_folder(host, name) for name in taken)} exists already, not made by this lab: "
                    "remove it, or apply the lab again (a new lab has new names)"
                ) from None
        except CommandError as error:  # "Read-only file system" and the like: nothing can be written there
            if isinstance(error, PermissionDenied):
                raise
            raise PermissionDenied(str(error)) from error
        else:
            try:
                host.run(links.write_files([f"{etc}/{MARKER}"]), input=MARKER_TEXT)
            except BaseException as error:  # made here and not marked: it must not stay
                removal = host.run(links.remove_dir(etc), check=False)
                if removal.returncode != 0 and "No such file" not in removal.stderr:
                    failure = CommandError(removal.argv, removal.returncode, removal.stdout, removal.stderr)
                    attach_undo_errors(error, [failure])  # the caller's undo is incomplete: it stays unmarked
                raise
        return


def release_etc(host: Host, *, unmarked: bool = False) -> list[Exception]:
    """Remove ``/etc/netns`` if pynetns made it and nothing but its marker is left; return the failures.

    ``unmarked``: also when it is empty without the marker (the journal of a lab killed between making the
    folder and its marker, or whose undo failed half-way, says it may have made it); holding other labs'
    entries then, it gets the marker, so the last of them removes it. A lab of a process the lock does not
    reach (another network namespace) may put its folder in meanwhile: then ``rmdir`` finds the folder not
    empty and the marker is written back, so the last one out still removes it; so it is when ``rmdir``
    fails otherwise (that failure is returned).
    """
    links = host.links
    etc = links.netns_etc
    marker = f"{etc}/{MARKER}"
    with etc_lock(host):
        listing = host.run(links.list_dir(etc), check=False)
        entries = listing.stdout.split()
        if listing.returncode == 0 and unmarked and entries and MARKER not in entries:
            # it may be pynetns' and other labs' entries are in it now: marked, the last of them removes it
            try:
                host.run(links.write_files([marker]), input=MARKER_TEXT)
            except CommandError as error:
                return [error]
            return []
        if listing.returncode != 0 or entries not in ([MARKER], *([[]] if unmarked else [])):
            return []
        try:
            host.run(links.remove_files([marker]))
            # only a removal that succeeded lets the marker go: a folder came in meanwhile, or the removal
            # failed, and it is still pynetns' (a failure is returned, after the marker is back)
            removal = host.run(links.remove_dir(etc), check=False)
            if removal.returncode != 0 and "No such file" not in removal.stderr:
                host.run(links.write_files([marker]), input=MARKER_TEXT)
                if "not empty" not in removal.stderr:
                    return [CommandError(removal.argv, removal.returncode, removal.stdout, removal.stderr)]
        except CommandError as error:
            return [error]
    return []


def remove_names(host: Host, names: Sequence[str], *, unmarked: bool = False) -> list[Exception]:
    """Remove the names files of ``names`` (kernel names), their folders if empty then, and ``/etc/netns`` if it
    was pynetns' and is left with only its marker (``unmarked``: see :func:`release_etc`); carrying on past
    failures, returned."""
    if not names:
        return release_etc(host, unmarked=True) if unmarked else []
    links = host.links
    files = [path for file in FILES for path in _files(host, names, file)]
    stores = [_store(host, name) for name in names]
    made = [_folder(host, name) for name in names]
    plan = Plan([Step(links.remove_files(made)), Step(links.remove_files(files)), Step(links.remove_dirs(stores))])
    with etc_lock(host):
        failures = plan.rollback(host.runner)
        failures += release_etc(host, unmarked=unmarked)
    prune_stores(host)
    return failures


def present(host: Host) -> list[str]:
    """The namespaces that have names files on ``host``: a link in ``/etc/netns``, or a folder of files (a lab
    killed before it linked them); every entry of ``/etc/netns`` counts."""
    found: dict[str, None] = {}
    for folder in (host.links.netns_etc, _stores(host)):
        listing = host.run(host.links.list_dir(folder), check=False)
        found.update(dict.fromkeys(listing.stdout.split() if listing.returncode == 0 else []))
    return [name for name in found if name != MARKER]


def prune_stores(host: Host) -> None:
    """Remove the runtime's folder of names files if it is empty (another lab's files keep it)."""
    host.run(host.links.remove_dirs([_stores(host)]), check=False)


def remove(state: LabState) -> list[Exception]:
    """Remove the names files the lab wrote (``destroy()``); return the failures."""
    failures: list[Exception] = []
    for host in state.hosts():  # each Host's members' files are on its machine
        mine = [namespace.name for namespace in state.namespaces.values() if namespace.host is host]
        unmarked = host in state.etc_netns  # it may have made /etc/netns (or left it unmarked): empty, it goes
        failures += remove_names(host, [name for name in state.names if name in mine], unmarked=unmarked)
    if not failures:
        state.names.clear()
    return failures
