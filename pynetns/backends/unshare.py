"""The unshare backend: the commands of a rootless sandbox (util-linux ``unshare``, ``nsenter``, ``setpriv``).

>>> sandbox = Unshare()
>>> " ".join(sandbox.holder_command())
'unshare --user --map-root-user --net --mount --propagation private --pid --fork --kill-child -- cat'
>>> " ".join(sandbox.keeper_command()[-3:])
'-- sleep infinity'
>>> sandbox.enter_prefix(4242)
('nsenter', '--preserve-credentials', '-U', '-m', '-n', '-p', '-t', '4242', '--')
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Argv, SandboxBackend

__all__ = ["Unshare"]

#: the source name of the sandbox's tmpfs, so a mount table shows whose it is
TMPFS_SOURCE = "pynetns-sandbox"
#: the source name of the sandbox's overlay over /etc, and the folder (on its tmpfs) of that overlay's layers
ETC_SOURCE = "pynetns-etc"
ETC_LAYERS = "/run/pynetns-etc"


class Unshare(SandboxBackend):
    """``unshare -Urnm --pid --fork`` holds the sandbox; ``nsenter`` enters it.

    The holder is ``cat`` reading its owner's pipe: PID 1 of the sandbox's PID namespace. When the owner
    closes the pipe (or dies, which closes it), ``cat`` ends, and the kernel kills every process of the
    PID namespace; the user, mount and network namespaces (and the named namespaces mounted on the
    sandbox's tmpfs) go with their last process. ``--kill-child``: killing ``unshare`` ends it too.
    """

    name = "unshare"

    def holder_command(self) -> Argv:
        return (
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "cat",
        )

    def keeper_command(self) -> Argv:
        # its own session (no terminal's signals); PID 1 sleeps until killed, as PID 1 ignores other signals
        return ("setsid", *self.holder_command()[:-1], "sleep", "infinity")

    def enter_prefix(self, pid: int) -> Argv:
        # -p: a process started inside belongs to the sandbox's PID namespace, so it ends with the sandbox
        # (nsenter forks for it: a program's threads need their process in the PID namespace they start in)
        return ("nsenter", "--preserve-credentials", "-U", "-m", "-n", "-p", "-t", str(pid), "--")

    def spawn_prefix(self) -> Argv:
        # nsenter forks to enter the PID namespace and does not pass signals on: the program dies with it
        return ("setpriv", "--pdeathsig", "KILL", "--")

    def etc_commands(self, submounts: Sequence[str] = ()) -> list[Argv]:
        # /etc is the machine's (its owner unmapped here: not writable); an overlay whose upper layer, on the
        # sandbox's tmpfs, holds an empty netns/ shows the machine's /etc with a netns/ the sandbox owns
        # (unprivileged overlayfs: Linux 5.11 and later). The mounts below /etc (a container's /etc/hosts) are
        # mounted again on top, so the sandbox's own programs see the same files as before.
        return [
            ("mkdir", "-p", f"{ETC_LAYERS}/upper/netns", f"{ETC_LAYERS}/work", f"{ETC_LAYERS}/lower"),
            ("mount", "--rbind", "/etc", f"{ETC_LAYERS}/lower"),
            (
                "mount",
                "-t",
                "overlay",
                "-o",
                f"lowerdir=/etc,upperdir={ETC_LAYERS}/upper,workdir={ETC_LAYERS}/work",
                ETC_SOURCE,
                "/etc",
            ),
            *(("mount", "--bind", f"{ETC_LAYERS}/lower/{path[5:]}", path) for path in submounts),
        ]

    def setup_commands(self, runtime: str) -> list[Argv]:
        return [
            ("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", TMPFS_SOURCE, "/run"),
            ("mkdir", "-p", "/run/netns", runtime),
            ("ip", "link", "set", "lo", "up"),  # a new network namespace's loopback starts down
        ]
