"""``python -m rlur`` = the ``rlur`` command."""

import sys

from rlur.cli import main

sys.exit(main())
