"""``python -m pynetns``: the command line (see :mod:`pynetns.cli`)."""

from .cli import main

main()
