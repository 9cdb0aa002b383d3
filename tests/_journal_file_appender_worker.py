"""A FileStore journal appender for tests/adapters/test_journal_file.py (killed mid-append).

Run by the test through ``_spawn.worker("journal_file_appender")``."""

import sys

import cascadeui.adapters._journal as journal

from cascadeui.adapters import FileStore
from cascadeui.serializer import StateSerializer

journal.JOURNAL_MIN_BYTES = int(sys.argv[3])
mode, ser, store = sys.argv[2], StateSerializer(), FileStore(sys.argv[1])
doc, version = store.load_versioned()
if mode == "kill":
    n = doc.get("application", {}).get("n", 0)
    print("ready", n, flush=True)
    while True:
        n += 1
        app = doc.setdefault("application", {})
        app["n"] = n
        app.setdefault("log", {})[n] = "x" * 30
        changes = [(("application", "n"), n), (("application", "log", n), "x" * 30)]
        version = store.save_changes(changes, version, full=lambda doc=doc: ser.serialize(doc))
        assert version is not None
        print(n, flush=True)
else:
    done = 0
    while done < int(mode):
        n = doc.get("application", {}).get("n", 0) + 1
        doc.setdefault("application", {})["n"] = n
        result = store.save_changes([(("application", "n"), n)], version,
                                    full=lambda doc=doc: ser.serialize(doc))
        if result is None:
            doc, version = store.load_versioned()
        else:
            version, done = result, done + 1
    print("done", flush=True)
