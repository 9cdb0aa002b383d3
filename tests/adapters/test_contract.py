"""The adapter contract beyond load/save (issue 12), once, over every adapter.

``tests/adapters/test_adapters.py`` runs the load/save/transaction/version part over every kind
in ``_helpers.STORE_BUILDERS``; this module runs the rest over the same list: the change
journal (``save_changes``/``load_changes``, compaction, conflicts, a second store of the
same medium catching up) and what readers ask (``exists``, ``describe``, ``check``, the
resolver's not-found error). A new backend added to ``STORE_BUILDERS`` runs all of it.
Medium-specific damage (torn lines, foreign keys, hand edits) stays in the per-backend
files, which test what only that medium can suffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _helpers import STORE_KINDS

from cascadeui._merge import DELETED
from cascadeui._targets import require_state
from cascadeui.adapters import (
    BaseStore,
    Check,
    DescribedStore,
    JournaledStore,
    StoreInfo,
    VersionedStore,
)
from cascadeui.errors import SerializationError, StateNotFoundError
from cascadeui.serializer import StateSerializer

NewStore = Callable[[str], BaseStore]
SER = StateSerializer()
BASE = {"application": {"n": 0, "names": {1: "a"}}, "persistent_views": {}}


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _journaled(store: BaseStore) -> JournaledStore:
    assert isinstance(store, JournaledStore)
    assert isinstance(store, VersionedStore)
    return store


def _full(state: dict[str, Any]) -> Callable[[], str]:
    return lambda: SER.serialize(state)


def test_every_adapter_implements_every_protocol(kind: str, new_store: NewStore) -> None:
    store = new_store(kind)
    assert isinstance(store, JournaledStore)
    assert isinstance(store, VersionedStore)
    assert isinstance(store, DescribedStore)
    assert store.kind == kind


def test_appends_are_loaded_in_order(kind: str, new_store: NewStore) -> None:
    store = _journaled(new_store(kind))
    store.save(BASE)  # type: ignore[attr-defined]
    state, version = store.load_versioned()  # type: ignore[attr-defined]
    for n in range(1, 6):
        state["application"]["n"] = n
        new = store.save_changes([(("application", "n"), n)], version, full=_full(state))
        assert new is not None
        assert new != version
        version = new
    store.save_changes([(("application", "names", 1), DELETED),
                        (("application", "names", 2), "b")], version, full=_full(state))
    assert store.load() == {"application": {"n": 5, "names": {2: "b"}},  # type: ignore[attr-defined]
                            "persistent_views": {}}


def test_a_stale_version_writes_nothing(kind: str, new_store: NewStore) -> None:
    store = _journaled(new_store(kind))
    store.save(BASE)  # type: ignore[attr-defined]
    _, version = store.load_versioned()  # type: ignore[attr-defined]
    other = new_store(kind)
    other.save({"application": {"n": 99}})  # type: ignore[attr-defined]
    assert store.save_changes([(("application", "n"), 1)], version,
                              full=_full(BASE)) is None
    assert store.load() == {"application": {"n": 99}}  # type: ignore[attr-defined]
    assert store.save_if_version(BASE, version) is None  # type: ignore[attr-defined]


def test_no_changes_at_the_current_version_is_a_no_op(kind: str, new_store: NewStore) -> None:
    store = _journaled(new_store(kind))
    store.save(BASE)  # type: ignore[attr-defined]
    version = store.version()  # type: ignore[attr-defined]
    assert store.save_changes([], version, full=_full(BASE)) == version
    assert store.version() == version  # type: ignore[attr-defined]


def test_the_first_commit_of_an_empty_store_is_a_whole_snapshot(kind: str,
                                                                new_store: NewStore) -> None:
    store = _journaled(new_store(kind))
    _, version = store.load_versioned()  # type: ignore[attr-defined]
    assert version == 0
    called: list[int] = []
    doc = {"application": {"n": 1}}

    def full() -> str:
        called.append(1)
        return SER.serialize(doc)

    assert store.save_changes([(("application", "n"), 1)], 0, full=full) is not None
    assert called
    assert store.load() == doc  # type: ignore[attr-defined]


def test_a_journal_past_its_budget_is_compacted(kind: str, new_store: NewStore) -> None:
    store = _journaled(new_store(kind))
    store.save(BASE)  # type: ignore[attr-defined]
    state, version = store.load_versioned()  # type: ignore[attr-defined]
    fulls = 0
    for n in range(40):  # 40 records of 4 KB: past the 64 KB minimum budget
        state["application"][f"k{n}"] = "x" * 4096

        def full() -> str:
            nonlocal fulls
            fulls += 1
            return SER.serialize(state)

        version = store.save_changes([(("application", f"k{n}"), "x" * 4096)], version,
                                     full=full) or -1
        assert version != -1
    assert fulls >= 1
    assert store.load() == state  # type: ignore[attr-defined]


def test_a_value_that_cannot_be_stored_writes_nothing(kind: str, new_store: NewStore) -> None:
    store = _journaled(new_store(kind))
    store.save(BASE)  # type: ignore[attr-defined]
    version = store.version()  # type: ignore[attr-defined]
    with pytest.raises(SerializationError):
        store.save_changes([(("application", "bad"), object())], version, full=_full(BASE))
    assert store.version() == version  # type: ignore[attr-defined]
    assert store.load() == BASE  # type: ignore[attr-defined]


def test_another_store_of_the_medium_catches_up_from_the_journal(kind: str,
                                                                 new_store: NewStore) -> None:
    writer = _journaled(new_store(kind))
    reader = _journaled(new_store(kind))
    writer.save(BASE)  # type: ignore[attr-defined]
    _doc, seen = reader.load_versioned()  # type: ignore[attr-defined]
    assert reader.load_changes(seen) == ([], seen)
    state, version = writer.load_versioned()  # type: ignore[attr-defined]
    for n in (1, 2):
        state["application"]["n"] = n
        version = writer.save_changes([(("application", "n"), n)], version,
                                      full=_full(state)) or -1
    caught = reader.load_changes(seen)
    assert caught is not None
    records, now = caught
    assert now == version == writer.version()  # type: ignore[attr-defined]
    assert records == [[[["application", "n"], 1]], [[["application", "n"], 2]]]
    writer.save({"application": {"n": 7}})  # type: ignore[attr-defined]
    assert reader.load_changes(now) is None  # a full write: load the document instead


def test_describe_and_check(kind: str, new_store: NewStore) -> None:
    store = new_store(kind)
    assert isinstance(store, DescribedStore)
    assert store.exists() is False
    assert store.describe().exists is False
    with pytest.raises(StateNotFoundError):
        require_state(store)
    store.save(BASE)  # type: ignore[attr-defined]
    state, version = _journaled(store).load_versioned()  # type: ignore[attr-defined]
    state["application"]["n"] = 1
    _journaled(store).save_changes([(("application", "n"), 1)], version, full=_full(state))
    require_state(store)
    info = store.describe()
    assert isinstance(info, StoreInfo)
    assert info.exists
    assert info.kind == kind
    assert info.location == store.location  # the redacted one
    assert info.size is not None
    assert info.snapshot_size is not None
    assert info.size == info.snapshot_size + (info.journal_size or 0)
    if kind != "file":  # a file's version is an opaque token, not shown
        assert info.version == store.version()  # type: ignore[attr-defined]
    checks, checked = store.check()
    assert all(isinstance(c, Check) and c.ok for c in checks), checks
    assert checked == state


def test_memory_stores_of_one_name_share_one_state() -> None:
    from cascadeui import sync
    from cascadeui.adapters import MemoryStore
    from cascadeui.persistence import MemoryBackend, backend_from_url

    name = "contract-shared"
    try:
        backend = backend_from_url(f"memory://{name}")
        assert isinstance(backend, MemoryBackend)
        assert sync.save_state(backend, BASE) is True
        assert MemoryBackend(name=name).store.load() == BASE
        assert sync.load_state(f"memory://{name}") == BASE
        assert MemoryStore().load() == {}  # no name: a private state
        assert MemoryStore(name).load() is not MemoryStore(name).load()  # fresh objects
    finally:
        MemoryStore.forget(name)
    assert MemoryStore(name).exists() is False


def test_a_file_store_creates_its_directory_on_the_first_write(tmp_path: Any) -> None:
    from cascadeui.adapters import FileStore

    path = tmp_path / "a" / "b" / "state.json"
    with FileStore(path) as store:
        store.save(BASE)
        assert store.load() == BASE
