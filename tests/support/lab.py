"""Lab test helpers: what a lab leaves behind, ping, and a runner that fails a chosen batch line.

Used by the lab, lab-firewall and docker-semantics tests.
"""

import subprocess

from pynetns import Namespace, wait_until
from pynetns.runner import CompletedCommand, LocalRunner


def leftovers(lab_id):
    names = [item.name for item in Namespace.all() if lab_id in item.name]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return names + [line.split(":")[1].strip() for line in links.splitlines() if f"pn{lab_id}" in line]


def assert_gone(lab_id):
    wait_until(lambda: not leftovers(lab_id), what=f"lab {lab_id} to vanish")


def ping(namespace, address):
    return namespace.run(["ping", "-c1", "-W1", str(address)], check=False).returncode == 0


class FailOn(LocalRunner):
    """Fails the batch containing ``needle``, as if the kernel refused that line."""

    def __init__(self, needle):
        super().__init__()
        self.needle = needle

    def _execute(self, argv, input, timeout):
        if input and self.needle in input:
            lines = input.splitlines()
            number = next(i for i, line in enumerate(lines, 1) if self.needle in line)
            applied = "\n".join(lines[: number - 1]) + "\n"
            if number > 1:
                super()._execute(argv, applied, timeout)
            return CompletedCommand(argv, 2, "", f"RTNETLINK answers: injected\nCommand failed -:{number}\n")
        return super()._execute(argv, input, timeout)
