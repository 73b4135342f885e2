"""The ``pynetns`` command line (:mod:`pynetns.cli.app`) and the Docker networking walkthrough (:mod:`.demo`).

::

    sudo pynetns up shop.toml      # create the lab a topology file declares
    pynetns explain shop.toml      # the commands ``up`` would run (no root needed)
    pynetns --help

``main()`` is the ``pynetns`` console script and ``python -m pynetns.cli``; ``run(argv)``
runs one command line and returns its exit status.
"""

from __future__ import annotations

from .app import Command, Pynetns, Terminated, main, run

__all__ = ["Command", "Pynetns", "Terminated", "main", "run"]
