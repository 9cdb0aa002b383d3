"""Fuzzing every load path with hostile bytes (issue 7, "Hostile input").

Raw bytes (random, truncated or mutated documents, invalid UTF-8, top-level lists and
numbers, 100,000 levels of nesting, huge integers, duplicate keys, NaN) go through the
serializer, the JSON file (with and without a valid backup), the SQLite row, a foreign
SQLite schema or a file that is not SQLite, and a Redis key of the wrong type or holding
garbage. Every case must end in a value, a typed :class:`PersistenceError` or the valid
backup: never another exception, and never an empty state written over the stored bytes.
"""

from __future__ import annotations

import logging
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from _hostile import (
    FUZZ,
    FUZZ_IO,
    GOOD,
    GOOD_TEXT,
    NAMED,
    SER,
    _mutate,
    assert_savable,
    hostile,
    outcome,
)
from _registry import kinds
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cascadeui._backends import FileStorageBackend
from cascadeui.adapters import FileStore, PostgresStore, RedisStore, SQLiteStore
from cascadeui.errors import PersistenceError, StateCorruptedError
from cascadeui.store import StateStore

# -- the serializer ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_cases_through_the_serializer(name: str) -> None:
    result = outcome(lambda: SER.deserialize(NAMED[name]))
    if name == "duplicate_keys":
        assert result == {"a": 2}  # documented: the last one wins
    elif name in ("empty", "truncated", "invalid_utf8", "bom", "deep_lists", "deep_objects",
                  "deep_tags", "huge_int", "nan", "infinity", "nul", "bad_tag_types",
                  "bad_map", "bad_map_pairs", "bad_date", "bad_zone", "unhashable_set")\
            or name.startswith("top_"):
        assert isinstance(result, StateCorruptedError), name
    assert_savable(result)


@FUZZ
@given(hostile)
def test_serializer_fuzz(data: bytes) -> None:
    for text in (data, data.decode("utf-8", "replace")):
        assert_savable(outcome(lambda t=text: SER.deserialize(t)))  # type: ignore[misc]


# -- the JSON file -------------------------------------------------------------------------


