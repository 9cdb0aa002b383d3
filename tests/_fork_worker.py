"""The forking spawner of tests/store/test_multiprocess_basic.py; run as a script.

``python _fork_worker.py TARGET`` imports cascadeui once, then reads commands on stdin and
``fork``s workers against the backend at TARGET (a path or URL):

    increment PROCS N    PROCS workers doing N transaction() increments each; "done CODES"
    saver SEQ            a worker saving whole, checksummed states; "forked PID", "ready PID"
    reap PID             wait for a (killed) worker; "reaped CODE"
"""

import hashlib
import os
import sys

import psycopg  # noqa: F401  (imported once here, not in every forked worker)
import redis  # noqa: F401
import sqlite_utils  # noqa: F401
from _forking import fork

from cascadeui.errors import LockTimeoutError
from cascadeui.persistence import backend_from_url

#: The backend's path or URL (tests/_registry.py's target).
TARGET = sys.argv[1]

def say(line):
    # One write() per line: the parent and its forked savers share this pipe, and
    # print() may write the text and its newline separately ("forked 18781ready 18781").
    os.write(1, (line + "\n").encode())

def open_store(wait=60.0):
    """The target's adapter, waiting up to ``wait`` seconds for the write lock."""
    store = backend_from_url(TARGET).store
    for name in ("lock_timeout", "timeout"):  # its name differs between adapters
        if hasattr(store, name):
            setattr(store, name, wait)
    return store

def increment(n):
    store = open_store()
    for _ in range(n):
        with store.transaction() as st:
            st["counter"] = st.get("counter", 0) + 1
            st.setdefault("pids", set()).add(os.getpid())
    store.close()

def save_loop(seq):
    # A killed writer's lease (Redis) ends quickly; a waiting saver just tries again.
    store = open_store(wait=0.2)
    announced = False
    while True:
        seq += 1
        payload = "x" * (1000 + (seq * 7919) % 60000)
        digest = hashlib.sha256(f"{seq}:{payload}".encode()).hexdigest()
        try:
            store.save({"seq": seq, "payload": payload, "digest": digest,
                        "ids": {seq: (seq,)}})
        except LockTimeoutError:
            continue
        if not announced:
            say(f"ready {os.getpid()}")
            announced = True

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "increment":
        procs, n = int(args[0]), int(args[1])
        pids = [fork(increment, n, report=say) for _ in range(procs)]
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        say("done " + " ".join(map(str, codes)))
    elif cmd == "saver":
        pid = fork(save_loop, int(args[0]), report=say)
        say(f"forked {pid}")
    elif cmd == "reap":
        pid = int(args[0])
        say(f"reaped {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}")
