"""``python -m pynetns.cli``: the command line."""

from . import main

main()