@FUZZ_IO
@given(data=hostile)
@example(data=NAMED["deep_objects"])
@example(data=NAMED["truncated"])
def test_file_main_corrupt_falls_back_to_backup(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "state.json"
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    with FileStore(path, backups=2) as store:
        store.save(GOOD)
        store.save(GOOD)  # .bak holds GOOD as well
        path.write_bytes(data)
        result = outcome(store.load)
        try:
            expected: Any = SER.deserialize(data)
        except StateCorruptedError:
            expected = GOOD  # the backup
        assert result == expected
        assert_savable(result)
        # A save after that never rotates unreadable bytes over the good backup.
        store.save({"application": {"after": 1}})
        assert store.load() == {"application": {"after": 1}}
        assert SER.deserialize((tmp_path / "state.json.bak").read_bytes()) in (GOOD, expected)
        if expected is GOOD:
            aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
            assert [p.read_bytes() for p in aside] == [data]


@FUZZ_IO
@given(data=hostile)
def test_file_without_backup_is_typed_error_and_no_write(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "state.json"
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    path.write_bytes(data)
    with FileStore(path) as store:
        result = outcome(store.load)
        if isinstance(result, PersistenceError):
            assert isinstance(result, StateCorruptedError)
            assert str(path) in str(result)
            assert str(path) in result.tried
            # A read-modify-write never starts from "empty" over unreadable data.
            with pytest.raises(StateCorruptedError), store.transaction() as state:
                state["application"] = {}
            assert path.read_bytes() == data
        assert_savable(result)


def test_backup_fallback_logs_both_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    with FileStore(path) as store:
        store.save(GOOD)
        store.save(GOOD)
        path.write_bytes(NAMED["truncated"])
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            assert store.load() == GOOD
    text = caplog.text
    assert str(path) in text
    assert f"{path}.bak" in text


def test_facade_load_of_corrupt_file_raises_typed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(NAMED["deep_lists"])

    async def main() -> None:
        backend = FileStorageBackend(path)
        with pytest.raises(StateCorruptedError):
            await backend.load_state()
        # The store refuses to start from an empty state over unreadable data.
        store = StateStore()
        with pytest.raises(StateCorruptedError):
            await store.enable_persistence(backend)
        assert store.backend is None
        await backend.aclose()

    anyio.run(main)
    assert path.read_bytes() == NAMED["deep_lists"]


# -- SQLite --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_row(tmp_path: Path) -> Iterator[tuple[SQLiteStore, Path]]:
    path = tmp_path / "state.db"
    with SQLiteStore(path) as store:
        store.save(GOOD)
        yield store, path


def _poke(path: Path, value: Any, sql: str = "UPDATE cascadeui_state SET data = ? WHERE id = 1",
          ) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, (value,))
    finally:
        conn.close()


def _assert_refused_and_kept(store: SQLiteStore, path: Path, query: str,
                             stored: list[tuple[Any, ...]]) -> None:
    """A load either works (and the state saves again) or raises; then a transaction
    refuses too and ``query`` still finds the bytes that could not be read."""
    result = outcome(store.load)
    if isinstance(result, PersistenceError):
        with pytest.raises(PersistenceError), store.transaction() as state:
            state.clear()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute(query).fetchall() == stored
        finally:
            conn.close()
    assert_savable(result)


@FUZZ_IO
@given(data=hostile, as_text=st.booleans())
def test_sqlite_row_fuzz(sqlite_row: tuple[SQLiteStore, Path], data: bytes,
                         as_text: bool) -> None:
    store, path = sqlite_row
    value: Any = data.decode("utf-8", "replace") if as_text else data
    _poke(path, value)
    _assert_refused_and_kept(store, path, "SELECT data FROM cascadeui_state", [(value,)])


@pytest.mark.parametrize("sql", [
    "UPDATE cascadeui_state SET data = 12345 WHERE id = 1",
    "UPDATE cascadeui_state SET data = 1.5 WHERE id = 1",
    "UPDATE cascadeui_state SET data = CAST(X'FFFE7B7D' AS TEXT) WHERE id = 1",
    "UPDATE cascadeui_state SET data = ? WHERE id = 1",
])
def test_sqlite_row_of_wrong_type(sqlite_row: tuple[SQLiteStore, Path], sql: str) -> None:
    store, path = sqlite_row
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, (NAMED["deep_objects"].decode(),) if "?" in sql else ())
    finally:
        conn.close()
    with pytest.raises(PersistenceError):
        store.load()


