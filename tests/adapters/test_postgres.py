"""PostgresStore on a real server (issue 13): layout, journal, locking, typed errors,
redaction, a client killed mid-transaction, a server restarted.

The session's database is created with a random name and dropped at the end (conftest);
each test uses its own table. The restart test starts a private server of its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _helpers import JournalWriter
from _spawn import module, script, script_env, worker
from kit.postgres_server import PostgresServer, find_binaries, with_database

from cascadeui._backends import PostgresBackend
from cascadeui.adapters import PostgresStore
from cascadeui.adapters import _postgres_store as postgres_store
from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.persistence import backend_from_url

SECRET = "s3cr3t-Pw"


@pytest.fixture
def store(postgres_url: str, pg_table: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_url, table=pg_table) as s:
        yield s


@pytest.fixture
def sql(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection to the session's database."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def dead_url(password: str = SECRET) -> str:
    """A URL whose port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://cascade:{password}@127.0.0.1:{port}/nowhere"


# -- layout and journal ------------------------------------------------------------------


def test_layout_is_the_documented_row_and_journal(store: PostgresStore, pg_table: str,
                                                  sql: psycopg.Connection[Any]) -> None:
    store.save({"application": {"a": 1}})
    rows = sql.execute(f"SELECT id, data, version FROM {pg_table} ORDER BY id").fetchall()
    # Row 0 holds the lineage id (issue 20): the state is row 1, as every build reads it.
    assert rows[1:] == [(1, store.serializer.serialize({"application": {"a": 1}}), 1)]
    assert rows[0][0] == 0
    assert rows[0][2] == 0
    assert re.fullmatch("[0-9a-f]{16}", rows[0][1])
    comment = sql.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                          (pg_table,)).fetchone()
    assert comment == (f"cascadeui state table, schema {postgres_store.SCHEMA_VERSION}",)
    writer = JournalWriter(store)
    assert writer.commit([(("application", "b"), 2)]) == 2
    assert sql.execute(f"SELECT seq FROM {pg_table}_journal").fetchall() == [(2,)]
    assert sql.execute(f"SELECT version FROM {pg_table} WHERE id = 1").fetchone() == (1,)
    assert store.load_versioned() == ({"application": {"a": 1, "b": 2}}, 2)
    assert store.load_changes(1) == ([[[["application", "b"], 2]]], 2)
    assert store.load_changes(0) is None  # before the snapshot: load it whole
    store.save({"x": {}})  # a full write empties the journal in the same transaction
    assert sql.execute(f"SELECT count(*) FROM {pg_table}_journal").fetchone() == (0,)
    assert store.version() == 3


def test_journal_compacts_past_its_budget(store: PostgresStore, pg_table: str,
                                          sql: psycopg.Connection[Any]) -> None:
    store.save({"application": {}})
    writer = JournalWriter(store)
    for i in range(200):  # 200 x ~1 KB > the 64 KB minimum budget
        assert writer.commit([(("application", f"k{i}"), "x" * 1000)]) is not None
    assert writer.fulls >= 1
    journal = sql.execute(f"SELECT coalesce(sum(octet_length(ops)), 0) FROM {pg_table}_journal"
                          ).fetchone()[0]
    assert journal <= 64 * 1024
    assert store.load() == writer.doc


def test_stale_expected_version_writes_nothing(store: PostgresStore) -> None:
    store.save({"a": {}})
    assert store.save_if_version({"b": {}}, 0) is None
    assert store.save_changes([(("a", "x"), 1)], 0, full=lambda: "{}") is None
    assert store.load_versioned() == ({"a": {}}, 1)


def test_hand_edited_journal_is_refused(store: PostgresStore, pg_table: str,
                                        sql: psycopg.Connection[Any]) -> None:
    store.save({"a": {}})
    sql.execute(f"INSERT INTO {pg_table}_journal VALUES (5, '{{\"ops\": []}}')")
    with pytest.raises(StateCorruptedError, match="not written against it"):
        store.load()
    with pytest.raises(StateCorruptedError, match="unbroken sequel"):
        store.load_changes(1)
    sql.execute(f"DELETE FROM {pg_table}_journal")
    sql.execute(f"INSERT INTO {pg_table}_journal VALUES (2, 'not json')")
    with pytest.raises(StateCorruptedError, match="journal record 2"):
        store.load()


