"""Bad input gives a clear, typed error and loses nothing (issue 2).

Load raises a typed error naming the location; ``save_state`` returns False and logs the
reason for a failure of the medium, and raises ``TypeError`` for unstorable data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import socket
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from _registry import build, dump, kinds

from cascadeui._backends import AsyncBackend
from cascadeui.adapters import FileStore, RedisStore, SQLiteStore
from cascadeui.errors import (
    ConfigurationError,
    DurabilityTimeoutError,
    LockTimeoutError,
    PersistenceError,
    SerializationError,
    StateCorruptedError,
    StorageUnavailableError,
    StoreClosedError,
)
from cascadeui.persistence import RedisBackend, backend_from_url

GOOD = {"application": {"n": 1, "when": datetime(2026, 1, 1)}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# -- the file store: corrupt main file, backups, set-aside -----------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not-an-object"])
def test_corrupt_main_file_loads_newest_valid_backup(tmp_path: Path, damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.json"
    with FileStore(path, backups=2) as store:
        store.save({"gen": 1})
        store.save({"gen": 2})
        store.save(GOOD)
        good = path.read_bytes()
        path.write_bytes({"garbage": b"\x00\xffnot json", "truncated": good[: len(good) // 2],
                          "empty": b"", "not-an-object": b"[1, 2]"}[damage])
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            assert store.load() == {"gen": 2}
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert str(path) in warning[0]
    assert f"{path}.bak" in warning[0]


def test_older_backup_used_when_newest_is_also_bad(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.json"
    with FileStore(path, backups=2) as store:
        for gen in (1, 2, 3):
            store.save({"gen": gen})
        path.write_text("{")
        Path(f"{path}.bak").write_text("}")
        with caplog.at_level(logging.WARNING, logger="cascadeui"):
            assert store.load() == {"gen": 1}
    assert f"{path}.bak.1" in caplog.text


def test_nothing_valid_raises_listing_every_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with FileStore(path, backups=2) as store:
        for gen in (1, 2, 3):
            store.save({"gen": gen})
        for p in (path, Path(f"{path}.bak"), Path(f"{path}.bak.1")):
            p.write_bytes(b"\x89PNG garbage")
        with pytest.raises(StateCorruptedError) as info:
            store.load()
    err = info.value
    expected = (str(path), f"{path}.bak", f"{path}.bak.1")
    assert err.tried == expected
    assert all(name in str(err) for name in expected)
    assert isinstance(err, ValueError)
    assert err.location == str(path)


def test_save_sets_corrupt_bytes_aside_and_keeps_good_backup(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with FileStore(path) as store:
        store.save({"gen": 1})
        store.save({"gen": 2})  # .bak = gen 1
    garbage = b'{"gen": 3, "trunc'
    path.write_bytes(garbage)
    with FileStore(path) as store:  # a fresh process: knows nothing about the file
        assert store.load() == {"gen": 1}
        store.save({"gen": 4})
        assert store.load() == {"gen": 4}
    assert Path(f"{path}.bak").read_text() == '{"gen":1}'  # not rotated over
    aside = sorted(tmp_path.glob("s.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage
    assert aside[0].name.startswith("s.json.corrupt-20")


def test_transaction_over_unreadable_state_raises_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("nope")
    with FileStore(path, backups=0) as store, pytest.raises(StateCorruptedError), \
            store.transaction() as st:
        st["x"] = 1  # pragma: no cover - never reached
    assert path.read_text() == "nope"


def test_symlink_at_path_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text('{"a": 1}')
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with FileStore(link) as store:
        with pytest.raises(ConfigurationError, match="symlink") as info:
            store.load()
        assert str(real) in str(info.value)
        with pytest.raises(ConfigurationError, match="symlink"):
            store.save({"a": 2})
    assert real.read_text() == '{"a": 1}'
    assert link.is_symlink()


def test_planted_symlinks_never_redirect_writes(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "s.json"
    with FileStore(path, backups=2) as store:
        store.save({"a": 1})
        Path(f"{path}.bak").symlink_to(victim)
        Path(f"{path}.bak.1").symlink_to(victim)
        store.save({"a": 2})
        store.save({"a": 3})
        assert store.load() == {"a": 3}
    assert victim.read_text() == "precious"
    lock = tmp_path / "t.json.lock"
    lock.symlink_to(victim)
    with FileStore(tmp_path / "t.json") as store, pytest.raises(ConfigurationError):
        store.save({"a": 1})
    assert victim.read_text() == "precious"


def test_lock_timeout_is_typed_and_save_state_returns_false(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import anyio

    path = tmp_path / "s.json"
    holder = FileStore(path)
    waiter = FileStore(path, lock_timeout=0.2)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.transaction():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert entered.wait(10)
        with pytest.raises(LockTimeoutError) as info:
            waiter.save({"a": 1})
        assert info.value.lock == f"{path}.lock"
        assert info.value.timeout == 0.2
        assert isinstance(info.value, TimeoutError)
        with caplog.at_level(logging.ERROR, logger="cascadeui"):
            ok = anyio.run(AsyncBackend(waiter).save_state, {"a": 1})
        assert ok is False
        assert f"{path}.lock" in caplog.text
    finally:
        release.set()
        t.join()
        holder.close()
        waiter.close()


# -- SQLite ----------------------------------------------------------------------------


def _sqlite(path: Path, *sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for stmt in sql:
            conn.execute(stmt)
        conn.commit()
    finally:
        conn.close()


def _save_state(store: Any, state: dict[str, Any]) -> bool:
    import anyio

    return bool(anyio.run(AsyncBackend(store).save_state, state))


@pytest.mark.parametrize("data", ["not json", "[1,2]", "x'00ff'", "42"])
def test_sqlite_garbage_row_names_the_database(tmp_path: Path, data: str) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.save({"a": 1})
    value = data if data.startswith("x'") or data == "42" else f"'{data}'"
    _sqlite(db, f"UPDATE cascadeui_state SET data = {value} WHERE id = 1")
    with SQLiteStore(db) as store:
        with pytest.raises(StateCorruptedError) as info:
            store.load()
        assert str(db) in str(info.value)
        assert info.value.location == f"sqlite:///{db}"
        assert _save_state(store, {"a": 2}) is True  # a save replaces the bad row
        assert store.load() == {"a": 2}


def test_sqlite_wrong_schema_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "s.db"
    _sqlite(db, "CREATE TABLE cascadeui_state (id INTEGER PRIMARY KEY, blob TEXT)",
            "INSERT INTO cascadeui_state VALUES (1, 'theirs')")
    with SQLiteStore(db) as store:
        with pytest.raises(StateCorruptedError, match="columns") as info:
            store.load()
        assert str(db) in str(info.value)
        with caplog.at_level(logging.ERROR, logger="cascadeui"):
            assert _save_state(store, {"a": 1}) is False
    assert str(db) in caplog.text
    assert "columns" in caplog.text
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT * FROM cascadeui_state").fetchall() == [(1, "theirs")]
    conn.close()


def test_sqlite_newer_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.save({"a": 1})
    _sqlite(db, "UPDATE cascadeui_meta SET value = '99' WHERE key = 'schema_version'")
    with SQLiteStore(db) as store, pytest.raises(StateCorruptedError, match="'99'"):
        store.load()


def test_not_a_sqlite_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "s.db"
    junk = b"this is a text file, not a database\n" * 200
    db.write_bytes(junk)
    with SQLiteStore(db) as store:
        with pytest.raises(StateCorruptedError) as info:
            store.load()
        assert str(db) in str(info.value)
        with caplog.at_level(logging.ERROR, logger="cascadeui"):
            assert _save_state(store, {"a": 1}) is False
    assert str(db) in caplog.text
    assert db.read_bytes() == junk


def test_sqlite_missing_directory_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "no" / "such" / "dir" / "s.db"
    with SQLiteStore(db) as store:
        with pytest.raises(StorageUnavailableError) as info:
            store.load()
        assert str(db) in str(info.value)
        assert _save_state(store, {"a": 1}) is False


# -- Redis -----------------------------------------------------------------------------


def test_redis_key_of_wrong_type(redis_url: str, redis_key: str, redis_client: redis.Redis,
                                 caplog: pytest.LogCaptureFixture) -> None:
    redis_client.hset(redis_key, "field", "theirs")
    try:
        with RedisStore(redis_url, key=redis_key) as store:
            with pytest.raises(StateCorruptedError, match="another Redis type") as info:
                store.load()
            assert redis_key in str(info.value)
            with caplog.at_level(logging.ERROR, logger="cascadeui"):
                assert _save_state(store, {"a": 1}) is False
            with pytest.raises(StateCorruptedError), store.transaction():
                pass  # pragma: no cover - never reached
        assert redis_key in caplog.text
        assert redis_client.hgetall(redis_key) == {b"field": b"theirs"}  # not destroyed
        assert not redis_client.exists(f"{redis_key}:lock")
    finally:
        redis_client.delete(redis_key)


@pytest.mark.parametrize("data", [b"not json", b"\xff\xfe", b'{"a": NaN}', b'"text"'])
def test_redis_garbage_in_the_key(redis_url: str, redis_key: str, redis_client: redis.Redis,
                                  data: bytes) -> None:
    redis_client.set(redis_key, data)
    try:
        with RedisStore(redis_url, key=redis_key) as store:
            with pytest.raises(StateCorruptedError) as info:
                store.load()
            assert redis_key in str(info.value)
            assert "127.0.0.1" in str(info.value)
    finally:
        redis_client.delete(redis_key)


def test_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    port = _closed_port()
    with RedisStore(f"redis://127.0.0.1:{port}/0", key="k", socket_timeout=1) as store:
        start = time.monotonic()
        with pytest.raises(StorageUnavailableError) as info:
            store.load()
        assert f"127.0.0.1:{port}" in str(info.value)
        assert info.value.location == store.location
        with caplog.at_level(logging.ERROR, logger="cascadeui"):
            assert _save_state(store, {"a": 1}) is False
        assert time.monotonic() - start < 5  # no long retry backoff
    assert f"127.0.0.1:{port}" in caplog.text


# -- unstorable data: TypeError, nothing changes ---------------------------------------


@pytest.mark.parametrize("kind", kinds())
def test_unserializable_state_changes_nothing(kind: str, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    import anyio

    store = build(kind, request, tmp_path)
    bad = {"application": {"ok": 1, "when": Decimal("1.5")}}
    with store:
        store.save(GOOD)
        version = store.version()
        medium = dump(kind, request, tmp_path)
        with pytest.raises(TypeError) as info:
            store.save(bad)
        assert isinstance(info.value, SerializationError)
        assert info.value.path == "state['application']['when']"
        assert "state['application']['when']" in str(info.value)
        with pytest.raises(TypeError, match="when"):
            anyio.run(AsyncBackend(store).save_state, bad)
        with pytest.raises(TypeError), store.transaction() as st:
            st["x"] = object()
        assert store.load() == GOOD
        assert store.version() == version
        assert dump(kind, request, tmp_path) == medium


# -- passwords never leak ----------------------------------------------------------------


def _assert_no_secret(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, text


def test_password_redacted_when_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    import anyio

    secret = "s3cr3t-" + uuid.uuid4().hex[:8]
    port = _closed_port()
    urls = [f"redis://user:{secret}@127.0.0.1:{port}/0",
            f"redis://:{secret}@127.0.0.1:{port}/0",
            f"redis://127.0.0.1:{port}/0?password={secret}"]
    for url in urls:
        backend = RedisBackend(url, key="k")
        with caplog.at_level(logging.DEBUG):
            ok = anyio.run(backend.save_state, {"a": 1})
            with pytest.raises(StorageUnavailableError) as info:
                anyio.run(backend.load_state)
        assert ok is False
        tb = "".join(traceback.format_exception(info.value))
        _assert_no_secret(secret, repr(backend), repr(backend.store), backend.url,
                          backend.location, str(info.value), tb, caplog.text)
        assert "***" in backend.url
        anyio.run(backend.aclose)


def test_password_redacted_with_real_auth(redis_url: str, redis_key: str,
                                          redis_client: redis.Redis) -> None:
    user = f"cascadeui-test-{uuid.uuid4().hex[:8]}"
    secret = "pw-" + uuid.uuid4().hex
    redis_client.acl_setuser(user, enabled=True, passwords=[f"+{secret}"],
                             keys=["*"], commands=["+@all"])
    host = redis_url.split("://", 1)[1]
    try:
        with RedisStore(f"redis://{user}:{secret}@{host}", key=redis_key) as store:
            store.save({"a": 1})
            assert store.load() == {"a": 1}
            _assert_no_secret(secret, repr(store), store.location)
        wrong = "nope-" + uuid.uuid4().hex
        with RedisStore(f"redis://{user}:{wrong}@{host}", key=redis_key) as bad:
            with pytest.raises(StorageUnavailableError) as info:
                bad.load()
            tb = "".join(traceback.format_exception(info.value))
            _assert_no_secret(wrong, str(info.value), tb, repr(bad))
            assert user in str(info.value)
    finally:
        redis_client.acl_deluser(user)
        redis_client.delete(redis_key, f"{redis_key}:version")


def test_password_redacted_in_url_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        backend_from_url("redis://:hunter2@localhost/0?ttl=soon")
    _assert_no_secret("hunter2", str(info.value))
    with pytest.raises(ConfigurationError) as info:
        backend_from_url("ftp://me:hunter2@host/x")
    _assert_no_secret("hunter2", str(info.value))


# -- the error tree ------------------------------------------------------------------------


def test_errors_pickle_with_their_fields() -> None:
    errors: list[PersistenceError] = [
        SerializationError("state['a']: bad", path="state['a']"),
        StateCorruptedError("bad", location="/x", tried=("/x", "/x.bak")),
        StorageUnavailableError("down", location="redis://h:1/0 key='k'"),
        LockTimeoutError("slow", lock="/x.lock", timeout=2.0, location="/x"),
        DurabilityTimeoutError("not stored", timeout=2.5, location="/x"),
        ConfigurationError("url"),
        StoreClosedError("closed", location="/x"),
    ]
    cause = StorageUnavailableError("disk gone", location="/x")
    with_cause = DurabilityTimeoutError("not stored", timeout=2.5, location="/x",
                                        last_error=cause)
    back = pickle.loads(pickle.dumps(with_cause))
    assert (type(back.last_error), str(back.last_error)) == (type(cause), str(cause))
    assert (back.timeout, back.location) == (2.5, "/x")
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert back.__dict__ == err.__dict__
        assert isinstance(back, PersistenceError)


def test_foreign_errors_are_mapped(tmp_path: Path) -> None:
    """The foreign classes we claim to translate come out as ours, with the cause kept."""
    db = tmp_path / "s.db"
    db.write_bytes(b"junk" * 500)
    with SQLiteStore(db) as store, pytest.raises(StateCorruptedError) as info:
        store.load()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    locked = tmp_path / "locked.db"
    with SQLiteStore(locked) as store:
        store.save({"a": 1})
    other = sqlite3.connect(locked, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        with SQLiteStore(locked, timeout=0.1) as store, \
                pytest.raises(LockTimeoutError) as info2:
            store.save({"a": 2})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert isinstance(info2.value.__cause__, sqlite3.OperationalError)
    assert info2.value.lock == f"sqlite:///{locked}"
    path = tmp_path / "s.json"
    path.write_text("{")
    with FileStore(path) as fs, pytest.raises(StateCorruptedError) as info3:
        fs.load()
    chain: list[BaseException] = []
    cause: BaseException | None = info3.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert any(isinstance(c, json.JSONDecodeError) for c in chain), chain


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """Refusing someone else's database must not switch it to WAL (issue 7 note)."""
    path = tmp_path / "theirs.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE cascadeui_state (name TEXT, score INTEGER)")
        conn.execute("INSERT INTO cascadeui_state VALUES ('a', 1)")
        conn.commit()
    with SQLiteStore(path) as store, pytest.raises(StateCorruptedError):
        store.load()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT * FROM cascadeui_state").fetchall() == [("a", 1)]
