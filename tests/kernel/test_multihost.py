"""Labs that span machines: networks joined by VXLAN across Hosts.

The "machines" are network namespaces joined by an underlay (a bridge in a namespace of its own playing the
switch, one veth into each machine, ``192.0.2.N/24``); each machine is a Host whose every command runs inside
its namespace (``nsenter --net=…``, like the ``playhost`` fixture) and whose journals live in a folder of its
own, so nothing here relies on the machines sharing a runtime directory. Nothing touches the machine running
the tests: the firewall rules and sysctls are each machine namespace's.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pynetns import Host, Lab, display
from pynetns.errors import InvalidValue, PynetnsError, WaitTimeout
from pynetns.lab import cleanup
from pynetns.polling import wait_until
from pynetns.runner import CompletedCommand, LocalRunner
from pynetns.runtime import LocalRuntime
from tests.support.lab import ping
from tests.support.web import fetch, serve

root = pytest.mark.root


class FolderRuntime(LocalRuntime):
    """A machine's runtime files in a folder of its own (a real remote machine has its own /run)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @property
    def folder(self) -> Path:
        return self._folder


class Machines:
    """``count`` namespaces playing machines, on one underlay switch; ``hosts[i]`` drives machine ``i``."""

    def __init__(self, names: Callable[[str], str], token: str, folder: Path, count: int) -> None:
        self.switch = names("sw")
        self.names = [names("m") for _ in range(count)]
        self.addresses = [f"192.0.2.{index + 1}" for index in range(count)]
        self.hosts: list[Host] = []
        self.folders = [folder / name for name in self.names]
        self.made: list[str] = []
        self._run("ip", "netns", "add", self.switch)
        self.made.append(self.switch)
        self._run("ip", "-n", self.switch, "link", "add", "ul", "type", "bridge")
        self._run("ip", "-n", self.switch, "link", "set", "ul", "up")
        for index, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            self._run("ip", "netns", "add", name)
            self.made.append(name)
            self._run("ip", "-n", name, "link", "set", "lo", "up")
            port = f"p{index}"
            self._run(
                "ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "ul0", "netns", name
            )
            self._run("ip", "-n", self.switch, "link", "set", port, "master", "ul", "up")
            self._run("ip", "-n", name, "addr", "add", f"{address}/24", "dev", "ul0")
            self._run("ip", "-n", name, "addr", "add", f"2001:db8::{index + 1}/64", "dev", "ul0", "nodad")
            self._run("ip", "-n", name, "link", "set", "ul0", "up")
            runner = LocalRunner(wrap=("nsenter", f"--net=/run/netns/{name}"))
            runtime = FolderRuntime(self.folders[index])
            self.hosts.append(Host(runner=runner, tag=f"pynetns:test-{token}-{index}", runtime=runtime))

    @staticmethod
    def _run(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def lab(self, name: str, ipv6: bool = False) -> Lab:
        """A lab on machine 0, told every machine's underlay address (``2001:db8::N`` with ``ipv6``)."""
        lab = Lab(name, host=self.hosts[0])
        for index, host in enumerate(self.hosts):
            underlay = f"2001:db8::{index + 1}" if ipv6 else self.addresses[index]
            lab.machine(host, underlay=underlay, name=f"m{index}")
        return lab

    def leftovers(self, lab_id: str) -> list[str]:
        """What of lab ``lab_id`` is on any machine: links, rules, journals; and its namespaces anywhere."""
        found = []
        for name, folder in zip(self.names, self.folders, strict=True):
            links = json.loads(self._run("ip", "-n", name, "-j", "link", "show"))
            found += [f"{name}: link {link['ifname']}" for link in links if f"pn{lab_id}" in link["ifname"]]
            rules = self._run("ip", "netns", "exec", name, "nft", "list", "ruleset")
            found += [f"{name}: rule {line.strip()}" for line in rules.splitlines() if f"pynetns:{lab_id}" in line]
            found += [f"{name}: journal {path.name}" for path in folder.glob(f"{lab_id}.json")]
        netns = json.loads(self._run("ip", "-j", "netns", "list") or "[]")
        found += [f"namespace {item['name']}" for item in netns if item["name"].startswith(f"pn{lab_id}")]
        return found

    def gone(self, lab_id: str) -> bool:
        """Whether nothing of lab ``lab_id`` is left, once the kernel finished removing its namespaces' veths."""
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: not self.leftovers(lab_id), timeout=5.0, what=f"lab {lab_id} to vanish")
        assert self.leftovers(lab_id) == []
        return True

    def close(self) -> None:
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def machines(names: Callable[[str], str], token: str, tmp_path: Path) -> Iterator[Callable[[int], Machines]]:
    """``machines(n)``: n namespaces playing machines on one underlay; removed after the test."""
    made: list[Machines] = []

    def make(count: int) -> Machines:
        made.append(Machines(names, token, tmp_path, count))
        return made[-1]

    yield make
    for group in made:
        group.close()


