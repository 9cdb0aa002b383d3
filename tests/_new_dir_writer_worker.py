"""A first save into new directories, under strace (tests/campaigns/test_powercut.py).

Run by the test through ``_spawn.worker("new_dir_writer")``."""

import os
import sys

from cascadeui.adapters import FileStore

marks = os.open("/dev/null", os.O_WRONLY)
with FileStore(sys.argv[1]) as store:
    store.save({"application": {"saved": 1}})
os.write(marks, b"PCMARK ack")