def test_two_processes_creating_the_tables_at_once(postgres_url: str, pg_table: str) -> None:
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            with PostgresStore(postgres_url, table=pg_table) as s:
                s.version()
        except BaseException as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- not ours ------------------------------------------------------------------------------


def test_foreign_table_is_refused_and_untouched(postgres_url: str, pg_table: str,
                                                sql: psycopg.Connection[Any]) -> None:
    sql.execute(f"CREATE TABLE {pg_table} (id integer PRIMARY KEY, name text)")
    sql.execute(f"INSERT INTO {pg_table} VALUES (1, 'theirs')")
    with PostgresStore(postgres_url, table=pg_table) as s, \
            pytest.raises(StateCorruptedError, match="not a cascadeui table"):
        s.load()
    assert sql.execute(f"SELECT * FROM {pg_table}").fetchall() == [(1, "theirs")]
    assert sql.execute("SELECT to_regclass(%s)", (f"{pg_table}_journal",)).fetchone() == (None,)


def test_view_and_newer_schema_are_refused(postgres_url: str, pg_table: str,
                                           sql: psycopg.Connection[Any]) -> None:
    sql.execute(f"CREATE VIEW {pg_table} AS SELECT 1 AS id")
    with PostgresStore(postgres_url, table=pg_table) as s, \
            pytest.raises(StateCorruptedError, match="not a table"):
        s.version()
    sql.execute(f"DROP VIEW {pg_table}")
    with PostgresStore(postgres_url, table=pg_table) as s:
        s.save({"a": {}})
    sql.execute(f"COMMENT ON TABLE {pg_table} IS 'cascadeui state table, schema 99'")
    with PostgresStore(postgres_url, table=pg_table) as s, \
            pytest.raises(StateCorruptedError, match="newer pycascadeui"):
        s.load()


def test_bad_table_names_are_refused() -> None:
    for bad in ("Upper", "a-b", "x; DROP TABLE y", "", "a" * 56):
        with pytest.raises(ConfigurationError):
            PostgresStore("postgresql://localhost/db", table=bad)
    with pytest.raises(ConfigurationError):
        PostgresStore("mysql://localhost/db")
    with PostgresStore(f"postgresql://u:{SECRET}@localhost/db?no_such_option=1") as s, \
            pytest.raises(ConfigurationError, match="no_such_option") as info:
        s.load()  # libpq refuses the URL: typed, before any connection, password hidden
    assert SECRET not in str(info.value)


# -- typed errors and redaction ------------------------------------------------------------


def test_dead_server_is_storage_unavailable_without_the_password() -> None:
    url = dead_url()
    with PostgresStore(url, connect_timeout=2) as s:
        assert SECRET not in repr(s)
        assert "***" in repr(s)
        for call in (s.load, s.version, lambda: s.save({"a": {}})):
            with pytest.raises(StorageUnavailableError, match="unreachable") as info:
                call()
            assert SECRET not in str(info.value)
            assert SECRET not in repr(info.value)
            assert info.value.location is not None
            assert SECRET not in info.value.location
            assert info.value.__cause__ is None  # psycopg's message stays out of tracebacks


