"""``python -m control run``: same as the ``parley`` console script."""

import sys

from control.cli import main

sys.exit(main())
