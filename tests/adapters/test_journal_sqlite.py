"""SQLiteStore's change journal (issue 6): appends, compaction, the schema upgrade, corruption.

Real database files throughout; the crash and concurrency tests run real processes,
forked from one spawner subprocess that imported cascadeui once (as in
tests/store/test_multiprocess_basic.py), and SIGKILL them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _spawn import worker

from cascadeui._merge import DELETED, Change, diff
from cascadeui.adapters import JournaledStore, SQLiteStore
from cascadeui.adapters import _journal as journal
from cascadeui.adapters import _sqlite_store as sqlite_store
from cascadeui.errors import SerializationError, StateCorruptedError
from cascadeui.serializer import StateSerializer

SER = StateSerializer()


def sql(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """One statement on a separate connection, committed."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(query, params).fetchall()


def journal_rows(path: Path) -> list[tuple[int, str]]:
    return sql(path, "SELECT seq, ops FROM cascadeui_state_journal ORDER BY seq")


def dump(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def commit(store: SQLiteStore, old: dict[str, Any], new: dict[str, Any],
           expected: int) -> int | None:
    """What the engine does: append the diff, with the whole new document as fallback."""
    return store.save_changes(diff(old, new), expected,
                              full=lambda: SER.serialize(new))


def mutate(state: dict[str, Any], rnd: random.Random, step: int) -> dict[str, Any]:
    """A changed deep copy: sets, datetimes, tuples, int and tuple keys, deletes."""
    new = copy.deepcopy(state)
    app = new.setdefault("application", {})
    guild = app.setdefault("guilds", {}).setdefault(rnd.randrange(5), {})
    roll = rnd.randrange(6)
    if roll == 0:
        guild[("member", rnd.randrange(4))] = {"tags": {rnd.randrange(9) for _ in range(3)}}
    elif roll == 1:
        guild["seen"] = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=step)
    elif roll == 2 and guild:
        del guild[rnd.choice(list(guild))]
    elif roll == 3:
        app["counter"] = step
        app["pair"] = (step, str(step))
    elif roll == 4:
        new.setdefault("persistent_views", {})[f"panel:{step % 7}"] = {
            "class_name": "Panel", "message_id": step, "frozen": frozenset({step})}
    elif rnd.random() < 0.1:
        del app["guilds"]
    else:
        guild["n"] = step
    return new


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_the_store_is_a_journaled_store(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert isinstance(store, JournaledStore)
    assert sqlite_store.SCHEMA_VERSION == 2


def test_many_appends_then_a_fresh_store_loads_the_same_state(db: Path) -> None:
    rnd = random.Random(6)
    state: dict[str, Any] = {}
    version = 0
    with SQLiteStore(db) as store:
        for step in range(1, 301):
            new = mutate(state, rnd, step)
            result = commit(store, state, new, version)
            assert result is not None
            state, version = new, result
    # The first commit is a snapshot; every later one is one journal row.
    assert len(journal_rows(db)) == version - 1
    with SQLiteStore(db) as fresh:
        loaded, at = fresh.load_versioned()
        assert (loaded, at) == (state, version)
        assert fresh.load() == state
        with fresh.transaction() as current:  # a full write of the assembled state
            assert current == state
    assert journal_rows(db) == []
    with SQLiteStore(db) as again:
        assert again.load_versioned() == (state, version + 1)


def test_non_str_keys_and_tagged_values_in_paths(db: Path) -> None:
    moment = datetime(2026, 5, 1, 12, 30, tzinfo=timezone.utc)
    changes: list[Change] = [
        (("application", 123, (4, "x")), {"a", "b"}),
        (("application", 123, frozenset({1})), moment),
        (("application", None), (1, 2)),
        (("persistent_views", "panel:1", 2.5), [1, {"$set": "not a tag"}]),
    ]
    with SQLiteStore(db) as store:
        store.save({"application": {"keep": 1}})
        assert store.save_changes(changes, 1, full=lambda: "unused") == 2
        assert store.save_changes([(("application", 123, (4, "x")), DELETED)], 2,
                                  full=lambda: "unused") == 3
    with SQLiteStore(db) as fresh:
        assert fresh.load() == {
            "application": {"keep": 1, 123: {frozenset({1}): moment}, None: (1, 2)},
            "persistent_views": {"panel:1": {2.5: [1, {"$set": "not a tag"}]}}}


def test_every_append_bumps_the_version_by_one(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.save({"n": 0})
        before = sql(db, "SELECT updated_at FROM cascadeui_state")[0][0]
        for n in range(1, 21):
            assert store.save_changes([(("n",), n)], n, full=lambda: "unused") == n + 1
            assert store.version() == n + 1
            assert len(journal_rows(db)) == n
        assert journal_rows(db)[-1] == (21, '{"v":1,"ops":[[["n"],20]]}')
        assert sql(db, "SELECT data FROM cascadeui_state") == [('{"n":0}',)]
        # An append never rewrites the row: SQLite would copy the whole snapshot.
        assert sql(db, "SELECT version, updated_at FROM cascadeui_state") == [(1, before)]
        assert store.load_versioned() == ({"n": 20}, 21)


def test_a_stale_version_writes_nothing(db: Path) -> None:
    called: list[int] = []

    def full() -> str:
        called.append(1)
        return SER.serialize({"n": 99})

    with SQLiteStore(db) as store:
        store.save({"n": 0})
        assert store.save_changes([(("n",), 1)], 1, full=full) == 2
        image = dump(db)
        assert store.save_changes([(("n",), 2)], 1, full=full) is None
        assert store.save_changes([(("n",), 2)], 3, full=full) is None
        assert store.save_changes([], 1, full=full) is None
        assert store.save_changes([], 2, full=full) == 2  # nothing to write: still at 2
        assert called == []
        assert dump(db) == image
        assert store.load_versioned() == ({"n": 1}, 2)


def test_the_first_commit_of_an_empty_table_is_a_snapshot(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert store.save_changes([(("a",), 1)], 1, full=lambda: "unused") is None
        assert store.save_changes([(("a",), 1)], 0, full=lambda: '{"a":1}') == 1
    assert sql(db, "SELECT data, version FROM cascadeui_state") == [('{"a":1}', 1)]
    assert journal_rows(db) == []


def test_an_unstorable_change_raises_before_anything_is_written(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteStore(db) as store:
        store.save({"a": 1})
        image = dump(db)
        with pytest.raises(SerializationError):
            store.save_changes([(("a",), object())], 1, full=lambda: "unused")
        assert dump(db) == image
        monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 1)  # every commit compacts
        with pytest.raises(SerializationError):  # the compaction's document, likewise
            store.save_changes([(("a",), 2)], 1, full=lambda: SER.serialize({"a": {1j}}))
        assert dump(db) == image
        assert store.save_changes([(("a",), 3)], 1, full=lambda: '{"a":3}') == 2
        assert store.load_versioned() == ({"a": 3}, 2)


def test_the_journal_compacts_when_over_budget(db: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 300)
    state: dict[str, Any] = {"application": {"blob": "b" * 200}}
    fulls: list[int] = []
    with SQLiteStore(db) as store:
        store.save(state)
        version = 1
        rows_seen = []
        for n in range(40):
            new = copy.deepcopy(state)
            new["application"][f"k{n}"] = n

            def full(doc: dict[str, Any] = new, n: int = n) -> str:
                fulls.append(n)
                return SER.serialize(doc)

            result = store.save_changes(diff(state, new), version, full=full)
            assert result == version + 1
            state, version = new, result
            rows = journal_rows(db)
            journal_bytes = sum(len(ops.encode()) for _, ops in rows)
            assert journal_bytes <= 300  # max(300, half the snapshot) while it is small
            rows_seen.append(len(rows))
        assert fulls  # it compacted...
        for n in fulls:  # ...and a compaction leaves the row holding everything
            assert rows_seen[n] == 0
        assert rows_seen[fulls[0] - 1] > 0
        (data,) = sql(db, "SELECT data FROM cascadeui_state")[0]
        assert SER.deserialize(data)["application"][f"k{fulls[-1]}"] == fulls[-1]
    with SQLiteStore(db) as fresh:
        assert fresh.load_versioned() == (state, version)


def test_compaction_without_a_cached_read_measures_the_database(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteStore(db) as store:
        store.save({"s": "x" * 1000})
        for n in range(5):
            store.save_changes([(("n",), "y" * 10)], n + 1, full=lambda: "unused")
    monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 600)
    # A store that never read this commit: its budget comes from SQLite's sizes (5 records
    # of 29 bytes, a 1 kB snapshot: not over budget), then from its own append.
    with SQLiteStore(db) as other:
        assert other.save_changes([(("m",), "z" * 30)], 6, full=lambda: "unused") == 7
        assert len(journal_rows(db)) == 6
        whole = {"s": "x" * 1000, "n": "y" * 10, "m": "z" * 30, "big": "w" * 600}
        assert other.save_changes([(("big",), "w" * 600)], 7,
                                  full=lambda: SER.serialize(whole)) == 8
        assert journal_rows(db) == []
    with SQLiteStore(db) as fresh:
        assert fresh.load() == whole


@pytest.mark.parametrize("how", ["save", "save_if_version", "transaction"])
def test_every_full_write_empties_the_journal(db: Path, how: str) -> None:
    with SQLiteStore(db) as store:
        store.save({"a": 0})
        for n in range(1, 4):
            store.save_changes([(("a",), n)], n, full=lambda: "unused")
        assert len(journal_rows(db)) == 3
        if how == "save":
            store.save({"b": 1})
        elif how == "save_if_version":
            assert store.save_if_version({"b": 1}, 3) is None
            assert len(journal_rows(db)) == 3
            assert store.save_if_version({"b": 1}, 4) == 5
        else:
            with store.transaction() as state:
                assert state == {"a": 3}
                state.clear()
                state["b"] = 1
        assert journal_rows(db) == []
        assert store.load_versioned() == ({"b": 1}, 5)
        assert store.save_changes([(("c",), 2)], 5, full=lambda: "unused") == 6
    with SQLiteStore(db) as fresh:
        assert fresh.load() == {"b": 1, "c": 2}


def test_a_failed_transaction_keeps_the_journal(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.save({"a": 0})
        store.save_changes([(("a",), 1)], 1, full=lambda: "unused")

        def failing_body() -> None:
            with store.transaction() as state:
                state["a"] = 5
                raise RuntimeError("body failed")

        with pytest.raises(RuntimeError, match="body failed"):
            failing_body()
        assert store.load_versioned() == ({"a": 1}, 2)
        assert len(journal_rows(db)) == 1


def test_a_read_sees_one_commit_while_another_connection_appends(db: Path) -> None:
    """The row and the journal come from one read transaction, never from two commits."""
    with SQLiteStore(db) as store:
        store.save({"n": 0})
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        with SQLiteStore(db) as w:
            n = 0
            while not stop.is_set() and n < 2000:
                n += 1
                try:
                    doc = SER.serialize({"n": n})
                    assert w.save_changes([(("n",), n)], n, full=lambda d=doc: d) == n + 1
                except BaseException as exc:
                    errors.append(exc)
                    return

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        with SQLiteStore(db) as reader:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and thread.is_alive():
                state, version = reader.load_versioned()
                assert state == {"n": version - 1}
                reads += 1
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []
    assert reads > 10


def test_memory_databases_keep_working() -> None:
    with SQLiteStore(":memory:") as store:
        assert store.save_changes([(("a",), 1)], 0, full=lambda: '{"a":1}') == 1
        assert store.save_changes([(("b", 1), {2})], 1, full=lambda: "unused") == 2
        assert store.load_versioned() == ({"a": 1, "b": {1: {2}}}, 2)
        store.save({"c": 3})
        assert store.load() == {"c": 3}


# -- the schema --------------------------------------------------------------------------


def make_v1(path: Path, *, data: str = '{"application":{"a":1}}', version: int = 7,
            meta: str | None = "1") -> None:
    """A database as pycascadeui with schema version 1 left it (WAL, no journal table)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE [cascadeui_state] ([id] INTEGER PRIMARY KEY, "
                     "[data] TEXT NOT NULL, [version] INTEGER NOT NULL, "
                     "[updated_at] FLOAT NOT NULL)")
        conn.execute("INSERT INTO cascadeui_state VALUES (1, ?, ?, 1700000000.0)",
                     (data, version))
        if meta is not None:
            conn.execute("CREATE TABLE [cascadeui_meta] ([key] TEXT PRIMARY KEY, [value] TEXT)")
            conn.execute("INSERT INTO cascadeui_meta VALUES ('schema_version', ?)", (meta,))


def tables(path: Path) -> set[str]:
    return {r[0] for r in sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("meta", ["1", None])
def test_a_version_1_database_is_upgraded_in_place(db: Path, meta: str | None) -> None:
    make_v1(db, meta=meta)
    with SQLiteStore(db) as store:
        assert store.load_versioned() == ({"application": {"a": 1}}, 7)
    assert "cascadeui_state_journal" in tables(db)
    assert sql(db, "SELECT value FROM cascadeui_meta WHERE key = 'schema_version'") == [("2",)]
    assert sql(db, "SELECT id, data, version FROM cascadeui_state") == [
        (1, '{"application":{"a":1}}', 7)]
    with SQLiteStore(db) as store:
        assert store.save_changes([(("application", "b"), 2)], 7, full=lambda: "x") == 8
        assert store.load() == {"application": {"a": 1, "b": 2}}


def test_concurrent_openers_upgrade_once(db: Path) -> None:
    make_v1(db)
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def opener() -> None:
        with SQLiteStore(db) as store:
            barrier.wait(timeout=10)
            try:
                results.append(store.load_versioned())
            except Exception as exc:  # reported through the assertion below
                results.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [({"application": {"a": 1}}, 7)] * 8
    assert sql(db, "SELECT count(*) FROM cascadeui_meta") == [(1,)]


@pytest.mark.parametrize("newer", ["3", "99"])
def test_a_newer_schema_is_refused_untouched(db: Path, newer: str) -> None:
    with SQLiteStore(db) as store:
        store.save({"a": 1})
        store.save_changes([(("b",), 2)], 1, full=lambda: "unused")
    sql(db, "UPDATE cascadeui_meta SET value = ? WHERE key = 'schema_version'", (newer,))
    image = dump(db)
    with SQLiteStore(db) as store:
        with pytest.raises(StateCorruptedError, match=f"'{newer}'") as info:
            store.load()
        assert str(db) in str(info.value)
        with pytest.raises(StateCorruptedError):
            store.save_changes([(("c",), 3)], 2, full=lambda: "unused")
    assert dump(db) == image


def test_a_newer_version_1_layout_is_not_upgraded(db: Path) -> None:
    make_v1(db, meta="3")
    image = dump(db)
    with SQLiteStore(db) as store, pytest.raises(StateCorruptedError, match="'3'"):
        store.load()
    assert dump(db) == image
    assert "cascadeui_state_journal" not in tables(db)


def test_a_foreign_table_is_refused_before_any_upgrade(db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        # The right column names, but no INTEGER PRIMARY KEY: not a table cascadeui made.
        conn.execute("CREATE TABLE cascadeui_state (id, data, version, updated_at)")
        conn.execute("INSERT INTO cascadeui_state VALUES (1, 'theirs', 1, 0)")
    image = dump(db)
    with SQLiteStore(db) as store, pytest.raises(StateCorruptedError, match="columns"):
        store.load()
    assert dump(db) == image
    assert sql(db, "PRAGMA journal_mode") == [("delete",)]


@pytest.mark.parametrize("schema", [
    "CREATE TABLE cascadeui_state_journal (seq INTEGER PRIMARY KEY, payload TEXT)",
    "CREATE TABLE cascadeui_state_journal (seq INTEGER PRIMARY KEY, ops TEXT, extra INT)",
    "CREATE VIEW cascadeui_state_journal AS SELECT 1 AS seq, '{}' AS ops",
])
def test_a_journal_table_of_another_shape_is_refused(db: Path, schema: str) -> None:
    make_v1(db)
    sql(db, schema)
    image = dump(db)
    with SQLiteStore(db) as store:
        with pytest.raises(StateCorruptedError, match="journal") as info:
            store.load()
        assert str(db) in str(info.value)
        with pytest.raises(StateCorruptedError):
            store.save({"a": 2})
    assert dump(db) == image


# -- corruption ----------------------------------------------------------------------------


def appended(db: Path) -> SQLiteStore:
    """A store holding a snapshot and three journal rows (versions 2, 3, 4)."""
    store = SQLiteStore(db)
    store.save({"application": {"a": {"x": 1}}})
    for n in range(1, 4):
        assert store.save_changes([(("application", "n"), n)], n, full=lambda: "unused")
    return store


@pytest.mark.parametrize(("ops", "match"), [
    ("garbage, not JSON", "journal record 3"),
    ('{"ops": 5}', "journal record 3"),
    ('{"ops": [[[], 1]]}', "journal record 3"),
    ('{"ops": [[["application", "a", "x", "deeper"], 1]]}', "does not fit"),
    ('{"ops": [[["application", [1]], 1]]}', "does not fit"),
    ("[1, 2]", "journal record 3"),
    (42, "JSON int"),  # TEXT affinity stores it as the text '42'
    (b"\xff\xfe", "journal record 3"),
])
def test_a_corrupt_journal_row_is_never_skipped_or_written_over(
        db: Path, monkeypatch: pytest.MonkeyPatch, ops: Any, match: str) -> None:
    store = appended(db)
    with store:
        sql(db, "UPDATE cascadeui_state_journal SET ops = ? WHERE seq = 3", (ops,))
        bad = sql(db, "SELECT ops FROM cascadeui_state_journal WHERE seq = 3")
        image = dump(db)
        for read in (store.load, store.load_versioned):
            with pytest.raises(StateCorruptedError, match=match) as info:
                read()
            assert info.value.location == f"sqlite:///{db}"
        with pytest.raises(StateCorruptedError), store.transaction() as state:
            state.clear()
        assert dump(db) == image
        # A compaction would replace the unreadable record: refused, nothing written.
        monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 10)
        with pytest.raises(StateCorruptedError, match=match):
            store.save_changes([(("application", "n"), 9)], 4, full=lambda: SER.serialize({}))
        assert dump(db) == image
        # An append leaves the bad record where it is: every load keeps refusing.
        monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 64 * 1024)
        assert store.save_changes([(("application", "n"), 9)], 4, full=lambda: "x") == 5
        with pytest.raises(StateCorruptedError, match=match):
            store.load()
    with SQLiteStore(db) as fresh, pytest.raises(StateCorruptedError, match=match):
        fresh.load()
    assert sql(db, "SELECT ops FROM cascadeui_state_journal WHERE seq = 3") == bad


def test_a_snapshot_rewritten_by_an_older_writer_is_refused(db: Path) -> None:
    """A version-1 process still running rewrites the row and leaves our journal behind."""
    store = appended(db)
    with store:
        sql(db, "UPDATE cascadeui_state SET data = '{\"old\":1}', version = version + 1")
        with pytest.raises(StateCorruptedError, match="not written against"):
            store.load()
        store.save({"fixed": 1})  # a full write replaces both
        assert store.load_versioned() == ({"fixed": 1}, 5)  # after the last seq, 4


@pytest.mark.parametrize("damage", [
    "DELETE FROM cascadeui_state_journal WHERE seq = 3",
    "UPDATE cascadeui_state_journal SET seq = 10 WHERE seq = 4",
    "DELETE FROM cascadeui_state",
    "UPDATE cascadeui_state SET version = 'v'",
])
def test_a_journal_out_of_step_with_its_row_is_refused(db: Path, damage: str) -> None:
    with appended(db) as store:
        sql(db, damage)
        with pytest.raises(StateCorruptedError):
            store.load()


# -- real processes ------------------------------------------------------------------------


@pytest.fixture
def spawner(db: Path) -> Iterator[Callable[[str], list[str]]]:
    """Send a command line to the spawner; get the words of its one-line reply."""
    proc = subprocess.Popen([*worker("journal_sqlite_spawner"), str(db), "4000"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdin is not None
    assert proc.stdout is not None

    def ask(line: str) -> list[str]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        reply = proc.stdout.readline()  # the pytest timeout bounds a hung spawner
        assert reply, proc.stderr.read() if proc.stderr else "the spawner died"
        return reply.split()

    try:
        yield ask
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def acked(path: Path) -> list[str]:
    """Complete lines only: a line is written with one write() after the commit returned."""
    text = path.read_text() if path.exists() else ""
    return text.split("\n")[:-1]


def test_sigkill_while_appending_never_loses_an_acknowledged_commit(
        db: Path, tmp_path: Path, spawner: Callable[[str], list[str]]) -> None:
    rnd = random.Random(2026)
    last = 0
    kills = 20
    for round_ in range(kills):
        ack_path = tmp_path / f"ack{round_}"
        (word, pid_text) = spawner(f"append {ack_path}")
        assert word == "forked"
        pid = int(pid_text)
        try:
            deadline = time.monotonic() + 10
            while not acked(ack_path):  # it has committed at least once
                assert time.monotonic() < deadline, "the appender never acknowledged"
                time.sleep(0.002)
            time.sleep(rnd.uniform(0.0, 0.05))
        finally:
            os.kill(pid, signal.SIGKILL)
        assert spawner(f"reap {pid}") == ["reaped", str(-signal.SIGKILL)]
        seen = int(acked(ack_path)[-1])
        with SQLiteStore(db) as store:
            state, version = store.load_versioned()
        n = state["application"]["n"]
        # Never older than the last acknowledged commit; at most the one in flight newer.
        assert seen <= n <= seen + 1
        assert n > last
        assert state["application"]["log"] == {
            i: ("x" * (i % 50), i) for i in range(1, n + 1)}
        assert version == n  # one commit per value, snapshots and appends alike
        last = n
    rows = journal_rows(db)
    assert len(rows) < last - 1  # the 4 kB budget made it compact along the way
    assert [seq for seq, _ in rows] == list(range(last - len(rows) + 1, last + 1))


def test_two_processes_compare_and_set_exactly(
        db: Path, tmp_path: Path, spawner: Callable[[str], list[str]]) -> None:
    with SQLiteStore(db) as store:
        store.save({"application": {"count": 0}})
    ack_path = tmp_path / "retries"
    assert spawner(f"cas 50 {ack_path}") == ["done", "0", "0"]
    retries = [int(r) for r in acked(ack_path)]
    assert len(retries) == 2
    assert sum(retries) > 0  # they did race: some compare-and-sets lost and retried
    with SQLiteStore(db) as store:
        state, version = store.load_versioned()
    app = state["application"]
    assert app["count"] == 100
    assert version == 101
    assert len(app["p0"]) == len(app["p1"]) == 50
    # Every increment got its own value: no update was lost or applied twice.
    assert sorted([*app["p0"].values(), *app["p1"].values()]) == list(range(1, 101))
