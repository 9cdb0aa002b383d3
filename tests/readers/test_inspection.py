"""cascadeui.inspect: snapshots, their HTML and text, diffs, and the PATH syntax."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import cascadeui
from cascadeui import sync
from cascadeui._inspection import (
    MAX_CHILDREN,
    MAX_VIEW_ROWS,
    Snapshot,
    format_path,
    get_path,
    inspect,
    parse_path,
    set_path,
)
from cascadeui.adapters import FileStore
from cascadeui.errors import ConfigurationError, StateCorruptedError
from cascadeui.persistence import RedisBackend, SQLiteBackend


def view(n: int) -> dict[str, Any]:
    """A registry entry as the store writes it (ids as decimal strings)."""
    return {"class_name": "TicketPanel", "message_id": str(900 + n), "channel_id": "20",
            "guild_id": "10", "user_id": None if n % 2 else str(5000 + n)}


STATE = {
    "application": {"scores": {111: 5, 222: 7}, "motd": "<b>hi</b>", "tags": {"x"}},
    "persistent_views": {f"ticket:{n}": view(n) for n in range(3)},
}


def test_snapshot_of_a_json_file_with_backups(tmp_path: Path) -> None:
    path = tmp_path / "bot.json"
    with FileStore(path, backups=2) as store:
        store.save({"application": {"v": 1}, "persistent_views": {}})
        store.save({"application": {"v": 2}, "persistent_views": {}})
        store.save(STATE)
    snap = cascadeui.inspect(str(path))
    assert snap.backend == "file"
    assert snap.location == str(path)
    assert snap.size == path.stat().st_size
    assert snap.modified is not None
    assert [b.index for b in snap.backups] == [0, 1]
    assert snap.version is None  # a file's change token is opaque, not a counter
    assert snap.state == STATE
    text = repr(snap)
    assert "persistent views: 3" in text
    assert "ticket:1" in text
    assert "TicketPanel" in text
    assert "scores: dict, 2 keys" in text
    assert "bot.json.bak.1" in text


def test_html_shows_metadata_registry_tree_and_backups(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    backend = SQLiteBackend(db)
    sync.save_state(backend, STATE)
    backend.store.close()  # a backend passed in stays the caller's to close
    sync.save_state(str(db), STATE)
    snap = inspect(str(db))
    assert snap.backend == "sqlite"
    assert snap.version == 2
    assert snap.size
    assert snap.size > 100
    assert snap.location == f"sqlite:///{db}"  # an absolute path keeps its slash
    page = snap._repr_html_()
    assert "<details open><summary><code>application</code>" in page
    assert page.count("<tr><td>ticket:") == 3
    row = "<tr><td>ticket:0</td><td>TicketPanel</td><td>10</td><td>20</td><td>900</td>"
    assert row + "<td>5000</td></tr>" in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "<b>hi</b>" not in page
    assert "<i>set</i> &middot; 1 item</summary>" in page
    assert "the sqlite backend keeps none" in page


def test_redis_snapshot_reports_size_and_version(redis_url: str, redis_key: str) -> None:
    backend = RedisBackend(redis_url, key=redis_key)
    try:
        sync.save_state(backend, STATE)
        snap = inspect(backend)
    finally:
        backend.store.close()
    assert snap.backend == "redis"
    assert snap.version == 1
    assert snap.size is not None
    assert snap.size > 50
    assert redis_key in snap.location
    assert json.loads(json.dumps(snap.to_dict()))["persistent_views"]["count"] == 3


def test_ten_megabyte_state_renders_in_under_a_second() -> None:
    bio = "lorem ipsum " * 10
    big = {str(i): {"name": f"user{i}", "xp": i, "bio": bio} for i in range(80_000)}
    state = {"application": {"users": big, "flat": list(range(50_000))},
             "persistent_views": {f"k{i}": view(i) for i in range(5_000)}}
    assert len(json.dumps(state)) > 10_000_000
    snap = Snapshot(state, backend="memory", location="test")
    started = time.perf_counter()
    page = snap._repr_html_()
    text = repr(snap)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"rendering took {elapsed:.2f}s"
    assert len(page) < 500_000
    assert f"... {80_000 - MAX_CHILDREN:,} more keys" in page
    assert f"... {5_000 - MAX_VIEW_ROWS} more views" in page
    assert "... 4980 more" in text


def test_diff_lists_added_removed_and_changed_paths() -> None:
    old = Snapshot(STATE, backend="memory", location="a")
    new_state = {
        "application": {"scores": {111: 6, 333: 1}, "motd": "<b>hi</b>", "tags": {"x"},
                        "a.b": True},
        "persistent_views": {f"ticket:{n}": view(n) for n in range(2)},
    }
    diff = old.diff(Snapshot(new_state, backend="memory", location="b"))
    assert {format_path(p) for p, _ in diff.added} == {"application.scores.333",
                                                         'application."a.b"'}
    assert [format_path(p) for p, _ in diff.removed] == ["application.scores.222",
                                                         "persistent_views.ticket:2"]
    assert [(format_path(p), a, b) for p, a, b in diff.changed] == [
        ("application.scores.111", 5, 6)]
    assert len(diff) == 5
    assert "~ application.scores.111: 5 -> 6" in repr(diff)
    assert not old.diff(STATE)
    assert json.dumps(diff.to_dict())


def test_path_syntax_round_trips_awkward_keys() -> None:
    keys: list[Any] = ["application", "a.b", 123, "123", 'q"uote', "-5", -5, "plain"]
    text = format_path(keys)
    assert text == 'application."a.b".123."123"."q\\"uote"."-5".-5.plain'
    state: dict[str, Any] = {}
    set_path(state, text, "v")
    assert state == {"application": {"a.b": {123: {"123": {'q"uote': {"-5": {-5: {
        "plain": "v"}}}}}}}}
    assert get_path(state, text) == "v"


def test_bare_digits_find_int_keys_then_string_keys_then_list_indexes() -> None:
    state = {"application": {"ids": {42: "int"}, "names": {"42": "str"}, "xs": [10, 20]}}
    assert get_path(state, "application.ids.42") == "int"
    assert get_path(state, "application.names.42") == "str"
    assert get_path(state, "application.xs.-1") == 20
    with pytest.raises(KeyError, match=r"no '43' under application\.ids"):
        get_path(state, "application.ids.43")
    with pytest.raises(KeyError):
        get_path(state, 'application.ids."42"')  # quoted: the string key only


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", '"open', 'a"b"'])
def test_malformed_paths_are_configuration_errors(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="PATH"):
        parse_path(bad)


def test_inspecting_a_missing_path_creates_nothing(tmp_path: Path) -> None:
    for name in ("nothing.json", "nothing.db"):
        with pytest.raises(FileNotFoundError):
            inspect(str(tmp_path / name))
    assert list(tmp_path.iterdir()) == []


def test_inspecting_a_foreign_sqlite_file_does_not_touch_it(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StateCorruptedError, match="not a cascadeui database"):
        inspect(str(db))
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["t"]


def test_inspect_accepts_a_plain_state_and_a_custom_backend() -> None:
    class Custom:
        location = "custom://user:pw@host"

        async def save_state(self, state: dict[str, Any]) -> bool:
            return True

        async def load_state(self) -> dict[str, Any]:
            return dict(STATE)

    snap = inspect(Custom())
    assert snap.backend == "Custom"
    assert snap.state == STATE
    assert "pw" not in snap.location
    assert inspect(STATE).backend == "memory"