@pytest.mark.parametrize("schema", [
    "CREATE TABLE cascadeui_state (id INTEGER PRIMARY KEY, payload TEXT)",
    "CREATE TABLE cascadeui_state (data TEXT)",
    "CREATE VIEW cascadeui_state AS SELECT 1 AS id, 'x' AS data",
    "CREATE TABLE cascadeui_state (id, data, version, updated_at);"
    " INSERT INTO cascadeui_state VALUES (1, x'00ff', 'v', 'never')",
])
def test_sqlite_foreign_schema(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(schema)
    conn.close()
    before = _dump(path)
    with SQLiteStore(path) as store:
        with pytest.raises(PersistenceError):
            store.load()
        with pytest.raises(PersistenceError):
            store.save(GOOD)
    assert _dump(path) == before  # the foreign table and its rows are untouched


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize("content", [
    b"not a database at all " * 20, NAMED["deep_lists"][:4096], GOOD_TEXT * 10,
    b"SQLite format 3\x00" + b"\xff" * 4080,
])
def test_file_that_is_not_sqlite(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with SQLiteStore(path) as store:
        with pytest.raises(PersistenceError) as info:
            store.load()
        assert str(path) in str(info.value)
        with pytest.raises(PersistenceError):
            store.save(GOOD)
    assert path.read_bytes() == content


def test_truncated_and_damaged_sqlite_files(tmp_path: Path) -> None:
    src = tmp_path / "good.db"
    with SQLiteStore(src) as store:
        store.save({"application": {"blob": "x" * 20_000}})
    image = src.read_bytes()
    rnd = random.Random(7)
    cuts = [100, 512, 4096, len(image) // 2, len(image) - 1]
    damaged = [image[:n] for n in cuts] + [_mutate(image, rnd) for _ in range(15)]
    typed = 0
    for i, content in enumerate(damaged):
        path = tmp_path / f"d{i}.db"
        path.write_bytes(content)
        with SQLiteStore(path) as store:
            result = outcome(store.load)
        typed += isinstance(result, PersistenceError)
        assert_savable(result)
    assert typed >= 1  # at least the short truncations are rejected


def test_garbage_wal_file_is_ignored_or_typed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SQLiteStore(path) as store:
        store.save(GOOD)
    Path(f"{path}-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(range(256)) * 20)
    with SQLiteStore(path) as store:
        result = outcome(store.load)
    assert result == GOOD or isinstance(result, PersistenceError)


# -- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_store(redis_url: str, redis_key: str) -> Iterator[tuple[RedisStore, redis.Redis]]:
    raw = redis.Redis.from_url(redis_url)
    with RedisStore(redis_url, key=redis_key, lock_timeout=0.5) as store:
        try:
            yield store, raw
        finally:
            raw.delete(redis_key, f"{redis_key}:version", f"{redis_key}:lock")
            raw.close()


@FUZZ_IO
@given(data=hostile)
def test_redis_garbage_value(redis_store: tuple[RedisStore, redis.Redis], data: bytes) -> None:
    store, raw = redis_store
    raw.set(store.key, data)
    result = outcome(store.load)
    if isinstance(result, PersistenceError):
        assert isinstance(result, StateCorruptedError)
        assert store.key in str(result)
        with pytest.raises(StateCorruptedError), store.transaction() as state:
            state.clear()
        assert raw.get(store.key) == data
    assert_savable(result)


@pytest.mark.parametrize("kind", ["list", "hash", "set", "zset", "stream"])
def test_redis_key_of_wrong_type(redis_store: tuple[RedisStore, redis.Redis], kind: str) -> None:
    store, raw = redis_store
    key = store.key
    {"list": lambda: raw.rpush(key, "a"), "hash": lambda: raw.hset(key, "a", "b"),
     "set": lambda: raw.sadd(key, "a"), "zset": lambda: raw.zadd(key, {"a": 1.0}),
     "stream": lambda: raw.xadd(key, {"a": "b"})}[kind]()
    with pytest.raises(StateCorruptedError, match="another Redis type"):
        store.load()
    with pytest.raises(PersistenceError), store.transaction() as state:
        state.clear()
    assert raw.type(key).decode() == kind


@pytest.mark.parametrize("name", ["deep_lists", "huge_int", "nan", "top_list"])
def test_redis_named_cases(redis_store: tuple[RedisStore, redis.Redis], name: str) -> None:
    store, raw = redis_store
    raw.set(store.key, NAMED[name])
    with pytest.raises(StateCorruptedError):
        store.load()


def test_redis_garbage_version_key_is_typed(redis_store: tuple[RedisStore, redis.Redis],
                                            ) -> None:
    store, raw = redis_store
    store.save(GOOD)
    raw.set(store.version_key, b"\xffnot-a-number")
    assert store.load() == GOOD
    with pytest.raises(StateCorruptedError, match="version"):
        store.version()
    with pytest.raises(PersistenceError):  # INCR refuses; typed, and the document is kept
        store.save({"other": 1})
    assert store.load() == GOOD


# -- setup_persistence over every medium holding garbage -----------------------------------


@pytest.mark.parametrize("medium", kinds("multiprocess"))  # every medium garbage can sit on
def test_setup_persistence_never_writes_empty_over_garbage(
        medium: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from cascadeui import setup_persistence
    from cascadeui._backends import AsyncBackend

    garbage = NAMED["truncated"]
    if medium == "file":
        path = tmp_path / "state.json"
        path.write_bytes(garbage)
        adapter: Any = FileStore(path)

        def stored() -> Any:
            return path.read_bytes()
    elif medium == "sqlite":
        path = tmp_path / "state.db"
        with SQLiteStore(path) as first:
            first.save(GOOD)
        _poke(path, garbage.decode())
        adapter = SQLiteStore(path)

        def stored() -> Any:
            conn = sqlite3.connect(path)
            try:
                return conn.execute("SELECT data FROM cascadeui_state").fetchall()
            finally:
                conn.close()
    elif medium == "postgres":
        import psycopg

        url, table = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table")
        with PostgresStore(url, table=table) as first:
            first.save(GOOD)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'UPDATE "{table}" SET data = %s WHERE id = 1', (garbage.decode(),))
        adapter = PostgresStore(url, table=table)

        def stored() -> Any:
            with psycopg.connect(url, autocommit=True) as conn:
                return conn.execute(f'SELECT data FROM "{table}" ORDER BY id').fetchall()
    else:
        url, key = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_key")
        raw = redis.Redis.from_url(url)
        raw.set(key, garbage)
        adapter = RedisStore(url, key=key)

        def stored() -> Any:
            return raw.get(key)

    before = stored()
    store = StateStore()

    async def main() -> None:
        backend = AsyncBackend(adapter)
        with pytest.raises(StateCorruptedError):
            await setup_persistence(backend=backend, store=store)
        await store.dispatch("APPLICATION_SET", {"path": ["x"], "value": 1})
        assert await store.flush() is False  # persistence was never enabled
        await backend.aclose()

    anyio.run(main)
    assert stored() == before
    if medium == "redis":
        raw.delete(request.getfixturevalue("redis_key"))
        raw.close()


# -- Redis change journal (issue 6) --------------------------------------------------------


#: Record-shaped ops whose paths run through GOOD's dicts, leaves, tags and missing keys.
_redis_paths = st.lists(st.sampled_from(["application", "guild", 123, "tags", "n", "x",
                                         (1, 2), None]), min_size=1, max_size=4)
_redis_records = st.lists(
    _redis_paths.flatmap(lambda p: st.just([p]) | st.integers().map(lambda v: [p, v])),
    max_size=3).map(lambda ops: SER.serialize({"ops": ops}).encode())


@FUZZ_IO
@given(data=hostile | _redis_records)
def test_redis_garbage_journal_record(redis_store: tuple[RedisStore, redis.Redis],
                                      data: bytes) -> None:
    """A hostile record pushed after a good snapshot, behind the version counter's back: a
    typed error naming the journal (the counter says the journal holds no record, issue
    11), never a partial state, and the record is kept; with no lineage key (an earlier
    build's state) the snapshot with the record applied, or that typed error."""
    from cascadeui.adapters._journal import apply_record, decode_record

    expected: dict[str, Any] | None = SER.deserialize(GOOD_TEXT)
    try:
        apply_record(expected, decode_record(SER, data))  # the reference
    except StateCorruptedError:
        expected = None
    store, raw = redis_store
    try:
        for legacy in (False, True):
            store.save(GOOD)
            if legacy:
                raw.delete(store.lineage_key)
            raw.rpush(store.journal_key, data)
            result = outcome(store.load)
            if isinstance(result, PersistenceError):
                assert expected is None or not legacy
                assert isinstance(result, StateCorruptedError)
                assert store.journal_key in str(result)
                with pytest.raises(StateCorruptedError), store.transaction() as state:
                    state.clear()
                assert raw.lrange(store.journal_key, 0, -1) == [data]
            else:
                assert legacy
                assert result == expected
            assert_savable(result)
    finally:
        raw.delete(store.journal_key)


# -- SQLite change journal -------------------------------------------------------------------

_keys = st.text(max_size=3) | st.integers(-3, 300) | st.none() | st.booleans()
_values = st.recursive(st.integers() | st.text(max_size=5) | st.none(),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
_ops = st.lists(st.tuples(st.lists(_keys, max_size=4), st.booleans(), _values).map(
    lambda t: [t[0], t[2]] if t[1] else [t[0]]), max_size=4)
#: Records of the right shape with random paths (through lists, ints, missing keys...)
#: and plain hostile bytes.
journal_records = hostile | _ops.map(lambda ops: SER.serialize({"ops": ops}).encode())
#: Generating records is slower than raw bytes: a loaded CI machine must not fail on it.
FUZZ_JOURNAL = settings(FUZZ_IO, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ_JOURNAL
@given(data=journal_records, as_text=st.booleans())
def test_sqlite_journal_record_fuzz(sqlite_row: tuple[SQLiteStore, Path], data: bytes,
                                    as_text: bool) -> None:
    store, path = sqlite_row
    store.save(GOOD)  # a full write: an empty journal for each example
    version = store.version()
    assert store.save_changes([(("application", "name"), "x")], version,
                              full=lambda: "unused") == version + 1
    value: Any = data.decode("utf-8", "replace") if as_text else data
    _poke(path, value, "UPDATE cascadeui_state_journal SET ops = ?")
    _assert_refused_and_kept(store, path, "SELECT ops FROM cascadeui_state_journal",
                             [(value,)])
