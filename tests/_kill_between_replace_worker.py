"""A FileStore full write SIGKILLed between replacing the snapshot and deleting the
journal (tests/adapters/test_journal_binding.py).

Run by the test through ``_spawn.worker("kill_between_replace")``."""

import os
import signal
import sys

from cascadeui.adapters import FileStore

path = sys.argv[1]
journal = path + ".journal"
real_unlink = os.unlink

def unlink(target, *args, **kwargs):
    if os.fspath(target) == journal:  # the snapshot is replaced: die right here
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(target, *args, **kwargs)

os.unlink = unlink
with FileStore(path, backups=int(sys.argv[2])) as store:
    store.save({"application": {"n": 99}})
