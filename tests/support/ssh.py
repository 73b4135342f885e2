""" "Machines" for remote-Host tests, on one machine: each a network namespace with a mount namespace of its own
(a private ``/run``, so its ``/run/netns``, ``/run/pynetns`` and lab journals are its own, and a private
``/etc``, so are its labs' names files) and a PID namespace
(sshd is its init: killing it ends every process of the machine), running Debian's ``sshd`` on the address of
a veth underlay whose other end is in the test's namespace.

Abstract unix sockets (the host lock) are per network namespace, so the machine's lock is its own too; it
shares the test's filesystem otherwise (``/tmp``, the programs). Host keys, the client's key, ``known_hosts``
and ``sshd_config`` are generated per machine in a temporary folder; :meth:`Machine.close` ends the machine,
deletes its namespace (and so the underlay) and the folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pynetns import Host
from pynetns.polling import wait_until

SSHD = "/usr/sbin/sshd"

#: in the new mount namespace: a tmpfs on /run; an /etc of its own (an overlay on the real one, its changes on
#: that tmpfs: the machine's /etc/netns, where its labs' names files go, is its own, as another machine's is);
#: an empty root's ~/.bashrc (Debian's bash reads it for every ssh command, and this one's pyenv init costs
#: ~200 ms, where a server's costs nothing); then become sshd (its argv passed as "$@", never parsed)
_PRIVATE_RUN = (
    "mount -t tmpfs -o mode=755 machine /run && mkdir -p /run/sshd /run/etc/upper /run/etc/work && "
    "mount -t overlay machine-etc -o lowerdir=/etc,upperdir=/run/etc/upper,workdir=/run/etc/work /etc && "
    '{ [ ! -e /root/.bashrc ] || mount --bind /dev/null /root/.bashrc; } && exec "$@"'
)


def sshd_reason() -> str | None:
    """None if machines can be made here, else why not."""
    for program in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")):
        if program is None or not os.access(program, os.X_OK):
            return "needs openssh-server and openssh-client (apt-get install openssh-server)"
    return None


def _run(argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **options)


def _underlay() -> tuple[str, str]:
    """A /30 of 10.213.0.0/16 for one underlay: (the test's address, the machine's)."""
    base = secrets.randbelow(16384) * 4
    return f"10.213.{base // 256}.{base % 256 + 1}", f"10.213.{base // 256}.{base % 256 + 2}"


class Machine:
    """One "machine": :meth:`host` drives it over ssh; :meth:`run` runs a command in it, seeing what it sees."""

    def __init__(self, name: str, link: str) -> None:
        self.name, self.link = name, link
        self.folder = Path(tempfile.mkdtemp(prefix=f"pynetns-machine-{name}-"))
        self.sshd: subprocess.Popen[bytes] | None = None
        self.hosts: list[Host] = []
        self.local_address, self.address = _underlay()
        self.keyfile = self.folder / "id_ed25519"
        self.known_hosts = self.folder / "known_hosts"

    @classmethod
    def start(cls, name: str, link: str) -> Machine:
        machine = cls(name, link)
        try:
            machine._start()
        except BaseException:
            machine.close()
            raise
        return machine

    def _start(self) -> None:
        folder = self.folder
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "machine", "-f", str(folder / "host_key")])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(self.keyfile)])
        (folder / "authorized_keys").write_text(Path(f"{self.keyfile}.pub").read_text())
        self.known_hosts.write_text(f"{self.address} {(folder / 'host_key.pub').read_text()}")
        (folder / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}",
                    "Port 22",
                    f"HostKey {folder / 'host_key'}",
                    f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                    "PidFile none",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UseDNS no",
                    "MaxSessions 64",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.name])
        _run(["ip", "addr", "add", f"{self.local_address}/30", "dev", self.link])
        _run(["ip", "link", "set", self.link, "up"])
        _run(["ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", "eth0"])
        _run(["ip", "-n", self.name, "link", "set", "eth0", "up"])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        sshd = [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")]
        argv = ["ip", "netns", "exec", self.name, "unshare", "-m", "-p", "-f", "--kill-child", "--mount-proc"]
        argv += ["--propagation", "private", "--"]
        argv += ["sh", "-c", _PRIVATE_RUN, "machine", *sshd]
        with open(folder / "sshd.log", "wb") as log:
            self.sshd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until(self._listening, timeout=10, what=f"sshd of machine {self.name} on {self.address}")

    def _listening(self) -> bool:
        if self.sshd is not None and self.sshd.poll() is not None:  # unshare, which ended with sshd
            raise RuntimeError(f"sshd of {self.name} exited: {(self.folder / 'sshd.log').read_text()}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((self.address, 22)) == 0

    @property
    def destination(self) -> str:
        return f"root@{self.address}"

    @property
    def ssh_opts(self) -> list[str]:
        """What the Host's ssh needs for this machine: its known host key, checked; nothing of ~/.ssh/config."""
        return ["-F", "/dev/null", "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]

    def host(self, **options: Any) -> Host:
        """A Host driving this machine over ssh; closed with the machine."""
        host = Host.ssh(self.destination, keyfile=str(self.keyfile), ssh_opts=self.ssh_opts, **options)
        self.hosts.append(host)
        return host

    @property
    def init(self) -> int:
        """The pid (in the test's PID namespace) of the machine's sshd, its init."""
        assert self.sshd is not None
        children = Path(f"/proc/{self.sshd.pid}/task/{self.sshd.pid}/children").read_text().split()
        return int(children[0])

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """``argv`` run in the machine: its network, mount (its own ``/run``) and PID namespaces."""
        enter = ["nsenter", "-t", str(self.init), "-n", "-m", "-p", "--"]
        return subprocess.run([*enter, *argv], check=check, capture_output=True, text=True)

    def namespaces(self) -> list[str]:
        """The named network namespaces of the machine (``ip netns list`` there)."""
        return [line.split()[0] for line in self.run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]

    def runtime_files(self) -> list[str]:
        """Every file under the machine's ``/run/pynetns``."""
        found = self.run(["find", "/run/pynetns"], check=False)
        return found.stdout.split() if found.returncode == 0 else []

    def sessions(self) -> list[int]:
        """The sshd processes serving a connection (children of the listening sshd), as the test sees their pids."""
        children = Path(f"/proc/{self.init}/task/{self.init}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def close(self) -> None:
        """Close its Hosts, end every process of the machine, delete its namespace and folder."""
        for host in self.hosts:
            host.close()
        if self.sshd is not None:
            self.sshd.kill()  # unshare --kill-child kills its child, sshd, the machine's init: the rest go with it
            self.sshd.wait()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
