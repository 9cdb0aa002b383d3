"""The persistence state machine stepped by hand, with no event loop (issue 20, item 3).

``cascadeui._persist_state`` is what the asyncio writer drives; here every input (the
state, its generation, the clock, what the backend answered) is given by the test, and
the waiters are plain ``concurrent.futures.Future`` objects.
"""

from __future__ import annotations

import ast
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import cascadeui._persist_state as core_module
from cascadeui._persist_state import (
    MAX_MERGE_ROUNDS,
    MISSING,
    EngineCore,
    Ledger,
    Timing,
)
from cascadeui.errors import (
    DurabilityTimeoutError,
    SerializationError,
    StateCorruptedError,
    StorageUnavailableError,
    StoreClosedError,
)

TIMING = Timing(debounce=0.05, max_delay=1.0, retry_initial=0.1, retry_max=30.0,
                durable_timeout=2.5)


def state(**application: Any) -> dict[str, Any]:
    """A whole store state whose persisted application slice is ``application``."""
    return {"application": dict(application), "persistent_views": {}, "views": {},
            "sessions": {}}


def persisted(full: dict[str, Any]) -> dict[str, Any]:
    return {"application": full["application"], "persistent_views": full["persistent_views"]}


def enabled(stored: dict[str, Any], version: int | None = 1, *,
            journaled: bool = True) -> tuple[EngineCore, dict[str, Any]]:
    """A core that loaded ``stored`` (application slice) at ``version``, and its state."""
    core = EngineCore(Ledger(journaled=journaled), "<backend>", "test://medium")
    full = state(**stored)
    core.adopt(full, 0, persisted(full), version, rewrite=False)
    return core, full


