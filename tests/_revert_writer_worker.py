"""Writes a state, then its own bytes again, under strace (tests/campaigns/test_powercut.py).

Run by the test through ``_spawn.worker("revert_writer")``."""

import os
import sys

from cascadeui._merge import diff
from cascadeui.adapters import FileStore
from cascadeui.serializer import StateSerializer

marks = os.open("/dev/null", os.O_WRONLY)
store = FileStore(sys.argv[1], backups=1)
a, b = {"application": {"mode": "a"}}, {"application": {"mode": "b"}}
store.save(a)
version = store.save_changes(diff(a, b), store.version(),
                             full=lambda: StateSerializer().serialize(b))
assert version is not None
store.save(a)  # the same bytes as the snapshot the journal was bound to
os.write(marks, b"PCMARK ack")
