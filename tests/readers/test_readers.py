"""Readers go through the adapters (issue 12): inspect, the CLI and sync ask each adapter
about its medium, refuse links and special files, and judge panel entries as restore does.

Also the package rule that keeps it so: outside ``adapters/`` and the scheme registry
(``cascadeui/targets.py``) no code names SQL, backup-file names, private client
attributes or concrete adapter classes in ``isinstance``.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import _spawn
import pytest

import cascadeui
import cascadeui.adapters as adapters_module
from cascadeui import cli as cli_module
from cascadeui import sync
from cascadeui._inspection import inspect
from cascadeui.adapters import BaseStore, FileStore, SQLiteStore
from cascadeui.errors import (
    ConfigurationError,
    StateNotFoundError,
    StorageUnavailableError,
)
from cascadeui.persistence import backend_from_url, migrate_storage

STATE = {"application": {"motd": "hi", "n": 1},
         "persistent_views": {"ticket:1": {"class_name": "TicketPanel", "message_id": "900",
                                           "channel_id": "20"}}}


def run(capsys: pytest.CaptureFixture[str], *args: str, check: int = 0) -> tuple[str, str]:
    """``cli.main(ARGS)`` in this process; returns (stdout, stderr)."""
    try:
        code = cli_module.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == check, (code, out, err)
    return out, err


# -- the package rule ----------------------------------------------------------------------

PACKAGE = Path(cascadeui.__file__).parent
#: The one registry of URL schemes: it may name concrete adapters.
REGISTRY = {"_targets.py"}
CONCRETE = {name for name in adapters_module.__all__
            if isinstance(getattr(adapters_module, name), type)
            and issubclass(getattr(adapters_module, name), BaseStore)
            and getattr(adapters_module, name) is not BaseStore}
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|PRAGMA|CREATE TABLE)\b")
PRIVATE_CLIENT = {"_client", "_conn", "_built", "_raw_url", "_pool"}
DRIVERS = {"sqlite3", "sqlite_utils", "redis", "psycopg", "asyncpg"}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2
                and _names(node.args[1]) & CONCRETE):
            found.append(f"{where}: isinstance on {_names(node.args[1]) & CONCRETE}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            if SQL.search(node.value):
                found.append(f"{where}: SQL {node.value[:40]!r}")
            if re.search(r"\.bak\b", node.value):
                found.append(f"{where}: backup-file name {node.value[:40]!r}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_CLIENT:
            found.append(f"{where}: private client attribute {node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            bad = [n for n in names if n.split(".")[0] in DRIVERS]
            if bad:
                found.append(f"{where}: imports the driver {bad}")
    return found


def test_no_medium_knowledge_outside_the_adapters_and_the_registry() -> None:
    assert {"FileStore", "SQLiteStore", "RedisStore"} <= CONCRETE
    # cascadeui.testing is test infrastructure (it starts real servers), not a reader.
    files = [p for p in PACKAGE.rglob("*.py")
             if not {"adapters", "testing"} & set(p.relative_to(PACKAGE).parts)
             and p.name not in REGISTRY]
    assert len(files) > 10
    problems = [v for p in files for v in _violations(p)]
    assert problems == []


def test_the_rule_catches_what_it_is_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlite3\nfrom cascadeui.adapters import FileStore\n"
                   "def f(a):\n    q = 'SELECT data FROM t'\n    b = str(a) + '.bak'\n"
                   "    return isinstance(a, FileStore), a._client\n")
    kinds = {v.split(": ", 1)[1].split(" ")[0] for v in _violations(bad)}
    assert kinds == {"imports", "SQL", "backup-file", "isinstance", "private"}


def test_inspection_and_sync_do_not_import_each_other() -> None:
    _spawn.run(_spawn.worker("probe", "sync-alone"), check=True, timeout=60)
    for name in ("sync.py", "_inspection.py"):
        other = "inspection" if name == "sync.py" else "sync"
        tree = ast.parse((PACKAGE / name).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not [n for n in top if other in ast.dump(n)], name


# -- one resolver --------------------------------------------------------------------------


def test_one_resolver_serves_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    for gen in range(4):
        with FileStore(path, backups=3) as store:
            store.save({"application": {"gen": gen}})
    # A tool keeps every generation that exists (3), a bot's URL store its default (1).
    with sync.open_adapter(str(path)) as tool:
        assert [b.index for b in tool.list_backups()] == [0, 1, 2]
        tool.save({"application": {"gen": 9}})
    assert [b.index for b in FileStore(path).list_backups()] == [0, 1, 2]
    assert backend_from_url(str(path)).store.backups == 1
    with pytest.raises(ConfigurationError, match="unsupported URL scheme 'ftp'"):
        backend_from_url("ftp://x/y.json")


def test_missing_stores_are_the_same_error_everywhere(tmp_path: Path, redis_url: str,
                                                      redis_key: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    missing = [str(tmp_path / "none.json"), str(tmp_path / "none.db"),
               f"{redis_url}?key={redis_key}"]
    for target in missing:
        with pytest.raises(StateNotFoundError):
            inspect(target)
        _, err = run(capsys, "inspect", target, check=1)
        assert "no state stored here" in err
    assert list(tmp_path.iterdir()) == []
    assert issubclass(StateNotFoundError, FileNotFoundError)


# -- describe(): versions and sizes from the adapter ---------------------------------------


def test_inspect_of_sqlite_reports_the_current_version_and_the_journal(tmp_path: Path
                                                                       ) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.save({"application": {"n": 0}})
        for n in range(1, 4):
            version = store.version()
            assert store.save_changes([(("application", "n"), n)], version,
                                      full=lambda: "unused") == version + 1
        assert store.version() == 4
    snap = inspect(str(db))
    assert snap.version == 4
    assert snap.state["application"] == {"n": 3}
    conn = sqlite3.connect(db)
    data, journal = conn.execute(
        "SELECT (SELECT length(data) FROM cascadeui_state), "
        "(SELECT sum(length(ops)) FROM cascadeui_state_journal)").fetchone()
    conn.close()
    assert snap.journal_size == journal > 0
    assert snap.size == data + journal
    assert "change journal" in repr(snap)


def test_inspect_of_a_file_counts_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with FileStore(path) as store:
        store.save({"application": {"n": 0}})
        version = store.load_versioned()[1]
        store.save_changes([(("application", "n"), 1)], version, full=lambda: "unused")
    snap = inspect(str(path))
    journal = Path(f"{path}.journal").stat().st_size
    assert snap.journal_size == journal
    assert snap.size == path.stat().st_size + journal


def test_inspect_of_a_damaged_main_file_says_which_copy_was_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    with FileStore(path) as store:
        store.save({"application": {"v": 1}})
        store.save({"application": {"v": 2}})
    path.write_text('{"application": {"v"')
    snap = inspect(str(path))
    assert snap.state == {"application": {"v": 1}}
    assert snap.read_from == f"{path}.bak"
    out, _ = run(capsys, "inspect", str(path))
    assert f"read from: {path}.bak (the main copy is missing or unreadable" in out


# -- hostile files: FIFOs, links ------------------------------------------------------------


def _load_in_thread(store: FileStore) -> BaseException | dict[str, Any] | None:
    result: list[BaseException | dict[str, Any]] = []

    def target() -> None:
        try:
            result.append(store.load())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    return result[0] if result else None  # None: it hung


@pytest.mark.parametrize("planted", ["", ".journal"])
def test_a_fifo_planted_at_the_state_or_journal_never_hangs_a_load(tmp_path: Path,
                                                                   planted: str) -> None:
    path = tmp_path / "s.json"
    with FileStore(path) as store:
        store.save({"application": {"v": 1}})
    Path(f"{path}{planted}").unlink(missing_ok=True)
    os.mkfifo(f"{path}{planted}")
    with FileStore(path) as store:
        outcome = _load_in_thread(store)
        assert outcome is not None, "load() hung on a FIFO"
        assert isinstance(outcome, ConfigurationError)
        assert "FIFO, not a regular file" in str(outcome)
        with pytest.raises(ConfigurationError):
            store.save({"application": {"v": 2}})
    assert Path(f"{path}{planted}").is_fifo()  # refused, left as it was


def test_a_symlink_at_the_backup_is_never_read_or_restored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"application": {"token": "s3cret"}}))
    secret.chmod(0o600)
    path = tmp_path / "s.json"
    with FileStore(path) as store:
        store.save({"application": {"v": 1}})
    os.symlink(secret, f"{path}.bak")
    with FileStore(path) as store, pytest.raises(ConfigurationError, match="symlink"):
        store.read_backup(0)
    out, _ = run(capsys, "backups", str(path))
    assert "UNREADABLE" in out
    _, err = run(capsys, "restore-backup", str(path), "0", check=1)
    assert "symlink" in err
    assert "s3cret" not in path.read_text()
    assert FileStore(path).load() == {"application": {"v": 1}}


# -- locks that hold -----------------------------------------------------------------------


@pytest.mark.slow
def test_an_unlinked_or_replaced_lock_file_admits_no_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    FileStore(path).save({"application": {"n": 0}})
    lock = Path(f"{path}.lock")
    procs = [_spawn.start(_spawn.worker("counter", path, 50)) for _ in range(3)]
    vandalised = 0
    try:
        while any(p.poll() is None for p in procs):
            try:
                if vandalised % 2:
                    lock.unlink()
                else:
                    lock.with_name("x.tmp").write_text("")
                    os.replace(lock.with_name("x.tmp"), lock)
                vandalised += 1
            except FileNotFoundError:
                pass
            time.sleep(0.003)
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert out.split()[0] == "done", err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert vandalised > 20
    assert FileStore(path).load()["application"]["n"] == 150


# -- the CLI, as a new user meets it ---------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", '{"$datetime": "yesterday"}'])
def test_set_blames_a_bad_value_with_exit_2(tmp_path: Path, value: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    FileStore(path).save(STATE)
    _, err = run(capsys, "set", str(path), "application.motd", value, check=2)
    assert "VALUE" in err
    assert "stored state is not valid" not in err
    assert "usage: cascadeui set" in err  # the subcommand's usage, not the top level's
    assert FileStore(path).load() == STATE


def test_delete_removes_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    FileStore(path).save(STATE)
    run(capsys, "delete", str(path), "application.motd")
    assert FileStore(path).load()["application"] == {"n": 1}
    _, err = run(capsys, "delete", str(path), "application.motd", check=1)
    assert "no 'motd'" in err
    run(capsys, "delete", str(path), "persistent_views.ticket:1")
    assert FileStore(path).load()["persistent_views"] == {}


@pytest.mark.parametrize(("entry", "problem"), [
    ({"class_name": "P", "channel_id": "20"}, "message_id"),
    ({"class_name": "P", "message_id": "0123", "channel_id": "20"}, "message_id"),
    ({"message_id": "900", "channel_id": "20"}, "class_name"),
])
def test_panel_entries_are_judged_as_restore_judges_them(
        tmp_path: Path, entry: dict[str, Any], problem: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from cascadeui._restore import _identity

    with pytest.raises(ValueError, match=problem):
        _identity(entry)  # restore marks it failed ...
    db = tmp_path / "s.db"
    sync.save_state(str(db), {"application": {}, "persistent_views": {"k": entry}})
    out, _ = run(capsys, "verify", str(db), check=1)  # ... so verify fails it
    assert f"FAIL persistent view entries: would not restore: k ({problem}" in out
    good = tmp_path / "good.json"
    FileStore(good).save(STATE)
    _, err = run(capsys, "set", str(good), "persistent_views.k", json.dumps(entry), check=2)
    assert "would not restore" in err  # ... and set refuses to write it
    assert FileStore(good).load() == STATE


def test_verify_fails_an_empty_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    path = tmp_path / "s.json"
    FileStore(path).save({})
    out, _ = run(capsys, "verify", str(path), check=1)
    assert "FAIL state present" in out
    assert out.rstrip().endswith("1 problem")


def test_a_directory_named_like_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    # One rule whatever the suffix (issue 23): a usage error naming the directory.
    (tmp_path / "x.db").mkdir()
    _, err = run(capsys, "set", str(tmp_path / "x.db"), "application.a", "1", check=2)
    assert "x.db is a directory; name a state file or database inside it" in err
    (tmp_path / "x.json").mkdir()
    _, err = run(capsys, "set", str(tmp_path / "x.json"), "application.a", "1", check=2)
    assert "x.json is a directory; name a state file or database inside it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db", "x.json"]  # no .lock


def test_set_refuses_a_foreign_sqlite_file(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id)")
    conn.commit()
    conn.close()
    _, err = run(capsys, "set", str(db), "application.a", "1", check=1)
    assert "not a cascadeui database" in err
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["users"]
    conn.close()


def test_set_says_what_it_waits_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    sync.save_state(str(db), STATE)
    monkeypatch.setattr(cli_module, "LOCK_NOTE_AFTER", 0.2)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(1.0, holder.execute, ("COMMIT",))
    timer.start()
    try:
        _, err = run(capsys, "set", str(db), "application.a", "1")
    finally:
        timer.join()
        holder.close()
    assert "waiting for the write lock" in err


def test_a_failed_migrate_leaves_nothing_behind(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "empty.json"
    FileStore(empty).save({})
    _, err = run(capsys, "migrate", str(empty), str(tmp_path / "new.db"), check=1)
    assert "holds no state" in err
    assert not (tmp_path / "new.db").exists()
    with caplog.at_level(logging.WARNING, logger="cascadeui.persistence"):
        import anyio

        assert anyio.run(migrate_storage, FileStore(tmp_path / "missing.json"),
                         SQLiteStore(tmp_path / "n2.db")) is False
    assert "holds no state" in caplog.text
    assert not (tmp_path / "n2.db").exists()


def test_a_redis_url_without_the_needed_password_says_what_to_add(redis_key: str) -> None:
    import redis
    from _helpers import started_redis_server

    server = started_redis_server("the password hint")
    try:
        redis.Redis.from_url(server.url).config_set("requirepass", "pw-needed")
        store = backend_from_url(f"{server.url}?key={redis_key}").store
        with store, pytest.raises(StorageUnavailableError) as info:
            store.load()
        assert "requires a password: add it to the URL, redis://:PASSWORD@" in str(info.value)
    finally:
        server.close()


def test_backups_names_the_backend_not_a_class(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    sync.save_state(str(db), STATE)
    out, _ = run(capsys, "backups", str(db))
    assert out.strip() == "the sqlite backend keeps no backup files"


def test_wording_a_new_user_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime, timezone

    key = "ticket:" + "k" * 60
    state = {"application": {"one": {"a": 1}, "when": datetime(2026, 1, 2, tzinfo=timezone.utc),
                             "tags": {"b", "a"}, "n": 5},
             "persistent_views": {key: {"class_name": "P", "message_id": "9",
                                        "channel_id": "2"}}}
    snap = inspect(state)
    text = repr(snap)
    assert "one: dict, 1 key" in text
    assert "1 keys" not in text
    assert "when: datetime = 2026-01-02T00:00:00+00:00" in text
    assert "datetime.datetime(" not in text
    assert "tags: set, 2 items" in text
    assert f"key={key} " in text  # the registry key in full
    page = snap._repr_html_()
    assert "<code>0</code>" not in page  # set members carry no index labels
    assert "<li>a <i>str</i></li>" in page
    with pytest.raises(KeyError, match=r"\(an int\)"):
        cascadeui._inspection.get_path(state, "application.n.x")
    path = tmp_path / "s.json"
    FileStore(path).save(state)
    out, _ = run(capsys, "verify", str(path))
    assert "1 entry" in out
    store = FileStore(path)
    store.close()
    with pytest.raises(Exception, match="the file store for"):
        store.load()


def test_the_architecture_page_lists_every_module() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
    text = docs.read_text()
    modules = [p.name for p in PACKAGE.glob("*.py")]
    modules += [p.name for p in (PACKAGE / "adapters").glob("*.py")]
    missing = [m for m in modules if m not in ("__init__.py", "__main__.py")
               and f"  {m} " not in text]
    assert missing == []
    assert "setup_persistence(bot=None, *, file_path=None, backend=None,\n" in text


def test_path_lock_is_reentrant_exclusive_and_never_follows_a_link(tmp_path: Path) -> None:
    from cascadeui.adapters._locks import LockUnavailableError, PathLock

    path = tmp_path / "x.lock"
    first, second = PathLock(path, timeout=5), PathLock(path, timeout=0.1)
    first.acquire()
    first.acquire()  # reentrant in its thread
    assert first.held()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            second.acquire()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    assert [type(e) for e in errors] == [LockUnavailableError]
    path.unlink()  # pulled from under the holder: it knows
    assert not first.held()
    first.release()
    first.release()
    second.timeout = 5
    second.acquire()  # a new file at the path: locked at once
    assert second.held()
    second.release()
    path.unlink()
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(OSError, match=r"symbolic links|Too many levels"):  # ELOOP
        PathLock(path, timeout=0.1).acquire()
    assert not (tmp_path / "elsewhere").exists()