def changed(full: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``full`` with application keys set, sharing the other slices (as reducers do)."""
    return {**full, "application": {**full["application"], **values}}


def test_a_loaded_state_is_durable_and_a_change_is_not() -> None:
    core, full = enabled({"a": 1})
    assert core.is_durable(full)
    assert not core.needs_write(full)
    after = changed(full, b=2)
    assert core.needs_write(after)
    assert core.note_change(10.0)  # the first change opens the window (wakes the writer)
    assert not core.note_change(10.02)
    assert core.due(10.02, TIMING) == pytest.approx(10.07)  # debounce after the last
    core.note_change(10.97)
    assert core.due(10.97, TIMING) == pytest.approx(11.0)  # max_delay after the first


def test_a_commit_that_lands_makes_the_snapshot_durable_and_wakes_its_waiters() -> None:
    core, full = enabled({"a": 1}, version=3)
    after = changed(full, b=2)
    flush: Future[bool] = Future()
    durable: Future[bool] = Future()
    core.add_waiter(1, flush)
    core.add_durable(1, durable, deadline=5.0)
    assert core.due(0.0, TIMING) == 0.0  # someone waits: no coalescing delay
    snapshot, _ = core.begin_write(after)
    attempt = core.begin_commit(snapshot)
    assert attempt is not None
    assert attempt.expected == 3
    assert attempt.append
    doc = core.committed(attempt, 4)
    core.succeeded(doc, 1)
    led = core.ledger
    assert (led.version, led.base, led.appended) == (4, snapshot, True)
    assert core.is_durable(after)
    assert flush.result() is True
    assert durable.result() is True
    assert led.saved_generation == 1


def test_a_failed_write_keeps_the_change_dirty_and_durable_waiters_waiting() -> None:
    core, full = enabled({"a": 1})
    after = changed(full, b=2)
    core.note_change(1.0)
    flush: Future[bool] = Future()
    durable: Future[bool] = Future()
    core.add_waiter(1, flush)
    core.add_durable(1, durable, deadline=3.5)
    snapshot, first = core.begin_write(after)
    error = StorageUnavailableError("down", location="test://medium")
    core.failed(1, first, error, now=1.2, delay=0.1)
    assert flush.result() is False  # flush() learns the outcome
    assert not durable.done()  # a durable waiter waits for a retry
    assert core.needs_write(after)
    assert core.failures == 1
    assert core.last_error is error
    assert core.first_change == 1.0  # the window of the lost change is kept
    assert core.due(1.2, TIMING) == pytest.approx(1.3)
    core.add_durable(1, Future(), deadline=4.0)  # new demand: retry_initial after failing
    assert core.due(1.2, TIMING) == pytest.approx(1.3)
    assert core.expire(3.0, 2.5) == 3.5  # nothing due yet: the next deadline
    assert core.expire(3.6, 2.5) == 4.0
    timed_out = durable.exception()
    assert isinstance(timed_out, DurabilityTimeoutError)
    assert timed_out.last_error is error
    core.succeeded(snapshot, 1)  # the retry lands
    assert core.failures == 0
    assert core.retry_at is None
    assert core.last_error is None


def test_bad_data_is_rejected_until_the_data_changes() -> None:
    core, full = enabled({"a": 1})
    after = changed(full, bad=object())
    durable: Future[bool] = Future()
    core.add_durable(1, durable, deadline=9.0)
    snapshot, _ = core.begin_write(after)
    error = SerializationError("cannot store object", path="application.bad")
    core.rejected(snapshot, 1, error)
    assert durable.exception() is error
    assert not core.needs_write(after)
    assert core.is_rejected(after)
    assert core.rejection() is error
    assert core.needs_write(changed(after, bad=1))  # fixed data is written again


def test_a_compare_and_set_miss_merges_theirs_and_moves_nothing_until_it_lands() -> None:
    core, full = enabled({"a": 1, "both": 0}, version=5)
    led = core.ledger
    base = led.base
    ours = changed(full, b=2, both="ours")
    snapshot, _ = core.begin_write(ours)
    attempt = core.begin_commit(snapshot)
    assert attempt is not None
    theirs = {"application": {"a": 1, "c": 3, "both": "theirs"}, "persistent_views": {}}
    core.missed(attempt, theirs, 7, None)
    assert attempt.doc["application"] == {"a": 1, "b": 2, "c": 3, "both": "ours"}
    assert sorted(attempt.changed) == [("application", "both"), ("application", "c")]
    assert (attempt.expected, attempt.stored) == (7, theirs)
    assert attempt.append
    assert led.conflicts == 1  # "both": ours wins, counted
    assert led.version == 5
    assert led.base is base
    assert core.committed(attempt, 8) is attempt.doc
    assert led.version == 8
    assert led.base is attempt.doc


def test_a_storage_failure_after_a_miss_leaves_version_and_base_in_step() -> None:
    """The bug of tests/test_engine_retry.py, stepped: theirs loaded, then the retry fails."""
    core, full = enabled({"a0": 0}, version=2)
    led = core.ledger
    ours = changed(full, a1=1)
    snapshot, first = core.begin_write(ours)
    attempt = core.begin_commit(snapshot)
    assert attempt is not None
    theirs = {"application": {"a0": 0, "b1": 1}, "persistent_views": {}}
    core.missed(attempt, theirs, 3, None)
    core.failed(1, first, StorageUnavailableError("connection lost"), now=0.0, delay=0.1)
    # The next write expects the version its base was read at: it misses again and
    # merges b1 in, instead of passing the compare-and-set with a document without it.
    assert (led.version, led.base["application"]) == (2, {"a0": 0})
    retry = core.begin_commit(core.begin_write(ours)[0])
    assert retry is not None
    assert retry.expected == 2
    core.missed(retry, theirs, 3, None)
    assert retry.doc["application"] == {"a0": 0, "a1": 1, "b1": 1}


def test_a_medium_that_lost_data_is_rewritten_whole_and_nothing_is_deleted() -> None:
    core, full = enabled({"kept": 1, "gone": 2}, version=9)
    ours = changed(full, new=3)
    snapshot, _ = core.begin_write(ours)
    attempt = core.begin_commit(snapshot)
    assert attempt is not None
    # The journal was cut: the medium holds an older document, plus a key only it has.
    theirs = {"application": {"kept": 1, "only_there": 4}, "persistent_views": {}}
    core.missed(attempt, theirs, 4, "the journal was cut short")
    assert attempt.doc["application"] == {"kept": 1, "gone": 2, "new": 3, "only_there": 4}
    assert attempt.changed == [("application", "only_there")]
    assert core.ledger.rewrite
    assert not attempt.append
    core.committed(attempt, 5)
    assert not core.ledger.rewrite


def test_a_vanished_document_is_written_again_from_this_store() -> None:
    core, full = enabled({"a": 1}, version=9)
    snapshot, _ = core.begin_write(changed(full, b=2))
    attempt = core.begin_commit(snapshot)
    assert attempt is not None
    empty: dict[str, Any] = {"application": {}, "persistent_views": {}}
    core.missed(attempt, empty, 0, None)  # the version counter and the document are gone
    assert attempt.doc is snapshot
    assert attempt.expected == 0
    assert not attempt.append


def test_a_poll_installs_theirs_under_unsaved_local_changes() -> None:
    core, full = enabled({"a": 1}, version=1)
    led = core.ledger
    local = changed(full, mine=1)  # not written yet
    theirs = {"application": {"a": 1, "c": 3}, "persistent_views": {}}
    reload = core.caught_up(local, theirs, 2, None, now=5.0)
    assert reload is not None
    assert reload["state"]["application"] == {"a": 1, "c": 3, "mine": 1}
    assert reload["paths"] == [("application", "c")]
    assert led.version == 2
    assert led.base is theirs
    assert led.durable == theirs
    same = {"application": {"a": 1, "c": 3}, "persistent_views": {}}
    assert core.caught_up(local, same, 3, None, now=6.0) is None  # rewritten, same content
    assert led.version == 3


def test_a_poll_that_finds_the_medium_lost_data_writes_ours_again() -> None:
    core, full = enabled({"a": 1, "b": 2}, version=4)
    left = {"application": {"a": 1, "z": 26}, "persistent_views": {}}
    reload = core.caught_up(full, left, 2, "an older copy was restored", now=7.0)
    assert reload is not None
    assert reload["state"]["application"] == {"a": 1, "b": 2, "z": 26}  # b is not deleted
    assert core.needs_write(full)
    assert core.first_change == 7.0
    assert core.ledger.rewrite
    assert core.ledger.version == 2
    core2, full2 = enabled({"a": 1}, version=4)
    empty: dict[str, Any] = {"application": {}, "persistent_views": {}}
    assert core2.vanished(full2, empty, 0, now=1.0) is None
    assert core2.ledger.version == 0
    assert core2.needs_write(full2)
    assert all(v is MISSING for v in core2.ledger.durable.values())


def test_other_writers_moving_the_version_forever_is_a_storage_failure() -> None:
    core, full = enabled({"a": 1}, version=1)
    attempt = core.begin_commit(core.begin_write(changed(full, b=1))[0])
    assert attempt is not None
    for version in range(2, MAX_MERGE_ROUNDS + 1):
        core.missed(attempt, {"application": {"a": version}, "persistent_views": {}},
                    version, None)
    with pytest.raises(StorageUnavailableError, match="merge rounds"):
        core.missed(attempt, {"application": {}, "persistent_views": {}}, 99, None)


def test_a_successor_continues_the_ledger_without_the_old_loops_waiters() -> None:
    core, full = enabled({"a": 1}, version=2)
    old_waiter: Future[bool] = Future()
    core.add_durable(1, old_waiter, deadline=1.0)
    core.ledger.conflicts = 3
    fresh = core.successor()
    assert fresh.ledger is core.ledger  # what it writes is what the old engine wrote
    assert fresh.durable_waiters == []
    assert fresh.waiters == []
    after = changed(full, b=2)
    snapshot, _ = fresh.begin_write(after)
    attempt = fresh.begin_commit(snapshot)
    assert attempt is not None
    assert attempt.expected == 2
    fresh.succeeded(fresh.committed(attempt, 3), 1)
    assert core.is_durable(after)
    assert not core.needs_write(after)
    assert not old_waiter.done()  # the old loop's future is never touched


def test_a_stopping_writer_fails_durable_waiters_and_answers_flush() -> None:
    core, full = enabled({"a": 1})
    after = changed(full, b=2)
    flush: Future[bool] = Future()
    durable: Future[bool] = Future()
    core.add_waiter(1, flush)
    core.add_durable(1, durable, deadline=9.0)
    core.stopped(after, 1)
    assert flush.result() is False
    assert isinstance(durable.exception(), StoreClosedError)
    assert core.waiters == []
    assert core.durable_waiters == []


def test_the_core_has_no_event_loop_clock_or_io() -> None:
    """Pure and deterministic: a simulator (issue 25) steps it as these tests do."""
    tree = ast.parse(Path(core_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and not node.level}
    assert not imported & {"asyncio", "anyio", "threading", "time", "os", "socket"}


def test_a_flush_waiter_for_a_later_change_waits_for_a_later_write() -> None:
    core, full = enabled({"a": 1})
    early: Future[bool] = Future()
    late: Future[bool] = Future()
    core.add_waiter(1, early)
    core.add_waiter(2, late)  # dispatched after the write below took its snapshot
    snapshot, _ = core.begin_write(changed(full, b=2))
    core.succeeded(snapshot, 1)
    assert early.result() is True
    assert not late.done()
    core.drop_waiter(late)  # its caller was cancelled
    assert core.waiters == []
    assert core.due(0.5, TIMING, stopping=True) == 0.0  # stopping: write at once


def test_what_a_backend_returns_is_checked_and_its_extra_keys_force_a_whole_write() -> None:
    core, _ = enabled({"a": 1})
    theirs = core.loaded({"application": {"a": 2}, "views": {"old": 1}})
    assert theirs == {"application": {"a": 2}, "persistent_views": {}}
    assert core.ledger.rewrite  # pycascadeui 2.x's transient "views" must be dropped
    with pytest.raises(StateCorruptedError, match="not a dict"):
        core.loaded({"application": [1, 2]})
    known = {"application": {"a": 1, "big": {"x": 1}}, "persistent_views": {}}
    records = [[[["application", "c"], 3]], [[["application", "a"]]]]  # set c, delete a
    caught = core_module.replay(known, records)
    assert caught["application"] == {"big": {"x": 1}, "c": 3}
    assert caught["application"]["big"] is known["application"]["big"]  # shared, not copied
    assert known["application"] == {"a": 1, "big": {"x": 1}}  # unchanged
    assert core.is_news(None)
    assert core.is_news(5)
    assert not core.is_news(1)
    core.ledger.appended = True
    core.compacted(9)
    assert (core.ledger.version, core.ledger.appended) == (9, False)