@root
def test_two_machines_ping_tcp_full_size_packets_and_a_port_published_on_one_for_a_member_on_the_other(machines):
    group = machines(2)
    a, b = group.hosts
    with group.lab("span") as lab:
        front = lab.network("front", subnet="10.60.0.0/24")
        web = lab.namespace("web", [front])
        db = lab.namespace("db", [front], host=b)
        lab.publish(db, 8080, 80)  # on machine a, for the member on b
        lab.publish(web, 8080, 80, host=b)  # on machine b, for the member on a
        lab.apply()
        assert web.host is a and db.host is b
        assert ping(web, lab.ip("db")) and ping(db, lab.ip("web"))
        # the MTU: 1500 on the underlay, 1450 on the overlay; a full-size packet that may not fragment passes
        endpoint = lab.endpoint(db)
        assert db.interface(endpoint.interface).mtu == 1450
        full = ["ping", "-c1", "-W2", "-M", "do", "-s", str(1450 - 28), str(lab.ip("db"))]
        assert web.run(full, check=False).returncode == 0
        too_big = ["ping", "-c1", "-W1", "-M", "do", "-s", str(1450 - 27), str(lab.ip("db"))]
        assert web.run(too_big, check=False).returncode != 0
        # TCP across the overlay, then through the port published on machine a (for the member on b)
        serve(db, "0.0.0.0", 80, "db on b")
        assert fetch(web, f"http://{lab.ip('db')}/") == "db on b"
        assert a.run(["curl", "-s", "-m", "3", "http://127.0.0.1:8080/"]).stdout.splitlines()[0] == "db on b"
        assert fetch(web, f"http://{lab.gateway(front)}:8080/") == "db on b"
        # a client outside the lab's subnet (machine b's own namespace, on the underlay) through a's address
        assert b.run(["curl", "-s", "-m", "3", "http://192.0.2.1:8080/"]).stdout.splitlines()[0] == "db on b"
        serve(web, "0.0.0.0", 80, "web on a")
        assert b.run(["curl", "-s", "-m", "3", "http://127.0.0.1:8080/"]).stdout.splitlines()[0] == "web on a"
        assert fetch(db, f"http://{lab.gateway(front, b)}:8080/") == "web on a"
        # each member goes out through its own machine's gateway
        assert str(lab.gateway(front, b)) in db.run(["ip", "route", "show", "default"]).stdout
        assert ping(db, lab.gateway(front, b)) and ping(db, lab.gateway(front))
        # the text view finds each member's host end on its own machine
        view = display.text_endpoint(lab.endpoint(db))
        assert "not created" not in view and view.count("UP") == 2, view
        assert "not created" not in display.text_lab(lab)
        lab_id = lab.id
        assert group.leftovers(lab_id)
    assert group.gone(lab_id)


@root
def test_three_machines_reach_each_other_and_two_spanning_networks_stay_apart(machines):
    group = machines(3)
    _, two, three = group.hosts
    with group.lab("three") as lab:
        front = lab.network("front", subnet="10.61.0.0/24")
        back = lab.network("back", subnet="10.62.0.0/24")
        x = lab.namespace("x", [front])
        y = lab.namespace("y", [front], host=two)
        z = lab.namespace("z", [front], host=three)
        p = lab.namespace("p", [back], host=two)
        q = lab.namespace("q", [back], host=three)
        lab.apply()
        assert lab.vni(front) != lab.vni(back)
        for source in (x, y, z):
            for target in ("x", "y", "z"):
                assert ping(source, lab.ip(target)), (source.name, target)
        assert ping(p, lab.ip("q")) and ping(q, lab.ip("p"))
        # isolation between the two networks, on every machine (the same one and across)
        for source, target in ((x, "p"), (x, "q"), (y, "p"), (z, "q"), (p, "x"), (q, "z")):
            assert not ping(source, lab.ip(target)), (source.name, target)
        lab_id = lab.id
    assert group.gone(lab_id)


