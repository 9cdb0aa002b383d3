"""The store's writes follow what changed: journal appends, not whole-document rewrites.

Issue 6: a small change to a large state must not rewrite the state. Against each real
backend the snapshot (the file, the row, the key) stays byte for byte what the first write
put there while small changes are made durable one by one; everything dispatched still
loads back; and a clean ``close()`` folds the journal into the snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from _registry import build, kinds

from cascadeui._backends import AsyncBackend
from cascadeui.actions import APPLICATION_DELETE, APPLICATION_SET
from cascadeui.adapters import BaseStore
from cascadeui.serializer import StateSerializer
from cascadeui.store import StateStore

# The checks read the media directly (test code may block); cascadeui calls on the loop may not.
pytestmark = pytest.mark.anyio

# Every kind with a medium to look at (memory has none: the conformance class covers it).
KINDS = kinds("multiprocess")



class Target:
    """One backend location, with raw access to its snapshot and journal for the checks."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                 redis_url: str, key: str) -> None:
        self.kind, self.tmp_path, self.redis_url, self.key = kind, tmp_path, redis_url, key
        self.request = request

    def adapter(self) -> BaseStore:
        """A new adapter on this target's medium (the shared builders)."""
        return build(self.kind, self.request, self.tmp_path)

    def backend(self) -> AsyncBackend[Any]:
        return AsyncBackend(self.adapter())

    def _pg(self, query: str) -> Any:
        import psycopg

        with psycopg.connect(self.redis_url) as conn:
            return conn.execute(query).fetchone()


    async def load(self) -> dict[str, Any]:
        """The stored state read by a fresh adapter, in a worker thread (not on the loop)."""
        def read() -> dict[str, Any]:
            with self.adapter() as fresh:
                return fresh.load()

        return await anyio.to_thread.run_sync(read)

    def snapshot(self) -> bytes:
        """The stored snapshot's raw bytes, read without cascadeui."""
        if self.kind == "file":
            return (self.tmp_path / "state.json").read_bytes()
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.tmp_path / "state.db")
            try:
                return str(conn.execute("SELECT data FROM cascadeui_state").fetchone()[0]
                           ).encode()
            finally:
                conn.close()
        if self.kind == "postgres":
            return str(self._pg(f"SELECT data FROM {self.key} WHERE id = 1")[0]).encode()
        client = redis.Redis.from_url(self.redis_url)
        try:
            raw = client.get(self.key)
            assert raw is not None
            return bytes(raw)
        finally:
            client.close()

    def journal_entries(self) -> int:
        """How many journal records are stored (0: the snapshot is the whole state)."""
        if self.kind == "file":
            path = self.tmp_path / "state.json.journal"
            return max(0, len(path.read_bytes().splitlines()) - 1) if path.exists() else 0
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.tmp_path / "state.db")
            try:
                return int(conn.execute(
                    "SELECT count(*) FROM cascadeui_state_journal").fetchone()[0])
            finally:
                conn.close()
        if self.kind == "postgres":
            return int(self._pg(f"SELECT count(*) FROM {self.key}_journal")[0])
        client = redis.Redis.from_url(self.redis_url)
        try:
            return int(client.llen(f"{self.key}:journal"))
        finally:
            client.close()

    def cleanup(self) -> None:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.redis_url)
            try:
                client.delete(self.key, f"{self.key}:version", f"{self.key}:journal")
            finally:
                client.close()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    kind = request.param
    if kind == "postgres":  # the "url" is the database's, the "key" the table
        where, key = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table")
    elif kind == "redis":
        where, key = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_key")
    else:
        where, key = "", ""
    t = Target(kind, request, tmp_path, where, key)
    try:
        yield t
    finally:
        t.cleanup()


def _big_records(n: int = 2_000) -> dict[str, Any]:
    return {f"r{i}": {"name": f"record {i}", "tags": [i, i + 1], "score": i / 7}
            for i in range(n)}


