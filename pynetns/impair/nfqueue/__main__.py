"""``python -m pynetns.impair.nfqueue``: run the userspace impairment engine."""

import sys

from . import main

sys.exit(main())
