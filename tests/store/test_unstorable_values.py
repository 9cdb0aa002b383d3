"""A value no backend can store is refused at dispatch with nothing applied (issue 23
item 1): before, it was applied in memory and every later durable write failed."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anyio.to_thread
import pytest
from _registry import kinds

from cascadeui._panel_data import PanelData
from cascadeui.actions import APPLICATION_SET
from cascadeui.adapters import BaseStore
from cascadeui.errors import SerializationError
from cascadeui.serializer import MAX_DEPTH
from cascadeui.store import StateStore

pytestmark = pytest.mark.anyio


class _Panel(PanelData):
    """The data half of every panel kind, bound to one store."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def _data_path(self) -> list[str]:
        return ["panels", "p1"]


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"v": [value]}
    return value


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("kind", kinds())
async def test_an_unstorable_value_is_refused_at_dispatch_and_later_writes_still_work(
        kind: str, durable: bool, new_store: Callable[[str], BaseStore]) -> None:
    store = StateStore()
    await store.enable_persistence(new_store(kind))
    try:
        await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1}, durable=True)
        before = store.state
        with pytest.raises(SerializationError, match="Decimal is not serializable") as info:
            await store.dispatch(APPLICATION_SET, {"path": ["price"], "value": Decimal("1.5")},
                                 durable=durable)
        assert info.value.path == "application.price"
        assert str(info.value).startswith("application.price: ")
        assert store.state is before  # nothing applied, durable or not
        with pytest.raises(SerializationError) as inner:
            await store.dispatch(APPLICATION_SET, {"path": ["cart"], "value": {
                "items": [1, {"cost": float("nan")}]}}, durable=durable)
        assert inner.value.path == "application.cart.items.1.cost"
        assert store.state is before
        await store.dispatch(APPLICATION_SET, {"path": ["b"], "value": 2}, durable=True)
        assert await store.flush()
    finally:
        await store.close()
    stored = await anyio.to_thread.run_sync(new_store(kind).load)
    assert stored["application"] == {"a": 1, "b": 2}


async def test_set_data_refuses_an_unstorable_value_and_the_next_click_is_stored(
        new_store: Callable[[str], BaseStore]) -> None:
    store = StateStore()
    await store.enable_persistence(new_store("sqlite"))
    panel = _Panel(store)
    try:
        with pytest.raises(SerializationError) as info:
            await panel.set_data("price", Decimal("1.5"))
        assert info.value.path == "application.panels.p1.price"
        assert dict(panel.data) == {}
        await panel.set_data("votes", 3)  # durable: it would time out if writes were stuck
        assert dict(panel.data) == {"votes": 3}
    finally:
        await store.close()


async def test_too_deep_a_value_names_the_users_path_in_a_short_message() -> None:
    store = StateStore()
    with pytest.raises(SerializationError, match="deeper than") as info:
        await store.dispatch(APPLICATION_SET, {"path": ["v"], "value": _nest(300)})
    assert info.value.path.startswith("application.v.v.0.v.0")
    assert "further down" in str(info.value)
    assert len(str(info.value)) < 200
    assert store.state["application"] == {}


async def test_an_integer_past_the_digit_limit_is_refused_in_and_out_of_containers() -> None:
    store = StateStore()
    for value, where in ((10 ** 5000, "application.n"),
                         ({"a": [1, 10 ** 5000]}, "application.n.a.1")):
        with pytest.raises(SerializationError, match="integer too large") as info:
            await store.dispatch(APPLICATION_SET, {"path": ["n"], "value": value})
        assert info.value.path == where
    assert store.state["application"] == {}


async def test_storable_values_of_every_kind_are_accepted() -> None:
    from datetime import date, datetime, timezone
    from enum import IntEnum

    class Mode(IntEnum):
        FAST = 1

    store = StateStore()
    value = {"t": datetime(2026, 1, 2, tzinfo=timezone.utc), "d": date(2026, 1, 2),
             "s": {1, 2}, "f": frozenset({"a"}), "tu": (1, "a"), "ints": {123: "x"},
             "mode": Mode.FAST, "big": 10 ** 1000, "deep": _nest(MAX_DEPTH // 2 - 5)}
    await store.dispatch(APPLICATION_SET, {"path": ["ok"], "value": value})
    await store.dispatch(APPLICATION_SET, {"path": [123, "n"], "value": 1.5})
    assert store.state["application"]["ok"] is value
