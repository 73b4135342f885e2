"""The rootless scenario the kernel tests run as an unprivileged user (tests/kernel/test_rootless.py).

``python tests/support/rootless.py lab|kill|refused`` prints one JSON line per fact it checked; the test
(root) reads them. ``lab``: two networks, a published port reached from the sandbox's host (127.0.0.1 too),
an impairment and a partition, explain(), the journal, cleanup(). ``kill``: a lab with a server, then it
prints its sandbox's identity and waits to be killed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from pynetns import Host, Lab, cleanup, labs
from pynetns.polling import wait_until
from pynetns.servers import http_server_argv


def say(**facts: object) -> None:
    print(json.dumps(facts), flush=True)


def fetch(host: Host, url: str) -> str | None:
    """The first line of ``url`` fetched from the sandbox's own (host) namespace, or None."""
    result = host.run(["curl", "-g", "-s", "-m", "2", url], check=False)
    return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else None


def reachable(namespace: object, address: str) -> bool:
    return namespace.run(["ping", "-c1", "-W1", address], check=False).returncode == 0  # type: ignore[attr-defined]


def lab(host: Host, isolated: bool) -> None:
    with Lab("rl", host=host, isolated=isolated) as lab:
        front = lab.network("front", subnet="10.71.0.0/24")
        back = lab.network("back", subnet="10.72.0.0/24")
        web = lab.namespace("web", networks=[front, back])
        db = lab.namespace("db", networks=[back], aliases=["postgres"])
        lab.publish(web, 8080, 80)
        say(explain="netns add" in lab.explain())
        lab.apply()
        say(journal=[record.id for record in labs(host)] == [lab.id], journal_path=str(lab.journal_path))
        web.popen(http_server_argv("0.0.0.0", 80, body="rootless"))
        if isolated:
            via = lab.host_namespace  # type: ignore[attr-defined]
            wait_until(lambda: via.run(["curl", "-s", "-m", "2", "http://127.0.0.1:8080/"], check=False).stdout)
            say(published=via.run(["curl", "-s", "-m", "2", "http://127.0.0.1:8080/"]).stdout.splitlines()[0])
        else:
            answer = wait_until(lambda: fetch(host, "http://127.0.0.1:8080/"), what="the published port")
            say(published=answer, front=fetch(host, f"http://{front.gateway.ip}:8080/"))
        db_ip = str(next(e for e in lab.endpoints if e.namespace is db).ip.ip)
        say(before=reachable(web, db_ip))
        # names: the sandbox's own /etc/netns (an overlay of /etc), mounted over /etc by ip netns exec
        found = web.run(["getent", "hosts", "postgres"], check=False).stdout.split()  # type: ignore[attr-defined]
        say(names=found[:1] == [db_ip], by_name=reachable(web, "db"))
        lab.endpoints[0].impair(delay="50ms")
        started = time.monotonic()
        web.run(["ping", "-c1", "-W2", str(front.gateway.ip)])
        say(impaired=time.monotonic() - started >= 0.05)
        lab.endpoints[0].clear_impairment()
        lab.partition([web], [db])
        say(partitioned=not reachable(web, db_ip))
        lab.heal()
        say(healed=reachable(web, db_ip))
    left = Lab("rc", host=host)
    left.namespace("lone", networks=[left.network("net", subnet="10.74.0.0/24")])
    left.apply()
    removed = cleanup(host, all=True)
    say(cleaned=len(removed) > 0, labs=len(labs(host)), netns=host.run(["ip", "netns", "list"]).stdout.strip())


def kill(host: Host) -> None:
    lab = Lab("rk", host=host)
    net = lab.network("net", subnet="10.73.0.0/24")
    web = lab.namespace("web", networks=[net])
    lab.publish(web, 8080, 80)
    lab.apply()
    web.popen(http_server_argv("0.0.0.0", 80, body="doomed"))
    wait_until(lambda: fetch(host, "http://127.0.0.1:8080/"), what="the published port")
    assert host.sandbox is not None
    say(holder=host.sandbox.holder.pid, pid1=host.sandbox.pid, netns=host.netns_key, lab=lab.id, owner=os.getpid())
    time.sleep(60)  # the test kills this process


def main() -> None:
    mode = sys.argv[1]
    if mode == "kill":
        kill(Host.rootless())
        return
    with Host.auto() as host:
        say(rootless=host.sandbox is not None, key=host.netns_key)
        lab(host, isolated=mode == "isolated")


if __name__ == "__main__":
    main()
