"""``python -m igax`` is the ``igax`` command."""

import sys

from igax.cli import main

sys.exit(main())