@root
def test_a_partition_across_machines_and_its_healing(machines):
    group = machines(2)
    b = group.hosts[1]
    with group.lab("cut") as lab:
        front = lab.network("front", subnet="10.63.0.0/24")
        web = lab.namespace("web", [front])
        lab.namespace("api", [front])
        db = lab.namespace("db", [front], host=b)
        lab.apply()
        assert ping(web, lab.ip("db")) and ping(db, lab.ip("api"))
        lab.partition([web], [db])
        assert not ping(web, lab.ip("db")) and not ping(db, lab.ip("web"))
        assert ping(db, lab.ip("api")) and ping(web, lab.ip("api"))
        lab.heal()
        assert ping(web, lab.ip("db")) and ping(db, lab.ip("web"))
        # impairment of a member on the other machine: on its link there
        lab.impair("db", delay="40ms")
        endpoint = lab.endpoint(db)
        assert endpoint.impairment_mode in ("netem", "nfqueue")
        if endpoint.impairment_mode == "netem":
            assert "netem" in db.run(["tc", "qdisc", "show", "dev", endpoint.interface]).stdout
            assert "netem" in b.run(["tc", "qdisc", "show", "dev", endpoint.host_interface]).stdout
        reply = web.run(["ping", "-c1", "-W3", str(lab.ip("db"))]).stdout
        assert float(reply.split("time=")[1].split()[0]) >= 40  # the delay at least once on the way
        endpoint.clear_impairment()
        lab_id = lab.id
    assert group.gone(lab_id)


@root
def test_a_failure_on_one_machine_rolls_back_both_and_a_retry_applies(machines):
    group = machines(2)
    b = group.hosts[1]
    lab = group.lab("clash")
    try:
        front = lab.network("front", subnet="10.64.0.0/24")
        lab.namespace("web", [front])
        db = lab.namespace("db", [front], host=b)
        clash = lab.endpoint(db).host_interface  # a link of that name on machine b: its batch fails
        b.run(["ip", "link", "add", clash, "type", "bridge"])
        with pytest.raises(PynetnsError):
            lab.apply()
        only_clash = [f"{group.names[1]}: link {clash}"]
        wait_until(lambda: group.leftovers(lab.id) == only_clash, timeout=5.0, what="the rollback on both machines")
        b.run(["ip", "link", "delete", clash])
        lab.apply()
        assert ping(db, lab.ip("web"))
    finally:
        lab.destroy()
    assert group.gone(lab.id)


class FailingRunner(LocalRunner):
    """A machine's runner that refuses the batch holding ``needle``, as if the kernel refused it."""

    def __init__(self, needle: str, wrap: tuple[str, ...]) -> None:
        super().__init__(wrap=wrap)
        self.needle = needle

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        if input and self.needle in input:
            return CompletedCommand(argv, 2, "", "RTNETLINK answers: injected\nCommand failed -:1\n")
        return super()._execute(argv, input, timeout)


