"""``python -m cascadeui``: the same command line as the ``cascadeui`` console script."""

import sys

from cascadeui.cli import main

sys.exit(main())
