"""Small probes of a fresh interpreter, for the readers' and packaging tests; run as a script.

``python _probe_worker.py CASE [ARG]``:

    import          ``import cascadeui`` and nothing else (what it prints is the point)
    import-clean    importing the package creates no file in the working directory and
                    installs no logging handler
    sync-alone      importing cascadeui.sync does not import the inspection machinery first
    pid             print this process's id and exit (a pid that is then dead)
    exit-promptly   ARG: a state path; the sync API used by a script that then just ends
    restart-write   ARG: a SQLite path; 100 dispatches, then close (a process that stops)
"""

from __future__ import annotations

import os
import sys


def main(case: str, arg: str = "") -> None:
    if case == "import":
        import cascadeui
    elif case == "import-clean":
        import logging

        import cascadeui
        import cascadeui.adapters
        import cascadeui.persistence
        import cascadeui.sync
        from cascadeui import PersistentView, get_store, inspect, setup_persistence  # noqa: F401

        assert os.listdir(".") == [], os.listdir(".")
        assert logging.getLogger().handlers == []
        assert all(not logging.getLogger(n).handlers for n in logging.root.manager.loggerDict
                   if n.startswith("cascadeui"))
    elif case == "sync-alone":
        import cascadeui.sync  # noqa: F401

        assert "cascadeui._inspection" not in sys.modules or "cascadeui.sync" in sys.modules
    elif case == "pid":
        print(os.getpid())
    elif case == "exit-promptly":
        from cascadeui import sync

        sync.setup_persistence(backend=arg)
        sync.dispatch("APPLICATION_SET", {"path": ["done"], "value": True})
        print("ok")
    elif case == "restart-write":
        import asyncio

        from cascadeui import get_store
        from cascadeui._backends import SQLiteBackend

        async def write() -> None:
            store = get_store()
            await store.enable_persistence(SQLiteBackend(arg), debounce=30.0)
            for i in range(100):
                await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": i})
            await store.close()

        asyncio.run(write())
    else:
        raise SystemExit(f"unknown case {case!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
