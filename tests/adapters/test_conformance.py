"""The project's own adapters through the shipped conformance class (issue 20, item 5).

One ``AdapterContract`` subclass per entry of ``_registry.BACKENDS``, built from the
registry, so a new backend there runs the whole contract. Below them, what only the
registry's adapters promise (their ``kind`` names, the memory store's shared names), and
the proof that the class fails a broken adapter, naming the broken promise.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from _registry import BACKENDS, kinds

from cascadeui._targets import require_state
from cascadeui.adapters import DescribedStore, JournaledStore, VersionedStore
from cascadeui.errors import StateNotFoundError
from cascadeui.testing.conformance import AdapterContract

BASE = {"application": {"n": 0, "names": {1: "a"}}, "persistent_views": {}}


class _RegistryContract(AdapterContract):
    """The contract over one registry entry (``kind``), its media per test."""

    kind = ""

    @pytest.fixture(autouse=True)
    def _registry_request(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def make_adapter(self, tmp_path: Path, name: str) -> Any:
        return BACKENDS[self.kind].build(self.request, tmp_path, name)

    def lose_medium(self, tmp_path: Path, name: str) -> None:
        BACKENDS[self.kind].lose(self.request, tmp_path, name)


for _kind in BACKENDS:
    _name = f"TestContract{_kind.title()}"
    globals()[_name] = type(_name, (_RegistryContract,), {"kind": _kind})


@pytest.mark.parametrize("kind", kinds())
def test_every_registry_adapter_implements_every_protocol(kind: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    with BACKENDS[kind].build(request, tmp_path, "state") as store:
        assert isinstance(store, JournaledStore)
        assert isinstance(store, VersionedStore)
        assert isinstance(store, DescribedStore)
        assert store.kind == kind
        with pytest.raises(StateNotFoundError):  # what the resolver tells readers
            require_state(store)
        store.save(BASE)
        require_state(store)


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


def test_a_file_store_creates_its_directory_on_the_first_write(tmp_path: Path) -> None:
    from cascadeui.adapters import FileStore

    path = tmp_path / "a" / "b" / "state.json"
    with FileStore(path) as store:
        store.save(BASE)
        assert store.load() == BASE


BROKEN = '''
from cascadeui.adapters import MemoryStore
from cascadeui.testing.conformance import AdapterContract


class DropsAKey(MemoryStore):
    """Loses the last top-level key of every state it saves."""

    def save(self, state):
        super().save(dict(list(state.items())[:-1]) if len(state) > 1 else state)


class StuckVersion(MemoryStore):
    """Reports one version whatever it commits."""

    def version(self):
        return 1 if super().version() else 0


class TestDropsAKey(AdapterContract):
    def make_adapter(self, tmp_path, name):
        return DropsAKey(f"{tmp_path}:{name}")


class TestStuckVersion(AdapterContract):
    def make_adapter(self, tmp_path, name):
        return StuckVersion(f"{tmp_path}:{name}")
'''


def test_a_broken_adapter_fails_naming_the_broken_promise(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=textwrap.dedent(BROKEN))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider",
                                           "-k", "round_trip or every_commit")
    result.assert_outcomes(failed=2, passed=2)
    out = result.stdout.str()
    assert "TestDropsAKey::test_loadsave_round_trip_is_exact" in out
    assert "broken promise: load() returns exactly what save() stored" in out
    assert "missing keys: 'persistent_views'; extra keys: none" in out
    assert "TestStuckVersion::test_cas_version_changes_on_every_commit" in out
    assert "broken promise: version() changes on every commit" in out