def test_missing_database_and_role_are_named(postgres_url: str) -> None:
    with PostgresStore(with_database(postgres_url, "cascadeui_no_such_db")) as s, \
            pytest.raises(StorageUnavailableError, match="no such database"):
        s.load()
    role_url = postgres_url.replace("postgres@", f"nobody_here:{SECRET}@", 1)
    with PostgresStore(role_url) as s, pytest.raises(StorageUnavailableError) as info:
        s.load()
    assert "nobody_here" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_failed_save_logs_no_password(anyio_backend: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    url = dead_url()
    backend = backend_from_url(url + "?table=t1")
    assert isinstance(backend, PostgresBackend)
    assert SECRET not in repr(backend)
    assert backend.store.table == "t1"
    with caplog.at_level(logging.DEBUG):
        assert await backend.save_state({"a": {}}) is False
    assert caplog.records
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    await backend.aclose()


def test_backend_from_url_schemes(postgres_url: str) -> None:
    for scheme in ("postgresql", "postgres"):
        url = postgres_url.replace("postgresql", scheme, 1) + "?table=from_url&sslmode=disable"
        backend = backend_from_url(url)
        assert isinstance(backend, PostgresBackend)
        assert backend.store.table == "from_url"
        assert "table=" not in backend.store.url
        assert "sslmode=disable" in backend.store.url
    assert backend_from_url(postgres_url).store.table == "cascadeui_state"  # type: ignore[attr-defined]


def test_lock_timeout_and_statement_timeout(postgres_url: str, pg_table: str) -> None:
    with PostgresStore(postgres_url, table=pg_table, timeout=0.3,
                       statement_timeout=0.5) as s:
        s.save({"a": {"n": 1}})
        with psycopg.connect(postgres_url) as other:  # a writer holding the write lock
            other.execute(f"LOCK TABLE {pg_table} IN SHARE ROW EXCLUSIVE MODE")
            start = time.monotonic()
            with pytest.raises(LockTimeoutError):
                s.save({"a": {"n": 2}})
            assert time.monotonic() - start < 3
            assert s.load() == {"a": {"n": 1}}  # readers are not blocked by writers
            other.rollback()
        with psycopg.connect(postgres_url) as other:  # something holding every lock
            other.execute(f"LOCK TABLE {pg_table} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StorageUnavailableError):
                s.load()  # blocked: lock_timeout (0.3 s) or statement_timeout, typed
            other.rollback()
        with pytest.raises(StorageUnavailableError, match="statement_timeout"):
            s._run(lambda conn: conn.execute("SELECT pg_sleep(5)"))
        assert s.load() == {"a": {"n": 1}}  # the connection is still good


# -- crashes -------------------------------------------------------------------------------


def test_client_killed_mid_transaction_leaves_nothing(postgres_url: str,
                                                      store: PostgresStore) -> None:
    store.save({"a": {"n": 1}})
    with subprocess.Popen([*worker("postgres_holder"), postgres_url, store.table],
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    start = time.monotonic()
    with store.transaction() as st:  # the server rolled back and released the lock
        st["a"]["after"] = 2
    assert time.monotonic() - start < 5
    assert store.load() == {"a": {"n": 1, "after": 2}}


@pytest.mark.slow
def test_server_restart_is_survived(tmp_path: Path) -> None:
    """A private server killed (a crash) and started again: the store reconnects, every
    acknowledged commit is there, a call during the outage fails typed."""
    if find_binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no PostgreSQL binaries for the restart test (CI=true)")
        pytest.skip("no initdb/postgres binaries")
    with PostgresServer() as server, PostgresStore(server.url, connect_timeout=2) as s:
        writer = JournalWriter(s)
        for i in range(20):
            assert writer.commit([(("application", f"k{i}"), i)]) is not None
        server.kill()
        with pytest.raises(StorageUnavailableError):
            s.load()
        server.start()
        assert s.load() == writer.doc  # reconnects on its own
        writer.version = s.version()
        assert writer.commit([(("application", "after"), 1)]) is not None
        server.stop()  # a clean shutdown drops the idle connection too
        server.start()
        assert s.load()["application"]["after"] == 1  # retried on a new connection
        server.stop()
        server.start()
        with s.transaction() as st:  # a stale connection is replaced before the body
            st["application"]["in_tx"] = 2
        assert s.load()["application"]["in_tx"] == 2


@pytest.mark.slow
def test_crash_campaign_on_postgres() -> None:
    """scripts/campaigns/crash.py, tiny: writers SIGKILLed mid-transaction, the server once
    per mode; nothing acknowledged is lost."""
    done = subprocess.run([*script("campaigns.crash"), "--kills", "3", "--size", "4000",
                           "--backends", "postgres"], capture_output=True, text=True,
                          timeout=300, check=False, env=script_env())
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    summary = lines[-1]
    assert summary["kills"] == 6
    assert summary["lost"] == 0
    assert summary["problems"] == 0
    assert summary["acked_saves"] > 0


def test_cli_redacts_the_password_and_creates_nothing(postgres_url: str, pg_table: str,
                                                      sql: psycopg.Connection[Any]) -> None:
    url = postgres_url.replace("postgres@", f"postgres:{SECRET}@", 1)  # trust: any password
    cli = module("cascadeui")
    missing = subprocess.run([*cli, "inspect", f"{url}?table={pg_table}"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode != 0
    assert "no state stored here" in missing.stderr  # the same error as a missing file
    assert sql.execute("SELECT to_regclass(%s)", (pg_table,)).fetchone() == (None,)
    done = subprocess.run([*cli, "set", f"{url}?table={pg_table}", "application.a", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([*cli, "inspect", f"{url}?table={pg_table}"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "a: int = 1" in shown.stdout
    for out in (missing, done, shown):
        assert SECRET not in out.stdout + out.stderr
    dead = subprocess.run([*cli, "inspect", dead_url()], capture_output=True, text=True,
                          timeout=60, check=False)
    assert dead.returncode != 0
    assert "unreachable" in dead.stderr
    assert SECRET not in dead.stdout + dead.stderr


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_store_keeps_dispatching_through_a_server_outage(anyio_backend: str) -> None:
    """A running store on a private server that is SIGKILLed: dispatching goes on, flush()
    says False quickly, and once the server is back everything dispatched is stored."""
    import anyio.to_thread

    from cascadeui.actions import APPLICATION_SET
    from cascadeui.store import StateStore

    if find_binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no PostgreSQL binaries for the outage test (CI=true)")
        pytest.skip("no initdb/postgres binaries")
    server = PostgresServer()
    await anyio.to_thread.run_sync(server.start)
    try:
        store = StateStore()
        await store.enable_persistence(PostgresBackend(server.url, connect_timeout=1.0),
                                       debounce=0, retry_initial=0.05, retry_max=0.3)
        await store.dispatch(APPLICATION_SET, {"path": ["k0"], "value": 0})
        assert await store.flush()
        await anyio.to_thread.run_sync(server.kill)
        for i in range(1, 11):
            await store.dispatch(APPLICATION_SET, {"path": [f"k{i}"], "value": i})
        start = time.monotonic()
        assert await store.flush() is False
        assert time.monotonic() - start < 5
        await anyio.to_thread.run_sync(server.start)
        deadline = time.monotonic() + 20
        while not await store.flush():
            assert time.monotonic() < deadline, store.last_write_error
            await anyio.sleep(0.05)
        await store.close(close_backend=True)

        def stored() -> dict[str, Any]:
            with PostgresStore(server.url) as s:
                return s.load()["application"]  # type: ignore[no-any-return]

        assert await anyio.to_thread.run_sync(stored) == {f"k{i}": i for i in range(11)}
    finally:
        await anyio.to_thread.run_sync(server.close)


@pytest.mark.slow
def test_private_server_from_the_pgserver_wheel() -> None:
    """The fallback for a machine without PostgreSQL: the server the ``pgserver`` package
    bundles runs as our private server (killed and restarted, data kept)."""
    from kit.postgres_server import pgserver_binaries

    bindir = pgserver_binaries()
    if bindir is None:
        if sys.version_info < (3, 13) and os.environ.get("CI") == "true":
            pytest.fail("pgserver is in the dev extra for Python < 3.13 (CI=true)")
        pytest.skip("pgserver is not installed (no wheel for this Python)")
    with PostgresServer(bindir) as server, PostgresStore(server.url) as store:
        store.save({"a": {"n": 1}})
        server.kill()
        server.start()
        assert store.load() == {"a": {"n": 1}}
