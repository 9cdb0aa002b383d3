"""Nothing lost when a program ends (issue 11 item 2), with real subprocesses.

Each child is a small program as a user would write it, with coalescing so slow
(``debounce``/``max_delay`` of 60 s) that only the shutdown path can have written its
last change; the parent then reads the medium with a fresh adapter.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _helpers import started_redis_server

from cascadeui.adapters import FileStore, SQLiteStore

SLOW = "debounce=60.0, max_delay=60.0"


def run_child(code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def sqlite_state(path: Path) -> dict[str, object]:
    with SQLiteStore(path) as store:
        return store.load()


def test_asyncio_run_returning_keeps_a_non_durable_change(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = run_child(f"""
        import asyncio, sys
        from cascadeui.store import StateStore
        from cascadeui.persistence import SQLiteBackend

        async def main():
            store = StateStore()
            await store.enable_persistence(SQLiteBackend(sys.argv[1]), {SLOW})
            await store.dispatch("APPLICATION_SET", {{"path": ["n"], "value": 41}})
            await store.dispatch("APPLICATION_SET", {{"path": ["last"], "value": "kept"}})

        asyncio.run(main())
    """, str(db))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"n": 41, "last": "kept"}
    assert "NOT saved" not in out.stderr


def test_the_seeds_data_only_form_stores_the_change_when_asyncio_run_returns(
        tmp_path: Path) -> None:
    db = tmp_path / "cascadeui.db"
    out = run_child("""
        import asyncio, sys
        from cascadeui import get_store, setup_persistence
        from cascadeui.persistence import SQLiteBackend

        async def main():
            await setup_persistence(backend=SQLiteBackend(sys.argv[1]))
            await get_store().dispatch("APPLICATION_SET", {"path": ["greeting"], "value": "hi"})

        asyncio.run(main())
    """, str(db))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"greeting": "hi"}


BOT_LIKE = f"""
    import asyncio, sys
    from cascadeui.store import StateStore
    from cascadeui.persistence import FileStorageBackend

    async def main():
        store = StateStore()
        await store.enable_persistence(FileStorageBackend(sys.argv[1]), {SLOW})
        n = 0
        while True:  # a busy bot: changes all the time, never closes by itself
            n += 1
            await store.dispatch("APPLICATION_SET", {{"path": ["n"], "value": n}})
            print(n, flush=True)
            await asyncio.sleep(0.005)

    asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_to_a_busy_process_keeps_its_last_change(
        tmp_path: Path, sig: signal.Signals) -> None:
    path = tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BOT_LIKE), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            last = int(line)
            if last >= 50:
                break
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = max([last, *(int(x) for x in rest.split())])
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM, err  # still ends as SIGTERM says
    with FileStore(path) as reader:
        stored = reader.load()["application"]["n"]
    # Every printed change was dispatched (acknowledged in memory) before the signal; at
    # most one more was dispatched between the last print and the signal's handling.
    assert last <= stored <= last + 1, (last, stored, err)
    assert "NOT saved" not in err


def test_a_loop_left_unclosed_is_written_at_interpreter_exit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = run_child(f"""
        import asyncio, sys
        from cascadeui.store import StateStore
        from cascadeui.persistence import SQLiteBackend

        async def main():
            store = StateStore()
            await store.enable_persistence(SQLiteBackend(sys.argv[1]), {SLOW})
            await store.dispatch("APPLICATION_SET", {{"path": ["n"], "value": 7}})

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())  # never closed, writer task left pending
    """, str(db))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"n": 7}


def test_sync_api_writes_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    out = run_child("""
        import sys
        from cascadeui import sync, get_store
        from cascadeui.persistence import FileStorageBackend

        sync.setup_persistence(backend=FileStorageBackend(sys.argv[1]))
        sync.dispatch("APPLICATION_SET", {"path": ["a"], "value": 1})
        # A non-durable change on the private loop, left for interpreter exit:
        sync._loop.call(lambda: get_store().dispatch(
            "APPLICATION_SET", {"path": ["b"], "value": 2}), what="dispatch")
    """, str(path))
    assert out.returncode == 0, out.stderr
    with FileStore(path) as reader:
        assert reader.load()["application"] == {"a": 1, "b": 2}


