"""Programs that end in different ways, for tests/store/test_shutdown.py; run as a script.

``python _shutdown_worker.py CASE TARGET``: each CASE is a small program (a function below)
persisting to TARGET (a path, or a Redis URL for ``dying-medium``), ended the way its name
says; the test then reads what was saved. Imports stay inside each case, as in a program
that uses only what it needs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

#: Coalescing so slow that only the shutdown path can write the changes.
SLOW: dict[str, Any] = {"debounce": 60.0, "max_delay": 60.0}
#: What a case keeps alive until interpreter exit (a module global of a real program).
ALIVE: list[Any] = []


def run_returning(target: str) -> None:
    """``asyncio.run`` returns with non-durable changes pending."""
    from cascadeui.persistence import SQLiteBackend
    from cascadeui.store import StateStore

    async def main() -> None:
        store = StateStore()
        await store.enable_persistence(SQLiteBackend(target), **SLOW)
        await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": 41})
        await store.dispatch("APPLICATION_SET", {"path": ["last"], "value": "kept"})

    asyncio.run(main())


def seed_data_only(target: str) -> None:
    """The seed's data-only form: ``setup_persistence(backend=...)``, one dispatch."""
    from cascadeui import get_store, setup_persistence
    from cascadeui.persistence import SQLiteBackend

    async def main() -> None:
        await setup_persistence(backend=SQLiteBackend(target))
        await get_store().dispatch("APPLICATION_SET", {"path": ["greeting"], "value": "hi"})

    asyncio.run(main())


def busy(target: str) -> None:
    """A busy bot: changes all the time, printing each, never closing by itself."""
    from cascadeui.persistence import FileStorageBackend
    from cascadeui.store import StateStore

    async def main() -> None:
        store = StateStore()
        await store.enable_persistence(FileStorageBackend(target), **SLOW)
        n = 0
        while True:
            n += 1
            await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": n})
            print(n, flush=True)
            await asyncio.sleep(0.005)

    asyncio.run(main())


def loop_unclosed(target: str) -> None:
    """A loop never closed, its writer task left pending, at interpreter exit."""
    from cascadeui.persistence import SQLiteBackend
    from cascadeui.store import StateStore

    async def main() -> None:
        store = StateStore()
        await store.enable_persistence(SQLiteBackend(target), **SLOW)
        await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": 7})

    loop = asyncio.new_event_loop()
    ALIVE.append(loop)
    loop.run_until_complete(main())


def sync_exit(target: str) -> None:
    """The sync API, with a non-durable change left on its private loop at exit."""
    from cascadeui import get_store, sync
    from cascadeui.persistence import FileStorageBackend

    sync.setup_persistence(backend=FileStorageBackend(target))
    sync.dispatch("APPLICATION_SET", {"path": ["a"], "value": 1})
    sync._loop.call(lambda: get_store().dispatch(
        "APPLICATION_SET", {"path": ["b"], "value": 2}), what="dispatch")


def dying_medium(target: str) -> None:
    """Changes pending when the Redis server dies (the test stops it after "ready")."""
    import logging

    from cascadeui.persistence import RedisBackend
    from cascadeui.store import StateStore

    async def main() -> None:
        store = StateStore()
        await store.enable_persistence(
            RedisBackend(target, key="shutdown-test", socket_timeout=0.5),
            **SLOW, retry_initial=0.05, durable_timeout=1.0)
        await store.dispatch("APPLICATION_SET", {"path": ["a"], "value": 1}, durable=True)
        for i in range(3):
            await store.dispatch("APPLICATION_SET", {"path": ["b", i], "value": i})
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the medium dies meanwhile

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())


def own_sigterm(target: str) -> None:
    """An application's own SIGTERM handler, installed before persistence: kept."""
    import signal

    from cascadeui.persistence import FileStorageBackend
    from cascadeui.store import StateStore

    def mine(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)

    async def main() -> None:
        store = StateStore()
        await store.enable_persistence(FileStorageBackend(target), **SLOW)
        print(signal.getsignal(signal.SIGTERM) is mine)

    asyncio.run(main())


def after_close(target: str) -> None:
    """Changes made after ``close()`` stay in memory, even at exit."""
    from cascadeui.persistence import SQLiteBackend
    from cascadeui.store import StateStore

    store = StateStore()  # alive until exit, as the process-wide store is
    ALIVE.append(store)

    async def main() -> None:
        await store.enable_persistence(SQLiteBackend(target), **SLOW)
        await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": 1})
        await store.close()
        await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": 2})

    loop = asyncio.new_event_loop()
    ALIVE.append(loop)
    loop.run_until_complete(main())


def bot(target: str) -> None:
    """A logged-in bot on the Discord API double, busy with non-durable changes."""
    from cascadeui import get_store, setup_persistence
    from cascadeui.persistence import FileStorageBackend
    from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready

    async def main() -> None:
        async with DiscordDouble() as double:
            async def hook(bot: Any) -> None:
                await setup_persistence(bot, backend=FileStorageBackend(target))

            client = await logged_in_bot(double, setup_hook=hook)
            mark_ready(client)
            store, n = get_store(), 0
            while True:  # written every max_delay (1 s)
                n += 1
                await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": n})
                print(n, flush=True)
                await asyncio.sleep(0.005)

    asyncio.run(main())


CASES: dict[str, Callable[[str], None]] = {
    "run-returning": run_returning, "seed-data-only": seed_data_only, "busy": busy,
    "loop-unclosed": loop_unclosed, "sync-exit": sync_exit, "dying-medium": dying_medium,
    "own-sigterm": own_sigterm, "after-close": after_close, "bot": bot}

if __name__ == "__main__":
    CASES[sys.argv[1]](sys.argv[2])
