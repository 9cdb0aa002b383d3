"""The forking spawner of SQLite journal writers for tests/adapters/test_journal_sqlite.py.

Run by the test through ``_spawn.worker("journal_sqlite_spawner")``."""

import os
import sys
import time

from _forking import fork

from cascadeui.adapters import SQLiteStore
from cascadeui.adapters import _journal as journal

path = sys.argv[1]
journal.JOURNAL_MIN_BYTES = int(sys.argv[2])

def report(text):
    sys.stderr.write(text + "\n")

def ack(fd, text):
    os.write(fd, text.encode() + b"\n")

def appender(ack_path):
    """Append forever; a line in ack_path only once save_changes returned."""
    store = SQLiteStore(path)
    state, version = store.load_versioned()
    app = state.setdefault("application", {})
    log = app.setdefault("log", {})
    n = app.get("n", 0)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    while True:
        n += 1
        app["n"] = n
        log[n] = ("x" * (n % 50), n)
        version = store.save_changes(
            [(("application", "n"), n), (("application", "log", n), log[n])], version,
            full=lambda: store.serializer.serialize(state))
        if version is None:
            raise SystemExit("the version moved: there is another writer")
        ack(fd, str(n))

def incrementer(name, count, ack_path):
    """count compare-and-set increments; on None, load again and retry."""
    store = SQLiteStore(path, timeout=30)
    retries = 0
    # Start together (a loaded machine may otherwise run one process's whole loop first).
    open(f"{ack_path}.ready.{name}", "w").close()
    deadline = time.monotonic() + 30
    while not all(os.path.exists(f"{ack_path}.ready.p{i}") for i in range(2)):
        if time.monotonic() > deadline:
            raise SystemExit("the other incrementer never started")
        time.sleep(0.001)
    for k in range(count):
        while True:
            state, version = store.load_versioned()
            app = state.setdefault("application", {})
            value = app.get("count", 0) + 1
            app["count"] = value
            app.setdefault(name, {})[k] = value
            changes = [(("application", "count"), value), (("application", name, k), value)]
            time.sleep(0.001)  # widen the race: the other process may commit meanwhile
            full = lambda state=state: store.serializer.serialize(state)  # noqa: E731
            if store.save_changes(changes, version, full=full) is not None:
                break
            retries += 1
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    ack(fd, str(retries))

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "append":
        print(f"forked {fork(appender, args[0], report=report)}", flush=True)
    elif cmd == "cas":
        count = int(args[0])
        pids = [fork(incrementer, f"p{i}", count, args[1], report=report) for i in range(2)]
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        print("done " + " ".join(map(str, codes)), flush=True)
    elif cmd == "reap":
        print(f"reaped {os.waitstatus_to_exitcode(os.waitpid(int(args[0]), 0)[1])}", flush=True)
