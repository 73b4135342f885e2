"""Docker's networking (--network none, --network host, the default bridge) rebuilt by pynetns.

Run it as root, or as any user (a rootless sandbox then plays the host)::

    python examples/docker_walkthrough.py

It prints every step with the exact commands pynetns ran, then removes
everything it created, also on Ctrl-C. The steps themselves live in
``pynetns/cli/demo.py``, written to be read; ``pynetns demo`` runs the same code.
"""

import sys

from pynetns.cli.demo import walkthrough

if __name__ == "__main__":
    try:
        sys.exit(walkthrough())
    except KeyboardInterrupt:  # everything was already removed
        sys.exit(130)
