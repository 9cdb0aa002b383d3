"""The depth limit holds through the journal (issue 11 item 5): every commit keeps the state
writable whole, so compaction, ``sync.transaction``, ``cascadeui set`` and migrations keep
working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from _registry import build, kinds

from cascadeui._backends import AsyncBackend
from cascadeui.actions import APPLICATION_SET
from cascadeui.errors import SerializationError
from cascadeui.serializer import MAX_DEPTH, StateSerializer
from cascadeui.store import StateStore

KINDS = kinds()
#: ``state["application"]["deep"]`` nests this many dicts: legal on its own.
BASE = 150
#: The key path to the innermost of them, plus a new key ``x`` there (152 keys deep).
DEEP_PATH = ["deep", *["k"] * (BASE - 1), "x"]
#: A value at DEEP_PATH may nest this many dicts and no more: its top sits at depth 152
#: (``state`` is depth 0, ``state["application"]`` depth 1), the last at MAX_DEPTH - 1.
ROOM = MAX_DEPTH - (1 + len(DEEP_PATH))


def nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


def rewrite_whole(kind: str, request: pytest.FixtureRequest, tmp_path: Path
                  ) -> dict[str, Any]:
    """Load snapshot + journal and write it whole again: what compaction and tools do."""
    with build(kind, request, tmp_path) as adapter:
        state = adapter.load()
        adapter.save(state)
        return state



@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.anyio
async def test_a_dispatch_that_would_nest_too_deep_is_refused_and_nothing_is_applied(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    backend = await anyio.to_thread.run_sync(
        lambda: AsyncBackend(build(kind, request, tmp_path)))
    store = StateStore()
    await store.enable_persistence(backend)
    try:
        await store.dispatch(APPLICATION_SET, {"path": ["deep"], "value": nest(BASE)},
                             durable=True)
        await store.dispatch(APPLICATION_SET, {"path": ["small"], "value": nest(ROOM + 1)},
                             durable=True)  # the same value is legal higher up
        before = store.state
        with pytest.raises(SerializationError, match="deeper than") as info:
            await store.dispatch(APPLICATION_SET,
                                 {"path": DEEP_PATH, "value": nest(ROOM + 1)}, durable=True)
        assert info.value.path.startswith("application.deep.k.k.k")
        assert store.state is before  # refused: nothing applied
        # The deepest legal change is accepted, journaled, and the whole state still saves.
        await store.dispatch(APPLICATION_SET, {"path": DEEP_PATH, "value": nest(ROOM)},
                             durable=True)
        assert await store.flush()
    finally:
        await store.close()  # compacts: a whole write of what the journal built
    state = await anyio.to_thread.run_sync(rewrite_whole, kind, request, tmp_path)
    node = state["application"]["deep"]
    for key in DEEP_PATH[1:]:
        node = node[key]
    assert node == nest(ROOM)


@pytest.mark.parametrize("kind", KINDS)
def test_a_journal_append_is_held_to_the_whole_document_depth(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    path = ("application", *DEEP_PATH)
    with build(kind, request, tmp_path) as adapter:
        adapter.save({"application": {"deep": nest(BASE)}})
        _, version = adapter.load_versioned()  # type: ignore[union-attr]
        full_writes: list[int] = []

        def full() -> str:
            full_writes.append(1)
            return StateSerializer().serialize(adapter.load())

        with pytest.raises(SerializationError, match="deeper than") as info:
            adapter.save_changes([(path, nest(ROOM + 1))], version,  # type: ignore[union-attr]
                                 full=full)
        assert info.value.path.startswith("state['application']['deep']")
        assert adapter.version() == version  # type: ignore[union-attr]  # nothing written
        assert adapter.save_changes([(path, nest(ROOM))], version,  # type: ignore[union-attr]
                                    full=full) is not None
        assert full_writes == []  # it was an append
    rewrite_whole(kind, request, tmp_path)  # loads, and is writable whole again
