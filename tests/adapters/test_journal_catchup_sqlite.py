"""SQLiteStore.load_changes: catching up with another store's commits from the journal.

Two stores on one real database file, as two processes would have; the concurrency test
appends from another thread (its own connection) while this one reads.
"""

from __future__ import annotations

import contextlib
import copy
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cascadeui.adapters import SQLiteStore
from cascadeui.adapters import _journal as journal
from cascadeui.errors import StateCorruptedError
from cascadeui.serializer import StateSerializer

SER = StateSerializer()
JOURNAL = "cascadeui_state_journal"


def sql(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """One statement on a separate connection, committed."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(query, params).fetchall()


def no_full() -> str:
    raise AssertionError("this append must not compact")


def append(store: SQLiteStore, value: Any, expected: int) -> int:
    """One commit setting application.n, as the engine appends it."""
    version = store.save_changes([(("application", "n"), value)], expected, full=no_full)
    assert version == expected + 1
    return version


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    with SQLiteStore(path) as seed:
        seed.save({"application": {"keep": {"big": list(range(50))}}, "sessions": {}})
    return path


def test_the_records_since_a_version_are_returned_in_order(db: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        state, since = b.load_versioned()
        version = since
        for i in range(7):
            version = append(a, i, version)
        found = b.load_changes(since)
        assert found is not None
        records, at = found
        assert records == [[[["application", "n"], i]] for i in range(7)]
        assert at == version == b.version()
        for ops in records:
            journal.apply_record(state, ops)
        assert state == b.load() == a.load()


def test_a_catch_up_from_a_later_version_returns_only_the_newer_records(db: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        _, version = b.load_versioned()
        for i in range(3):
            version = append(a, i, version)
        middle = version
        for i in range(3, 5):
            version = append(a, i, version)
        assert b.load_changes(middle) == ([[[["application", "n"], 3]],
                                           [[["application", "n"], 4]]], version)


def test_nothing_new_is_an_empty_list_at_the_same_version(db: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        _, since = b.load_versioned()
        assert b.load_changes(since) == ([], since)  # an empty journal
        version = append(a, 1, since)
        assert b.load_changes(version) == ([], version)  # at the journal's end


def test_the_reader_can_append_at_the_version_it_caught_up_to(db: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        state, since = b.load_versioned()
        version = append(a, 1, since)
        assert b.save_changes([(("application", "m"), "b")], since,
                              full=no_full) is None  # stale: it must catch up
        found = b.load_changes(since)
        assert found is not None
        records, at = found
        assert at == version
        for ops in records:
            journal.apply_record(state, ops)
        assert b.save_changes([(("application", "m"), "b")], at,
                              full=no_full) == at + 1
        state["application"]["m"] = "b"
        assert a.load_versioned() == (state, at + 1)


@pytest.mark.parametrize("how", ["save", "save_if_version", "transaction", "compaction"])
def test_after_a_full_write_the_caller_loads_the_document(
        db: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        state, since = b.load_versioned()
        version = append(a, 1, since)
        new = copy.deepcopy(state)
        new["application"]["n"] = 2
        if how == "save":
            a.save(new)
        elif how == "save_if_version":
            assert a.save_if_version(new, version) == version + 1
        elif how == "transaction":
            with a.transaction() as current:
                current["application"]["n"] = 2
        else:
            monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 1)
            monkeypatch.setattr(journal, "JOURNAL_RATIO", 0.0)
            assert a.save_changes([(("application", "n"), 2)], version,
                                  full=lambda: SER.serialize(new)) == version + 1
            monkeypatch.undo()
        assert sql(db, f"SELECT count(*) FROM {JOURNAL}") == [(0,)]
        assert b.load_changes(since) is None
        assert b.load_changes(version) is None  # a record before the full write, gone
        assert b.load_changes(version + 1) == ([], version + 1)  # the full write itself
        assert b.load_versioned() == (new, version + 1)
        # The journal after a full write is read from the new snapshot's version on.
        last = append(a, 3, version + 1)
        assert b.load_changes(version + 1) == ([[[["application", "n"], 3]]], last)
        assert b.load_changes(since) is None


def test_a_future_version_or_an_empty_table_cannot_be_placed(db: Path,
                                                             tmp_path: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        _, since = b.load_versioned()
        assert b.load_changes(since + 1) is None
        version = append(a, 1, since)
        assert b.load_changes(version + 1) is None
        assert b.load_changes(version + 100) is None
    with SQLiteStore(tmp_path / "empty.db") as empty:
        assert empty.load_changes(0) is None
        assert empty.load_changes(3) is None


def test_an_undecodable_record_is_corruption_naming_it(db: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        _, since = b.load_versioned()
        version = append(a, 1, since)
        sql(db, f"INSERT INTO {JOURNAL} (seq, ops) VALUES (?, ?)", (version + 1, "{not json"))
        with pytest.raises(StateCorruptedError,
                           match=rf"journal record {version + 1} in '{JOURNAL}'"):
            b.load_changes(since)
        # A record before `since` is not read: the one after it is what matters here.
        assert b.load_changes(version + 1) == ([], version + 1)
        sql(db, f"UPDATE {JOURNAL} SET ops = ? WHERE seq = ?",
            ('{"ops": [["not a path"]]}', version + 1))
        with pytest.raises(StateCorruptedError, match=rf"journal record {version + 1}"):
            b.load_changes(version)
        sql(db, f"UPDATE {JOURNAL} SET ops = ? WHERE seq = ?", (b"\x00\xff", version + 1))
        with pytest.raises(StateCorruptedError, match=rf"journal record {version + 1}"):
            b.load_changes(version)


@pytest.mark.parametrize("damage", ["gap", "missing_first", "starts_late", "row_behind"])
def test_a_journal_out_of_step_is_corruption(db: Path, damage: str) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        _, since = b.load_versioned()
        version = since
        for i in range(4):
            version = append(a, i, version)
        if damage == "gap":  # a record after `since` removed
            sql(db, f"DELETE FROM {JOURNAL} WHERE seq = ?", (since + 2,))
        elif damage == "missing_first":  # the first record (before `at`) removed
            sql(db, f"DELETE FROM {JOURNAL} WHERE seq = ?", (since + 1,))
            since += 2
        elif damage == "starts_late":  # the journal does not follow the snapshot
            sql(db, f"UPDATE {JOURNAL} SET seq = seq + 10")
            since = version + 10 - 1
        else:  # the row's version moved back under its journal
            sql(db, "UPDATE cascadeui_state SET version = version - 1")
        with pytest.raises(StateCorruptedError, match="not its unbroken sequel"):
            b.load_changes(since)
        with pytest.raises(StateCorruptedError):  # a whole load refuses it too
            b.load_versioned()


def test_a_version_that_is_not_a_number_is_corruption(db: Path) -> None:
    sql(db, "UPDATE cascadeui_state SET version = 'x'")
    with SQLiteStore(db) as b, pytest.raises(StateCorruptedError, match="not a number"):
        b.load_changes(1)


def test_the_compaction_budget_stays_known_after_a_catch_up(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def measured() -> tuple[int, int]:
        ((journal_bytes, snapshot_bytes),) = sql(
            db, f"SELECT (SELECT coalesce(sum(length(CAST(ops AS BLOB))), 0) FROM {JOURNAL}),"
            " (SELECT length(CAST(data AS BLOB)) FROM cascadeui_state)")
        return journal_bytes, snapshot_bytes

    with SQLiteStore(db) as a, SQLiteStore(db) as b, SQLiteStore(db) as c:
        state, since = b.load_versioned()
        version = append(a, "é" * 5, since)  # non-ASCII: bytes, not characters
        version = append(a, 2, version)
        assert b.load_changes(since) is not None
        assert b._sizes is not None
        assert (b._sizes.version, b._sizes.journal_bytes, b._sizes.snapshot_bytes) == (
            version, *measured())
        assert c.load_changes(since) is not None  # c never read the document whole
        assert c._sizes is None

        # b's cached budget now drives the compaction of its next append.
        journal_bytes, snapshot_bytes = measured()
        monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", journal_bytes + 40)
        assert snapshot_bytes * journal.JOURNAL_RATIO < journal_bytes + 40
        measures: list[int] = []
        real = SQLiteStore._budget_at

        def counted(self: SQLiteStore, conn: Any,
                    at: int) -> tuple[journal.Budget, bool]:
            result = real(self, conn, at)
            measures.append(result[1])
            return result

        monkeypatch.setattr(SQLiteStore, "_budget_at", counted)
        state["application"]["n"] = "x" * 60
        assert b.save_changes([(("application", "n"), "x" * 60)], version,
                              full=lambda: SER.serialize(state)) == version + 1
        assert measures == [True]  # known: no measuring, no check-by-decoding
        assert sql(db, f"SELECT count(*) FROM {JOURNAL}") == [(0,)]
        assert a.load_versioned() == (state, version + 1)


def test_a_catch_up_reads_one_commit_while_another_connection_appends(db: Path) -> None:
    """Records and version come from one read transaction, never from two commits."""
    with SQLiteStore(db) as seed:
        _, start = seed.load_versioned()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            with SQLiteStore(db) as w:
                version = start
                for _ in range(1000):  # each holds the version it makes; 37 kB: never compacts
                    version = append(w, version + 1, version)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    catch_ups = 0
    try:
        with SQLiteStore(db) as reader:
            state, since = reader.load_versioned()
            deadline = time.monotonic() + 20
            while not done.is_set() and time.monotonic() < deadline:
                found = reader.load_changes(since)
                if found is None:  # only a compaction could do this: reload whole
                    state, since = reader.load_versioned()
                    continue
                records, at = found
                assert at >= since
                assert records == [[[["application", "n"], v]]
                                   for v in range(since + 1, at + 1)]
                for ops in records:
                    journal.apply_record(state, ops)
                since = at
                catch_ups += bool(records)
            found = reader.load_changes(since)
            assert found is not None
            for ops in found[0]:
                journal.apply_record(state, ops)
            assert (state, found[1]) == reader.load_versioned()
    finally:
        thread.join(timeout=30)
    assert errors == []
    assert catch_ups > 5
