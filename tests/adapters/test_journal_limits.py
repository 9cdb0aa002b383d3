"""Whatever loads can be saved (issue 25 item 7).

A journal record with a valid checksum that sets what no whole write could store (a path
past the depth limit, a value or a key nesting past it), appended
with the medium's own tools (a checksummed line, an INSERT, an RPUSH), is refused at load
as damage naming the record: never applied, never dropped. (An integer past the digit
limit does not decode at all: the same limit as the serializer's.)
"""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from _registry import build, kinds

from cascadeui.adapters import FileStore, MemoryStore, PostgresStore, RedisStore, SQLiteStore
from cascadeui.errors import StateCorruptedError
from cascadeui.serializer import MAX_DEPTH, StateSerializer

SER = StateSerializer()


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


#: Records no whole write could store, by what they break.
UNSAVABLE = {
    "path past the depth limit": [[["application", *["k"] * MAX_DEPTH], 1]],
    "value past the depth limit": [[["application", "x"], "DEEP"]],
    "key past the depth limit": [[["application", *["k"] * (MAX_DEPTH - 2), (1, (2, 3))], 1]],
}


def _record(ops: list[list[Any]]) -> str:
    """The record's text, written as any JSON tool would: a "DEEP" value stands for a
    value nesting one level past the limit at its path (too deep for the serializer)."""
    text = SER.serialize({"v": 1, "ops": ops})
    return text.replace('"DEEP"', '{"k":' * (MAX_DEPTH - 1) + "1" + "}" * (MAX_DEPTH - 1))


def _plant(store: Any, request: pytest.FixtureRequest, version: int, text: str) -> None:
    """Append ``text`` as the record of commit ``version + 1``, with the medium's own tools."""
    if isinstance(store, FileStore):
        payload = text.encode()
        with open(store.journal_path, "ab") as fh:
            fh.write(b"%08x %s\n" % (zlib.crc32(payload), payload))
    elif isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        with conn:
            conn.execute(f"INSERT INTO {store.journal_table} (seq, ops) VALUES (?, ?)",
                         (version + 1, text))
        conn.close()
    elif isinstance(store, PostgresStore):
        with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as pg:
            pg.execute(f'INSERT INTO "{store.journal_table}" (seq, ops) VALUES (%s, %s)',
                       (version + 1, text))
    elif isinstance(store, RedisStore):
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        try:
            client.rpush(store.journal_key, text)
            client.incr(store.version_key)
        finally:
            client.close()
    elif isinstance(store, MemoryStore):
        medium = store._medium
        medium.journal.append(text)
        medium.version = version + 1
    else:  # a new backend: say how its journal is appended to
        raise AssertionError(f"no way to plant a record in {type(store).__name__}")


def _journaled(store: Any) -> int:
    """Save a snapshot and append one record: the journal exists; the version."""
    store.save({"application": {"a": 1}})
    version = store.save_changes([(("application", "b"), 2)], store.load_versioned()[1],
                                 full=lambda: SER.serialize({"application": {"a": 1, "b": 2}}))
    assert version is not None
    return int(version)


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("case", sorted(UNSAVABLE))
def test_an_unsavable_record_is_damage_naming_it(kind: str, case: str,
                                                 request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    with build(kind, request, tmp_path) as writer, build(kind, request, tmp_path) as reader:
        version = _journaled(writer)
        assert reader.load_versioned() == ({"application": {"a": 1, "b": 2}}, version)
        _plant(writer, request, version, _record(UNSAVABLE[case]))
        with build(kind, request, tmp_path) as fresh, pytest.raises(
                StateCorruptedError, match=r"record .*no whole write could store") as caught:
            fresh.load()
        assert fresh.location in str(caught.value)
        with pytest.raises(StateCorruptedError, match="no whole write could store"):
            reader.load_changes(version)  # catching up refuses it too
        with build(kind, request, tmp_path) as again, pytest.raises(StateCorruptedError) as twice:
            again.load()  # the record is still there: set aside, never dropped
        assert str(twice.value) == str(caught.value)


@pytest.mark.parametrize("kind", kinds())
def test_a_record_at_the_limits_loads_and_saves_whole(kind: str,
                                                      request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    ops = [[["application", *["k"] * (MAX_DEPTH - 1)], 1],
           [["application", "x"], _deep(MAX_DEPTH - 3)], [["application", "n"], 10 ** 4299]]
    with build(kind, request, tmp_path) as store:
        version = _journaled(store)
        _plant(store, request, version, SER.serialize({"v": 1, "ops": ops}))
    with build(kind, request, tmp_path) as fresh:
        state = fresh.load()
        assert state["application"]["n"] == 10 ** 4299
        fresh.save(state)  # whatever loads can be saved
        assert fresh.load() == state