@root
def test_a_failure_on_one_machine_in_a_later_stage_rolls_back_what_every_machine_made(machines):
    group = machines(2)
    a, b = group.hosts
    # machine b refuses its forwarding entries: by then both machines made their namespaces, bridges and veths
    wrap = ("nsenter", f"--net=/run/netns/{group.names[1]}")
    b = group.hosts[1] = Host(runner=FailingRunner("fdb append", wrap), tag=b.tag, runtime=b.runtime)
    lab = group.lab("late")
    front = lab.network("front", subnet="10.69.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    lab.publish("web", 8080, 80)
    with a.capture() as on_a, pytest.raises(PynetnsError, match="injected"):
        lab.apply()
    made = "\n".join(str(call) for call in on_a)
    assert f"netns add pn{lab.id}-web" in made and f"link add {front.bridge}x" in made  # a had made its part
    assert f"netns delete pn{lab.id}-web" in made and "nft" in made  # and undid it, its firewall included
    assert group.gone(lab.id)
    lab.destroy()


@root
def test_cleanup_on_each_machine_removes_a_detached_lab(machines):
    group = machines(2)
    a, b = group.hosts
    lab = group.lab("gone")
    front = lab.network("front", subnet="10.65.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    lab.apply()
    lab.detach()
    # each machine's journal names its part of the lab, and the network namespace that plays that machine
    (on_a,), (on_b,) = (list(folder.glob("*.json")) for folder in group.folders)
    part_a, part_b = json.loads(on_a.read_text()), json.loads(on_b.read_text())
    assert part_a["namespaces"] == [f"pn{lab.id}-web"] and part_b["namespaces"] == [f"pn{lab.id}-db"]
    assert part_a["links"] == part_b["links"] == [front.bridge]
    assert part_a["vxlans"] == part_b["vxlans"] == [f"{front.bridge}x"]
    assert [net["gateway"] for net in part_a["networks"] + part_b["networks"]] == ["10.65.0.1/24", "10.65.0.4/24"]
    assert part_a["host_netns"] == a.netns_key != part_b["host_netns"] == b.netns_key
    assert part_a["vnis"] == part_b["vnis"] == {"front": lab.vni(front)}
    cleanup(a, all=True)
    assert any(group.names[1] in item for item in group.leftovers(lab.id))  # b's part stays: b's own journal
    cleanup(b, all=True)
    assert group.gone(lab.id)


@root
def test_a_vni_another_lab_uses_on_a_machine_is_refused_before_any_command(machines):
    group = machines(2)
    a, b = group.hosts
    with group.lab("first") as first:
        front = first.network("front", subnet="10.66.0.0/24", vni=5000)
        first.namespace("web", [front])
        first.namespace("db", [front], host=b)
        first.apply()
        second = group.lab("second")
        back = second.network("back", subnet="10.67.0.0/24", vni=5000)
        second.namespace("api", [back])
        second.namespace("cache", [back], host=b)
        with a.capture() as on_a, b.capture() as on_b, pytest.raises(InvalidValue, match="lab first uses it"):
            second.apply()
        assert [call for call in on_a + on_b if "add" in call.argv] == []
        assert group.gone(second.id)
        first_id = first.id
    assert group.gone(first_id)


@root
def test_an_ipv6_network_over_an_ipv6_underlay(machines):
    group = machines(2)
    b = group.hosts[1]
    with group.lab("six", ipv6=True) as lab:
        front = lab.network("front", subnet="fd00:68::/64")
        web = lab.namespace("web", [front])
        db = lab.namespace("db", [front], host=b)
        lab.apply()
        assert db.interface(lab.endpoint(db).interface).mtu == 1430  # 70 bytes of VXLAN over IPv6
        full = ["ping", "-6", "-c1", "-W2", "-M", "do", "-s", str(1430 - 48), str(lab.ip("db"))]
        wait_until(lambda: web.run(full, check=False).returncode == 0, timeout=5.0, what="a full-size ping over IPv6")
        assert ping(db, lab.ip("web")) and ping(db, lab.gateway(front, b))
        lab_id = lab.id
    assert group.gone(lab_id)


@root
def test_a_dual_stack_network_spanning_two_machines(machines):
    """Both families across the overlay: each member has both addresses and reaches the other on both. IPv4
    leaves through each machine's own gateway; IPv6 through the network's gateway on the lab's machine,
    reached over the overlay (only the lab's machine's bridge has an IPv6 address)."""
    group = machines(2)
    b = group.hosts[1]
    with group.lab("dual") as lab:
        front = lab.network("front", subnet="10.69.0.0/24", subnet6="fd00:69::/64")
        web = lab.namespace("web", [front])
        db = lab.namespace("db", [front], host=b)
        lab.apply()
        assert ping(web, lab.ip("db")) and ping(web, lab.ip("db", version=6))
        assert ping(db, lab.ip("web", version=6))
        assert db.run(["ip", "-4", "route", "show", "default"]).stdout.split()[2] == str(lab.gateway(front, b))
        gateway6 = db.run(["ip", "-6", "route", "show", "default"]).stdout.split()[2]
        assert gateway6 == str(front.gateways[1].ip) and ping(db, gateway6)  # the lab's machine answers
        lab_id = lab.id
    assert group.gone(lab_id)
