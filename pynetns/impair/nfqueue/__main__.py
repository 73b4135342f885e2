"""``python -m pynetns.impair.nfqueue``: run the userspace impairment engine."""

import sys

from .cli import main

sys.exit(main())