async def test_small_changes_append_and_leave_the_snapshot_alone(target: Target) -> None:
    store = StateStore()
    await store.enable_persistence(target.backend(), debounce=0, poll_interval=None)
    await store.dispatch(APPLICATION_SET, {"path": ["records"], "value": _big_records()})
    assert await store.flush()
    first = target.snapshot()
    assert target.journal_entries() == 0

    for i in range(30):
        await store.dispatch(APPLICATION_SET, {"path": ["counters", f"k{i % 5}"],
                                               "value": {i, -i}})
        if i % 3 == 0:
            await store.dispatch(APPLICATION_DELETE, {"path": ["records", f"r{i}"]})
        assert await store.flush()

    assert target.snapshot() == first  # never rewritten
    assert target.journal_entries() == 30
    memory = {name: store.state[name] for name in ("application", "persistent_views")}
    loaded = await target.load()
    assert loaded["application"] == memory["application"]
    assert loaded["application"]["counters"]["k4"] == {29, -29}
    assert "r9" not in loaded["application"]["records"]

    await store.close()
    assert target.journal_entries() == 0  # close() folded the journal into the snapshot
    whole = StateSerializer().deserialize(target.snapshot())
    assert whole["application"] == memory["application"]


async def test_reopened_store_keeps_appending_on_the_loaded_document(target: Target) -> None:
    """A restart loads snapshot + journal and goes on appending against that version."""
    store = StateStore()
    await store.enable_persistence(target.backend(), debounce=0, poll_interval=None)
    await store.dispatch(APPLICATION_SET, {"path": ["records"], "value": _big_records(200)})
    assert await store.flush()
    await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": 1})
    assert await store.flush()
    # A crash now (no close()): the journal holds the last change.
    assert target.journal_entries() == 1

    again = StateStore()
    await again.enable_persistence(target.backend(), debounce=0, poll_interval=None)
    assert again.state["application"]["n"] == 1
    snapshot = target.snapshot()
    await again.dispatch(APPLICATION_SET, {"path": ["n"], "value": 2})
    assert await again.flush()
    assert target.snapshot() == snapshot
    assert target.journal_entries() == 2
    assert (await target.load())["application"]["n"] == 2
    await again.close()
    await store.close()  # the first store's close must not undo the second's writes
    loaded = await target.load()
    assert loaded["application"]["n"] == 2
    assert loaded["application"]["records"] == _big_records(200)


class _Counted:
    """Counts calls of one method of a real adapter (the call itself goes through)."""

    def __init__(self, obj: Any, name: str) -> None:
        self.calls = 0
        inner = getattr(obj, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return inner(*args, **kwargs)

        setattr(obj, name, counted)


async def _until(store: StateStore, check: Any) -> None:
    """Wait (at most 5 s) until ``check()`` holds after some action of ``store``."""
    done = anyio.Event()
    unsubscribe = store.subscribe(lambda _state, _action: done.set() if check() else None)
    try:
        with anyio.fail_after(5):
            if not check():
                await done.wait()
    finally:
        unsubscribe()


async def test_other_writers_commits_are_read_from_the_journal(target: Target) -> None:
    """Catching up with another store's commits reads their records, not the document."""
    writer, reader = StateStore(), StateStore()
    await writer.enable_persistence(target.backend(), debounce=0, poll_interval=None)
    await writer.dispatch(APPLICATION_SET, {"path": ["records"], "value": _big_records()})
    assert await writer.flush()
    backend = target.backend()
    await reader.enable_persistence(backend, debounce=0, poll_interval=0.02)
    records = reader.state["application"]["records"]
    full_loads = _Counted(backend.store, "load_versioned")

    for i in range(5):  # polled: each commit reaches the reader as its journal record
        await writer.dispatch(APPLICATION_SET, {"path": ["n"], "value": i})
        assert await writer.flush()
    await _until(reader, lambda: reader.state["application"].get("n") == 4)
    # Nothing reloaded whole: the big subtree is still the object the reader loaded.
    assert reader.state["application"]["records"] is records
    assert full_loads.calls == 0

    # Both write: the reader's compare-and-set fails once, catches up, merges, appends.
    await reader.dispatch(APPLICATION_SET, {"path": ["m"], "value": "reader"})
    await writer.dispatch(APPLICATION_SET, {"path": ["n"], "value": 5})
    assert await writer.flush()
    assert await reader.flush()
    assert reader.state["application"]["records"] is records
    assert full_loads.calls == 0
    loaded = (await target.load())["application"]
    assert (loaded["n"], loaded["m"]) == (5, "reader")
    await reader.close()
    await writer.close()
