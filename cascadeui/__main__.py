"""``python -m cascadeui``: the same command line as the ``cascadeui`` console script."""

import os
import sys

# ``python -m`` puts the working directory first on sys.path: a file there named like a
# driver (sqlite_utils.py, redis.py) would run in its place (issue 21). The package is
# already imported; the command needs nothing from the working directory.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from cascadeui.cli import main

sys.exit(main())
