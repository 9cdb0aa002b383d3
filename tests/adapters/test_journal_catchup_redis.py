"""RedisStore.load_changes: catching up with another store's commits from the journal.

Two stores on one key of the session's real redis-server: one appends, the other reads
just the records after the version it holds, or None when the journal no longer has them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import cascadeui.adapters._journal as journal
import pytest
import redis

from cascadeui.adapters import RedisStore
from cascadeui.errors import StateCorruptedError
from cascadeui.serializer import StateSerializer

SER = StateSerializer()


@pytest.fixture
def pair(redis_url: str, redis_key: str,
         raw: redis.Redis) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Writer A and reader B on one key, holding ``{"application": {"n": -1}}`` at 1."""
    with RedisStore(redis_url, key=redis_key) as a, RedisStore(redis_url, key=redis_key) as b:
        a.save({"application": {"n": -1}, "pad": "p" * 200})
        yield a, b


def whole(doc: dict[str, Any]) -> Callable[[], str]:
    return lambda: SER.serialize(doc)


def append(store: RedisStore, version: int, count: int, start: int = 0) -> int:
    """``count`` appends of ``application.n`` by ``store``; the last version."""
    for i in range(start, start + count):
        result = store.save_changes([(("application", "n"), i)], version, full=whole({}))
        assert result == version + 1
        version = result
    return version


def applied(state: dict[str, Any], records: list[list[list[Any]]]) -> dict[str, Any]:
    for ops in records:
        journal.apply_record(state, ops)
    return state


def test_reads_exactly_the_new_records(pair: tuple[RedisStore, RedisStore],
                                       raw: redis.Redis) -> None:
    a, b = pair
    state, since = b.load_versioned()
    version = append(a, since, 7)
    found = b.load_changes(since)
    assert found is not None
    records, at = found
    assert records == [[[["application", "n"], i]] for i in range(7)]
    assert at == version == b.version()
    assert applied(state, records) == a.load()
    assert b.load_changes(at) == ([], at)
    # The budget's cache followed: B appends against the caught-up version.
    assert b.save_changes([(("application", "m"), 1)], at, full=whole({})) == at + 1
    assert raw.llen(b.journal_key) == 8  # an append, not a rewrite
    assert applied(state, [[[["application", "m"], 1]]]) == a.load()


def test_catching_up_twice_gives_no_duplicates(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    state, since = b.load_versioned()
    append(a, since, 3)
    first = b.load_changes(since)
    assert first is not None
    assert len(first[0]) == 3
    version = append(a, first[1], 2, start=3)
    second = b.load_changes(first[1])
    assert second == ([[[["application", "n"], 3]], [[["application", "n"], 4]]], version)
    assert applied(applied(state, first[0]), second[0]) == a.load()
    assert b.load_changes(version) == ([], version)


def test_a_store_that_never_read_catches_up_then_appends(
        redis_url: str, redis_key: str, pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    state, since = b.load_versioned()
    version = append(a, since, 2)
    with RedisStore(redis_url, key=redis_key) as cold:
        found = cold.load_changes(since)
        assert found is not None
        assert found[1] == version
        assert applied(state, found[0]) == a.load()
        assert cold.save_changes([(("x",), 1)], version, full=whole({})) == version + 1


def test_none_after_a_full_write(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    _, since = b.load_versioned()
    version = append(a, since, 2)
    a.save({"application": {"n": 9}})
    assert b.load_changes(since) is None
    assert b.load_changes(version) is None
    assert b.load_changes(version + 1) == ([], version + 1)  # the full write's version
    append(a, version + 1, 2)
    assert b.load_changes(version) is None  # appends after it do not bring them back


def test_none_after_a_compaction(pair: tuple[RedisStore, RedisStore], raw: redis.Redis,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    _, since = b.load_versioned()
    monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 100)
    version = since
    while True:
        version = append(a, version, 1)
        if not raw.exists(a.journal_key):
            break
    assert version > since + 1
    assert b.load_changes(since) is None
    assert b.load_changes(version) == ([], version)


def test_none_for_a_future_version(pair: tuple[RedisStore, RedisStore]) -> None:
    _, b = pair
    _, since = b.load_versioned()
    assert b.load_changes(since + 1) is None
    assert b.load_changes(-1) is None


def test_none_when_the_key_was_deleted(pair: tuple[RedisStore, RedisStore],
                                       raw: redis.Redis) -> None:
    a, b = pair
    _, since = b.load_versioned()
    append(a, since, 2)
    raw.delete(a.key)
    assert b.load_changes(since) is None
    assert b.load_changes(since + 2) is None  # even at the current version
    raw.delete(a.journal_key, a.version_key)
    assert b.load_changes(since) is None
    assert b.load_changes(0) == ([], 0)  # nothing stored: nothing changed since 0


def test_garbage_record_after_since_is_corruption(pair: tuple[RedisStore, RedisStore],
                                                  raw: redis.Redis) -> None:
    a, b = pair
    _, since = b.load_versioned()
    append(a, since, 2)
    raw.rpush(a.journal_key, b'{"ops": [[["a"], 1]')  # truncated, and counted
    raw.incr(a.version_key)
    with pytest.raises(StateCorruptedError, match=r":journal'? record 2 of 3") as caught:
        b.load_changes(since)
    assert a.key in str(caught.value)
    assert raw.llen(a.journal_key) == 3  # reported, never dropped


def test_records_pushed_behind_the_versions_back(pair: tuple[RedisStore, RedisStore],
                                                 raw: redis.Redis) -> None:
    """A store that read ``since`` sees the journal is not the one it read: None."""
    a, b = pair
    _, since = b.load_versioned()
    append(a, since, 1)
    raw.rpush(a.journal_key, SER.serialize({"ops": [[["x"], 1]]}))  # no INCR
    assert b.load_changes(since) is None  # not the last record alone: load it all
    assert raw.llen(a.journal_key) == 2
