"""The adapter contract as a pytest class a backend subclasses: ``AdapterContract``.

Write one method, :meth:`AdapterContract.make_adapter`, in a class whose name starts with
``Test``, and pytest runs every promise an adapter makes, grouped by capability (the test
name's first word): ``loadsave``, ``transaction``, ``cas`` (compare-and-set), ``journal``,
``described``, ``medium_loss``, ``locks``, ``backups``, ``listener``. A capability the
adapter lacks (it is not a :class:`~cascadeui.adapters.VersionedStore`, has no
``listener``...) is skipped with the reason; a broken promise fails with a message that
starts ``broken promise:`` and names it::

    from cascadeui.testing.conformance import AdapterContract

    class TestMyStore(AdapterContract):
        def make_adapter(self, tmp_path, name):
            return MyStore(tmp_path / name)

Needs pytest (it is not a dependency of the package).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cascadeui._merge import DELETED
from cascadeui.adapters import (
    BackupStore,
    Check,
    DescribedStore,
    JournaledStore,
    StoreInfo,
    TransactionalStore,
    VersionedStore,
)
from cascadeui.errors import StateNotFoundError, StoreClosedError
from cascadeui.serializer import StateSerializer

__all__ = ["RICH", "AdapterContract", "broken_promise"]

#: A state with every kind of value the serializer keeps exactly (int keys, sets, tuples,
#: aware and naive datetimes, big ints, NUL characters, a dict that looks tagged).
RICH: dict[str, Any] = {
    "application": {
        "scores": {1234567890123456789: 10, 987654321098765432: 7},
        "seen": {"welcome", "rules"},
        "frozen": frozenset({1, 2}),
        "pair": (1, "a", (2, 3)),
        "naive": datetime(2026, 1, 2, 3, 4, 5, 678),
        "aware": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
        "utc": datetime(2026, 6, 1, tzinfo=timezone.utc),
        "day": date(2026, 2, 28),
        "text": "emoji \U0001f600 and \u00e9\u00e8 \x00 nul",
        "big": 2**200,
        "float": 0.1,
        "none": None,
        "flags": [True, False],
        "tagged-looking": {"$set": [1, 2]},
        "mixed_keys": {1: "int", "1": "str", (1, 2): "tuple", None: "none"},
    },
    "persistent_views": {},
}
_BASE: dict[str, Any] = {"application": {"n": 0, "names": {1: "a"}}, "persistent_views": {}}
_SER = StateSerializer()
#: How long a listener may take to announce another adapter's commit.
LISTEN_WITHIN = 5.0


def broken_promise(ok: object, promise: str, detail: object = "") -> None:
    """Fail the running test with ``broken promise: <promise>`` unless ``ok``."""
    if not ok:
        raise AssertionError(f"broken promise: {promise}" + (f" ({detail})" if detail else ""))


def _difference(want: Mapping[str, Any], got: Mapping[str, Any]) -> str:
    """The top-level keys missing, extra or different between two states."""
    def show(keys: Iterable[Any]) -> str:
        return ", ".join(sorted(map(repr, keys))) or "none"

    return (f"missing keys: {show(want.keys() - got.keys())}; extra keys: "
            f"{show(got.keys() - want.keys())}; different values at: "
            f"{show(k for k in want.keys() & got.keys() if want[k] != got[k])}")


def _full(state: Mapping[str, Any]) -> Callable[[], str]:
    return lambda: _SER.serialize(state)


class AdapterContract:
    """Every promise of the adapter contract, run against :meth:`make_adapter`'s adapters.

    Subclass it in a ``Test...`` class and define :meth:`make_adapter`; define
    :meth:`lose_medium` too to run the medium-loss group. Every adapter a test opens is
    closed at its end.
    """

    #: The medium most tests use; a few open ``"other"`` too.
    NAME = "state"

    def make_adapter(self, tmp_path: Path, name: str) -> Any:
        """A fresh adapter on medium ``name``: two calls with the same ``tmp_path`` and
        ``name`` open the same medium, another name another medium.

        :param tmp_path: the test's own temporary directory (pytest's ``tmp_path``).
        """
        raise NotImplementedError("define make_adapter(self, tmp_path, name) in the subclass")

    def lose_medium(self, tmp_path: Path, name: str) -> None:
        """Destroy everything medium ``name`` holds, as an operator or a crash would (delete
        the files, drop the table, delete the keys). Optional: without it the medium-loss
        group is skipped."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _contract_media(self, tmp_path: Path) -> Iterator[None]:
        self._tmp = tmp_path
        self._opened: list[Any] = []
        yield
        for adapter in self._opened:
            close = getattr(adapter, "close", None)
            if callable(close):
                close()

    def open(self, name: str = NAME) -> Any:
        """An adapter on medium ``name`` of this test (closed at the end of the test)."""
        adapter = self.make_adapter(self._tmp, name)
        self._opened.append(adapter)
        return adapter

    @staticmethod
    def need(adapter: Any, protocol: type, capability: str) -> None:
        """Skip the test unless ``adapter`` implements ``protocol``."""
        if not isinstance(adapter, protocol):
            pytest.skip(f"{type(adapter).__name__} has no {capability} "
                        f"(it is not a cascadeui.adapters.{protocol.__name__})")

    def versioned(self, name: str = NAME) -> Any:
        """A VersionedStore adapter, or the test is skipped."""
        adapter = self.open(name)
        self.need(adapter, VersionedStore, "versions (compare-and-set)")
        return adapter

    def journaled(self, name: str = NAME) -> Any:
        """A VersionedStore and JournaledStore adapter, or the test is skipped."""
        adapter = self.versioned(name)
        self.need(adapter, JournaledStore, "change journal")
        return adapter

    # -- load and save ------------------------------------------------------------------

    def test_loadsave_an_empty_medium_loads_an_empty_dict(self) -> None:
        got = self.open().load()
        broken_promise(got == {}, "load() of a medium never written returns {}", got)

    def test_loadsave_round_trip_is_exact(self) -> None:
        store = self.open()
        store.save(RICH)
        got = store.load()
        broken_promise(got == RICH, "load() returns exactly what save() stored",
                       _difference(RICH, got))
        app = got["application"]
        broken_promise((type(app["seen"]), type(app["frozen"]), type(app["pair"][2]))
                       == (set, frozenset, tuple),
                       "load() keeps the types of what save() stored (set, frozenset, tuple)")
        broken_promise(app["aware"].utcoffset() == timedelta(hours=-5)
                       and app["naive"].tzinfo is None,
                       "load() keeps datetimes' time zones (and their absence)")

    def test_loadsave_save_replaces_the_whole_state(self) -> None:
        store = self.open()
        store.save({"a": 1, "b": 2})
        store.save({"c": 3})
        got = store.load()
        broken_promise(got == {"c": 3}, "save() replaces the whole stored state",
                       _difference({"c": 3}, got))

    def test_loadsave_every_load_returns_fresh_objects(self) -> None:
        store = self.open()
        store.save({"a": {"b": 1}})
        first = store.load()
        first["a"]["b"] = 2
        broken_promise(store.load() == {"a": {"b": 1}},
                       "changing what load() returned changes nothing stored")

    def test_loadsave_a_second_adapter_of_the_medium_reads_it(self) -> None:
        self.open().save(_BASE)
        got = self.open().load()
        broken_promise(got == _BASE, "two adapters of one medium share its state",
                       _difference(_BASE, got))

    def test_loadsave_two_names_are_two_media(self) -> None:
        self.open().save({"a": 1})
        other = self.open("other")
        broken_promise(other.load() == {}, "another name is another medium")
        other.save({"b": 2})
        broken_promise(self.open().load() == {"a": 1}, "another name is another medium")

    def test_loadsave_an_unstorable_value_writes_nothing(self) -> None:
        store = self.open()
        store.save(_BASE)
        with pytest.raises(TypeError):  # SerializationError is a TypeError
            store.save({"application": {"bad": object()}})
        broken_promise(store.load() == _BASE,
                       "a save() the serializer refuses raises TypeError and writes nothing")

    def test_loadsave_repr_names_the_location(self) -> None:
        store = self.open()
        location = getattr(store, "location", None)
        broken_promise(location is None or location in repr(store),
                       "repr() names the adapter's location", repr(store))

    def test_loadsave_close_is_idempotent_and_final(self) -> None:
        store = self.open()
        if not callable(getattr(store, "close", None)):
            pytest.skip(f"{type(store).__name__} has no close()")
        store.save({"a": 1})
        store.close()
        store.close()
        with pytest.raises(StoreClosedError):
            store.load()
        with pytest.raises(StoreClosedError):
            store.save({"a": 2})
        broken_promise(self.open().load() == {"a": 1}, "a save() after close() writes nothing")

    # -- transactions -------------------------------------------------------------------

    def _transactional(self) -> Any:
        store = self.open()
        self.need(store, TransactionalStore, "transaction()")
        return store

    def test_transaction_commits_changes(self) -> None:
        store = self._transactional()
        store.save({"counter": 1, "names": {"x"}})
        with store.transaction() as state:
            state["counter"] += 1
            state["names"].add("y")
        got = self.open().load()
        broken_promise(got == {"counter": 2, "names": {"x", "y"}},
                       "a transaction commits its changes on a clean exit", got)

    def test_transaction_on_an_empty_medium_starts_from_an_empty_dict(self) -> None:
        store = self._transactional()
        with store.transaction() as state:
            broken_promise(state == {}, "a transaction on an empty medium starts from {}")
            state["n"] = 1
        broken_promise(store.load() == {"n": 1}, "a transaction commits its changes")

    def test_transaction_that_raises_writes_nothing(self) -> None:
        store = self._transactional()
        store.save({"counter": 1})

        def poisoned() -> None:
            with store.transaction() as state:
                state["counter"] = 99
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            poisoned()
        broken_promise(store.load() == {"counter": 1}, "a transaction that raises writes nothing")
        with store.transaction() as state:
            state["counter"] = 2
        broken_promise(store.load() == {"counter": 2},
                       "a transaction that raised released the write lock")

    # -- compare-and-set ----------------------------------------------------------------

    def test_cas_an_empty_medium_is_version_zero(self) -> None:
        store = self.versioned()
        broken_promise(store.version() == 0, "version() of an empty medium is 0")
        broken_promise(store.load_versioned() == ({}, 0),
                       "load_versioned() of an empty medium is ({}, 0)")

    def test_cas_version_changes_on_every_commit(self) -> None:
        store = self.versioned()
        seen = [store.version()]
        for i in range(4):
            store.save({"i": i % 2})  # the same size, alternating content
            seen.append(store.version())
        if callable(getattr(store, "transaction", None)):
            with store.transaction() as state:
                state["i"] = 7
            seen.append(store.version())
        broken_promise(all(a != b for a, b in itertools.pairwise(seen)),
                       "version() changes on every commit", f"versions seen: {seen}")
        broken_promise(store.version() == seen[-1], "reading does not change version()")

    def test_cas_load_versioned_matches_load_and_version(self) -> None:
        store = self.versioned()
        store.save(_BASE)
        state, version = store.load_versioned()
        broken_promise(state == _BASE and version == store.version() != 0,
                       "load_versioned() returns the stored state and its version",
                       (state, version))
        broken_promise(self.open().version() == version,
                       "two adapters of one medium see one version")

    def test_cas_save_if_version_writes_at_the_current_version_only(self) -> None:
        store = self.versioned()
        store.save({"n": 0})
        version = store.version()
        new = store.save_if_version({"n": 1}, version)
        broken_promise(new is not None and new != version and new == store.version(),
                       "save_if_version() at the current version writes and returns the "
                       "new version", (version, new))
        broken_promise(store.save_if_version({"n": 2}, version) is None,
                       "save_if_version() at a stale version returns None")
        broken_promise(store.load() == {"n": 1}, "save_if_version() at a stale version "
                       "writes nothing")

    def test_cas_another_adapters_commit_makes_the_version_stale(self) -> None:
        store = self.versioned()
        store.save(_BASE)
        _, version = store.load_versioned()
        self.open().save({"application": {"n": 99}})
        broken_promise(store.save_if_version(_BASE, version) is None,
                       "another adapter's commit makes an older version stale")
        broken_promise(store.load() == {"application": {"n": 99}},
                       "a stale save_if_version() writes nothing")

    # -- the change journal -------------------------------------------------------------

    def test_journal_appends_are_loaded_in_order(self) -> None:
        store = self.journaled()
        store.save(_BASE)
        state, version = store.load_versioned()
        for n in range(1, 6):
            state["application"]["n"] = n
            new = store.save_changes([(("application", "n"), n)], version, full=_full(state))
            broken_promise(new is not None and new != version,
                           "save_changes() at the current version commits a new version")
            version = new
        store.save_changes([(("application", "names", 1), DELETED),
                            (("application", "names", 2), "b")], version, full=_full(state))
        want = {"application": {"n": 5, "names": {2: "b"}}, "persistent_views": {}}
        got = self.open().load()
        broken_promise(got == want, "journaled changes load back, in order",
                       _difference(want, got))

    def test_journal_a_stale_version_writes_nothing(self) -> None:
        store = self.journaled()
        store.save(_BASE)
        _, version = store.load_versioned()
        self.open().save({"application": {"n": 99}})
        broken_promise(store.save_changes([(("application", "n"), 1)], version,
                                          full=_full(_BASE)) is None,
                       "save_changes() at a stale version returns None")
        broken_promise(store.load() == {"application": {"n": 99}},
                       "save_changes() at a stale version writes nothing")

    def test_journal_no_changes_at_the_current_version_is_a_no_op(self) -> None:
        store = self.journaled()
        store.save(_BASE)
        version = store.version()
        broken_promise(store.save_changes([], version, full=_full(_BASE)) == version
                       and store.version() == version,
                       "save_changes([]) at the current version commits nothing")

    def test_journal_the_first_commit_of_an_empty_medium_is_a_whole_snapshot(self) -> None:
        store = self.journaled()
        called: list[int] = []
        doc = {"application": {"n": 1}}

        def full() -> str:
            called.append(1)
            return _SER.serialize(doc)

        broken_promise(store.save_changes([(("application", "n"), 1)], 0, full=full)
                       is not None, "save_changes() on an empty medium commits")
        broken_promise(called and store.load() == doc,
                       "the first commit of an empty medium writes the whole document")

    def test_journal_past_its_budget_is_compacted(self) -> None:
        store = self.journaled()
        store.save(_BASE)
        state, version = store.load_versioned()
        fulls: list[int] = []
        for n in range(40):  # 40 records of 4 KB: past the 64 KB minimum budget
            state["application"][f"k{n}"] = "x" * 4096

            def full() -> str:
                fulls.append(1)
                return _SER.serialize(state)

            version = store.save_changes([(("application", f"k{n}"), "x" * 4096)], version,
                                         full=full)
            broken_promise(version is not None, "save_changes() at the current version commits")
        broken_promise(fulls, "a journal past its size budget is compacted into a snapshot")
        broken_promise(store.load() == state, "a compacted journal loads back whole")

    def test_journal_an_unstorable_value_writes_nothing(self) -> None:
        store = self.journaled()
        store.save(_BASE)
        version = store.version()
        with pytest.raises(TypeError):  # SerializationError is a TypeError
            store.save_changes([(("application", "bad"), object())], version,
                               full=_full(_BASE))
        broken_promise(store.version() == version and store.load() == _BASE,
                       "a change the serializer refuses raises TypeError and writes nothing")

    def test_journal_another_adapter_catches_up_from_the_journal(self) -> None:
        writer, reader = self.journaled(), self.journaled()
        writer.save(_BASE)
        _, seen = reader.load_versioned()
        broken_promise(reader.load_changes(seen) == ([], seen),
                       "load_changes() at the current version is ([], version)")
        state, version = writer.load_versioned()
        for n in (1, 2):
            state["application"]["n"] = n
            version = writer.save_changes([(("application", "n"), n)], version,
                                          full=_full(state))
        caught = reader.load_changes(seen)
        broken_promise(caught == ([[[["application", "n"], 1]], [[["application", "n"], 2]]],
                                  version),
                       "load_changes(since) returns every record committed since, in order, "
                       "and the current version", caught)
        writer.save({"application": {"n": 7}})
        broken_promise(reader.load_changes(version) is None,
                       "load_changes() after a whole write returns None (load it instead)")

    # -- what read-only tools ask -------------------------------------------------------

    def test_described_exists_describe_and_check(self) -> None:
        store = self.versioned()
        self.need(store, DescribedStore, "description (exists, describe, check)")
        broken_promise(store.exists() is False and store.describe().exists is False,
                       "exists() and describe().exists are False on an empty medium")
        store.save(_BASE)
        state, version = store.load_versioned()
        journaled: Any = store  # (narrowing store itself would hide its other protocols)
        if isinstance(journaled, JournaledStore):
            state["application"]["n"] = 1
            journaled.save_changes([(("application", "n"), 1)], version, full=_full(state))
        broken_promise(store.exists(), "exists() is True once a state is stored")
        info = store.describe()
        broken_promise(isinstance(info, StoreInfo) and info.exists and info.kind == store.kind
                       and info.location == store.location,
                       "describe() names the adapter's kind and location", info)
        broken_promise(info.version is None or info.version == store.version(),
                       "describe().version is None or version()", info)
        broken_promise(info.size is not None and info.snapshot_size is not None
                       and info.size == info.snapshot_size + (info.journal_size or 0),
                       "describe().size is the snapshot plus the journal", info)
        checks, checked = store.check()
        broken_promise(all(isinstance(c, Check) and c.ok for c in checks),
                       "check() passes on a healthy medium", checks)
        broken_promise(checked == state, "check() returns the state a load returns")

    # -- loss of the medium -------------------------------------------------------------

    def test_medium_loss_another_writers_commits_are_no_loss(self) -> None:
        store = self.journaled()
        if not callable(getattr(store, "load_checked", None)):
            pytest.skip(f"{type(store).__name__} has no load_checked() (medium loss)")
        store.save(_BASE)
        _, version = store.load_versioned()
        other = self.open()
        other.save_changes([(("application", "n"), 5)], other.version(), full=_full(_BASE))
        state, _, problem = store.load_checked(version)
        broken_promise(problem is None and state["application"]["n"] == 5,
                       "load_checked() reports no loss for another writer's commits", problem)

    def test_medium_loss_a_medium_lost_and_written_again_is_reported(self) -> None:
        store = self.journaled()
        if not callable(getattr(store, "load_checked", None)):
            pytest.skip(f"{type(store).__name__} has no load_checked() (medium loss)")
        store.save(_BASE)
        state, version = store.load_versioned()
        state["application"]["n"] = 1
        version = store.save_changes([(("application", "n"), 1)], version, full=_full(state))
        try:
            self.lose_medium(self._tmp, self.NAME)
        except NotImplementedError:
            pytest.skip(f"{type(self).__name__} does not define lose_medium()")
        self.open().save({"application": {"other": 1}})
        _, _, problem = store.load_checked(version)
        broken_promise(isinstance(problem, str) and problem,
                       "load_checked() reports a medium lost and written again by another "
                       "writer (it is not a deletion)", problem)

    # -- locks --------------------------------------------------------------------------

    def test_locks_concurrent_transactions_of_several_adapters_lose_no_update(self) -> None:
        stores = [self._transactional() for _ in range(4)]
        stores[0].save({"n": 0})
        errors: list[BaseException] = []

        def bump(store: Any) -> None:
            try:
                for _ in range(10):
                    with store.transaction() as state:
                        state["n"] += 1
            except BaseException as exc:  # reported below, on the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        broken_promise(not errors, "concurrent transactions wait for the write lock", errors)
        got = self.open().load()
        broken_promise(got == {"n": 40}, "concurrent transactions of several adapters lose "
                       "no update", got)

    def test_locks_a_transaction_holds_other_writers_back(self) -> None:
        first, second = self._transactional(), self._transactional()
        first.save({"n": 0})
        inside, done = threading.Event(), threading.Event()

        def other_writer() -> None:
            inside.wait()
            with second.transaction() as state:
                state["n"] = state["n"] * 10
            done.set()

        thread = threading.Thread(target=other_writer)
        thread.start()
        with first.transaction() as state:
            inside.set()
            time.sleep(0.3)
            broken_promise(not done.is_set(),
                           "another adapter's transaction waits while one is open")
            state["n"] = 1
        thread.join()
        broken_promise(self.open().load() == {"n": 10},
                       "the waiting transaction starts from the committed state")

    # -- backups ------------------------------------------------------------------------

    def test_backups_hold_the_previous_saves_newest_first(self) -> None:
        store = self.open()
        self.need(store, BackupStore, "backup generations")
        for i in range(5):
            store.save({"i": i})
        gens = store.list_backups()
        if not gens:
            pytest.skip(f"{store!r} keeps no backup generation (as configured)")
        broken_promise([g.index for g in gens] == list(range(len(gens))),
                       "list_backups() lists generations 0, 1, ... newest first", gens)
        for gen in gens:
            got = store.read_backup(gen.index)
            broken_promise(got == {"i": 3 - gen.index},
                           "backup generation N holds the save N+1 before the last", got)
        with pytest.raises(StateNotFoundError):
            store.read_backup(len(gens))

    # -- change listeners ---------------------------------------------------------------

    def test_listener_hears_another_adapters_commit(self) -> None:
        store = self.open()
        make = getattr(store, "listener", None)
        heard = threading.Event()
        listener: Any = make(lambda version: heard.set()) if callable(make) else None
        if listener is None:
            pytest.skip(f"{type(store).__name__} has no change listener")
        writer = self.open()
        listener.start()
        try:
            deadline = time.monotonic() + LISTEN_WITHIN
            n = 0
            while not heard.wait(0.2) and time.monotonic() < deadline:
                n += 1  # a commit until one is heard: the subscription may take a moment
                writer.save({"n": n})
            broken_promise(heard.is_set(), "a listener hears another adapter's commit "
                           f"within {LISTEN_WITHIN:g} s")
        finally:
            listener.stop()
        broken_promise(not listener.alive, "listener.stop() ends its thread")