def test_changes_that_cannot_be_written_at_exit_are_named_in_a_warning(
        tmp_path: Path) -> None:
    server = started_redis_server("the shutdown warning test")
    try:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import asyncio, logging, sys
            from cascadeui.store import StateStore
            from cascadeui.persistence import RedisBackend

            async def main():
                store = StateStore()
                await store.enable_persistence(
                    RedisBackend(sys.argv[1], key="shutdown-test", socket_timeout=0.5),
                    {SLOW}, retry_initial=0.05, durable_timeout=1.0)
                await store.dispatch("APPLICATION_SET", {{"path": ["a"], "value": 1}},
                                     durable=True)
                for i in range(3):
                    await store.dispatch("APPLICATION_SET", {{"path": ["b", i], "value": i}})
                print("ready", flush=True)
                await asyncio.to_thread(sys.stdin.readline)  # the medium dies meanwhile

            logging.basicConfig(level=logging.WARNING)
            asyncio.run(main())
        """), server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        server.stop()
        started = time.monotonic()
        _, err = proc.communicate("go\n", timeout=30)
        took = time.monotonic() - started
    finally:
        server.close()
    assert proc.returncode == 0, err
    assert "3 change(s) to the persisted state were NOT saved to redis://" in err, err
    assert "key='shutdown-test'" in err
    assert took < 10.0  # bounded by durable_timeout, not a hang


def test_an_application_sigterm_handler_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    out = run_child(f"""
        import asyncio, signal, sys
        from cascadeui.store import StateStore
        from cascadeui.persistence import FileStorageBackend

        def mine(signum, frame):
            pass

        signal.signal(signal.SIGTERM, mine)

        async def main():
            store = StateStore()
            await store.enable_persistence(FileStorageBackend(sys.argv[1]), {SLOW})
            print(signal.getsignal(signal.SIGTERM) is mine)

        asyncio.run(main())
    """, str(path))
    assert out.stdout.strip() == "True", out.stderr


def test_changes_after_close_stay_in_memory_at_exit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = run_child(f"""
        import asyncio, sys
        from cascadeui.store import StateStore
        from cascadeui.persistence import SQLiteBackend

        store = StateStore()  # alive until exit, as the process-wide store is

        async def main():
            await store.enable_persistence(SQLiteBackend(sys.argv[1]), {SLOW})
            await store.dispatch("APPLICATION_SET", {{"path": ["n"], "value": 1}})
            await store.close()
            # The store keeps working in memory after close(): nothing more is written.
            await store.dispatch("APPLICATION_SET", {{"path": ["n"], "value": 2}})

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
    """, str(db))
    assert out.returncode == 0, out.stderr
    assert sqlite_state(db)["application"] == {"n": 1}
    assert "NOT saved" not in out.stderr


BOT = """
    import asyncio, sys
    from cascadeui import get_store, setup_persistence
    from cascadeui.persistence import FileStorageBackend
    from cascadeui.testing.discord_double import DiscordDouble, logged_in_bot, mark_ready

    async def main():
        async with DiscordDouble() as double:
            async def hook(bot):
                await setup_persistence(bot, backend=FileStorageBackend(sys.argv[1]))

            bot = await logged_in_bot(double, setup_hook=hook)
            mark_ready(bot)
            store, n = get_store(), 0
            while True:  # a busy bot: non-durable changes, written every max_delay (1 s)
                n += 1
                await store.dispatch("APPLICATION_SET", {"path": ["n"], "value": n})
                print(n, flush=True)
                await asyncio.sleep(0.005)

    asyncio.run(main())
"""


def test_sigterm_to_a_discord_bot_keeps_its_last_change(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BOT), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            last = int(line)
            if last >= 60:  # inside a 1 s coalescing window: not written by the writer
                break
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = max([last, *(int(x) for x in rest.split())])
    assert proc.returncode == -signal.SIGTERM, err
    with FileStore(path) as reader:
        stored = reader.load()["application"]["n"]
    assert last <= stored <= last + 1, (last, stored, err)
