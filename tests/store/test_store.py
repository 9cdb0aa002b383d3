"""StateStore without persistence: reducers, middleware, subscribers, batch, sharing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cascadeui
from cascadeui.actions import (
    APPLICATION_DELETE,
    APPLICATION_SET,
    BATCH_APPLIED,
    PERSISTENT_VIEW_REGISTERED,
    PERSISTENT_VIEW_UNREGISTERED,
    PERSISTENT_VIEWS_REMOVED,
    STATE_RESTORED,
    Action,
)
from cascadeui.store import (
    ReducerError,
    State,
    StateStore,
    delete_in,
    get_store,
    reset_store,
    set_in,
)

pytestmark = pytest.mark.anyio


def test_initial_state_and_exports() -> None:
    store = StateStore()
    assert store.state == {"application": {}, "persistent_views": {}, "views": {},
                           "sessions": {}}
    assert store.backend is None
    assert cascadeui.get_store is get_store
    assert cascadeui.StateStore is StateStore
    assert {"get_store", "StateStore"} <= set(cascadeui.__all__)


def test_get_store_is_process_wide_and_reset_replaces_it() -> None:
    first = get_store()
    assert get_store() is first
    fresh = reset_store()
    assert fresh is not first
    assert get_store() is fresh


def test_set_in_copies_only_the_path() -> None:
    shared = {"big": list(range(10))}
    root: dict[str, Any] = {"a": {"b": {"c": 1}, "keep": shared}, "other": shared}
    new = set_in(root, ["a", "b", "c"], 2)
    assert new["a"]["b"]["c"] == 2
    assert root["a"]["b"]["c"] == 1
    assert new["other"] is shared
    assert new["a"]["keep"] is shared
    assert new is not root
    assert new["a"] is not root["a"]
    created = set_in(root, ["x", "y"], 5)
    assert created["x"] == {"y": 5}
    assert created["a"] is root["a"]
    same_leaf = root["a"]["b"]["c"]
    assert set_in(root, ["a", "b", "c"], same_leaf) is root
    with pytest.raises(TypeError, match="holds a int"):
        set_in(root, ["a", "b", "c", "d"], 1)
    with pytest.raises(ValueError, match="non-empty"):
        set_in(root, [], 1)


def test_delete_in_copies_only_the_path() -> None:
    shared = {"s": 1}
    root: dict[str, Any] = {"a": {"b": 1, "c": shared}, "d": shared}
    new = delete_in(root, ["a", "b"])
    assert new == {"a": {"c": shared}, "d": shared}
    assert root["a"]["b"] == 1
    assert new["d"] is shared
    assert new["a"]["c"] is shared
    assert delete_in(root, ["a", "missing"]) is root
    assert delete_in(root, ["nope", "x"]) is root
    assert delete_in(root, ["a", "b", "deeper"]) is root


async def test_builtin_application_actions_share_structure() -> None:
    store = StateStore()
    await store.dispatch(APPLICATION_SET, {"path": ["guilds", "1", "prefix"], "value": "!"})
    await store.dispatch(APPLICATION_SET, {"path": ["guilds", "2"], "value": {"p": "?"}})
    before = store.state
    after = await store.dispatch(APPLICATION_SET, {"path": ["guilds", "1", "prefix"],
                                                   "value": "$"})
    assert after is store.state
    assert after["application"]["guilds"]["1"]["prefix"] == "$"
    assert before["application"]["guilds"]["1"]["prefix"] == "!"  # old snapshot intact
    # Untouched subtrees and slices are the very same objects.
    assert after["application"]["guilds"]["2"] is before["application"]["guilds"]["2"]
    for name in ("persistent_views", "views", "sessions"):
        assert after[name] is before[name]
    await store.dispatch(APPLICATION_DELETE, {"path": ["guilds", "1"]})
    assert store.state["application"] == {"guilds": {"2": {"p": "?"}}}
    unchanged = store.state
    assert await store.dispatch(APPLICATION_DELETE, {"path": ["nope"]}) is unchanged
    await store.dispatch(APPLICATION_SET, {"path": [], "value": {"fresh": True}})
    assert store.state["application"] == {"fresh": True}


async def test_builtin_persistent_view_actions() -> None:
    store = StateStore()
    payload = {"state_key": "panel:1", "class_name": "Panel", "message_id": 2**63 - 1,
               "channel_id": "20", "guild_id": None, "user_id": "40"}
    await store.dispatch(PERSISTENT_VIEW_REGISTERED, payload)
    assert store.state["persistent_views"] == {"panel:1": {
        "class_name": "Panel", "message_id": str(2**63 - 1), "channel_id": "20",
        "guild_id": None, "user_id": "40"}}
    for key in ("panel:2", "panel:3"):
        await store.dispatch(PERSISTENT_VIEW_REGISTERED, {**payload, "state_key": key})
    await store.dispatch(PERSISTENT_VIEW_UNREGISTERED, {"state_key": "panel:1"})
    assert set(store.state["persistent_views"]) == {"panel:2", "panel:3"}
    await store.dispatch(PERSISTENT_VIEWS_REMOVED, {"state_keys": ["panel:2", "gone"]})
    assert set(store.state["persistent_views"]) == {"panel:3"}
    with pytest.raises(ValueError, match="missing state_key"):
        await store.dispatch(PERSISTENT_VIEW_UNREGISTERED, {})
    await store.dispatch(STATE_RESTORED, {"state": {"application": {"x": 1}}})
    assert store.state["application"] == {"x": 1}
    assert set(store.state["persistent_views"]) == {"panel:3"}  # absent slice kept


async def test_sync_and_async_reducers_chain_in_order() -> None:
    store = StateStore()
    calls: list[str] = []

    def sync_reducer(action: Action, state: State) -> State:
        calls.append("sync")
        return {**state, "sessions": {**state["sessions"], "n": action["payload"]}}

    async def async_reducer(action: Action, state: State) -> State:
        await asyncio.sleep(0)
        calls.append("async")
        return {**state, "sessions": {**state["sessions"],
                                      "double": state["sessions"]["n"] * 2}}

    store.register_reducer("COUNT", sync_reducer)
    store.register_reducer("COUNT", async_reducer)
    state = await store.dispatch("COUNT", 21)
    assert calls == ["sync", "async"]
    assert state["sessions"] == {"n": 21, "double": 42}
    store.register_reducer("COUNT", sync_reducer, replace=True)
    await store.dispatch("COUNT", 1)
    assert store.state["sessions"] == {"n": 1, "double": 42}


async def test_concurrent_async_reducers_do_not_lose_updates() -> None:
    store = StateStore()

    async def slow_increment(action: Action, state: State) -> State:
        n = state["application"].get("n", 0)
        await asyncio.sleep(0.001)
        return {**state, "application": {**state["application"], "n": n + 1}}

    store.register_reducer("INC", slow_increment)
    await asyncio.gather(*(store.dispatch("INC") for _ in range(20)))
    assert store.state["application"]["n"] == 20


async def test_unknown_action_changes_nothing_but_reaches_subscribers() -> None:
    store = StateStore()
    seen: list[str] = []
    store.subscribe(lambda state, action: seen.append(action["type"]))
    before = store.state
    assert await store.dispatch("NOBODY_HANDLES_THIS") is before
    assert seen == ["NOBODY_HANDLES_THIS"]


async def test_reducer_contract_is_enforced_cheaply() -> None:
    store = StateStore()

    def returns_none(action: Action, state: State) -> Any:
        return None

    def drops_slice(action: Action, state: State) -> State:
        return {"application": {}}

    def swaps_slice_in_place(action: Action, state: State) -> State:
        state["application"] = {"sneaky": True}
        return state

    store.register_reducer("NONE", returns_none)
    store.register_reducer("DROP", drops_slice)
    store.register_reducer("SWAP", swaps_slice_in_place)
    before = store.state
    with pytest.raises(ReducerError, match="returned NoneType"):
        await store.dispatch("NONE")
    with pytest.raises(ReducerError, match="'persistent_views' slice"):
        await store.dispatch("DROP")
    with pytest.raises(ReducerError, match="in place"):
        await store.dispatch("SWAP")
    assert store.state is before
    assert store.state["application"] == {}  # the in-place swap was undone


async def test_check_mutations_catches_deep_in_place_change() -> None:
    store = StateStore(check_mutations=True)
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": {"n": 1}})

    def mutates(action: Action, state: State) -> State:
        state["application"]["a"]["n"] = 99
        return state

    store.register_reducer("MUTATE", mutates)
    with pytest.raises(ReducerError, match="mutated"):
        await store.dispatch("MUTATE")


async def test_reducer_that_dispatches_is_refused() -> None:
    store = StateStore()

    async def nested(action: Action, state: State) -> State:
        await store.dispatch("OTHER")
        return state

    store.register_reducer("NESTED", nested)
    with pytest.raises(RuntimeError, match="must not dispatch"):
        await store.dispatch("NESTED")


async def test_middleware_runs_in_order_and_can_rewrite_or_drop() -> None:
    store = StateStore()
    order: list[str] = []
    async def outer(action: Action, call_next: Callable[[Action], Awaitable[State]]) -> State:
        order.append("outer-in")
        state = await call_next(action)
        order.append("outer-out")
        return state

    async def inner(action: Action, call_next: Callable[[Action], Awaitable[State]]) -> State:
        order.append("inner-in")
        if action["type"] == "DROP":
            return store.state
        rewritten: Action = {"type": action["type"],
                             "payload": {**action["payload"], "value": "rewritten"}}
        state = await call_next(rewritten)
        order.append("inner-out")
        return state

    store.add_middleware(outer)
    store.add_middleware(inner)
    seen: list[Action] = []
    store.subscribe(lambda state, action: seen.append(action))
    await store.dispatch(APPLICATION_SET, {"path": ["k"], "value": "original"})
    assert order == ["outer-in", "inner-in", "inner-out", "outer-out"]
    assert store.state["application"] == {"k": "rewritten"}
    assert seen[0]["payload"]["value"] == "rewritten"
    await store.dispatch("DROP")
    assert len(seen) == 1  # a dropped action reaches no reducer and no subscriber


async def test_subscribers_filters_selectors_and_unsubscribe() -> None:
    store = StateStore()
    everything: list[str] = []
    only_set: list[str] = []
    prefix_changes: list[Any] = []
    async_seen: list[str] = []

    async def async_cb(state: State, action: Action) -> None:
        await asyncio.sleep(0)
        async_seen.append(action["type"])

    store.subscribe(lambda s, a: everything.append(a["type"]))
    unsub = store.subscribe(lambda s, a: only_set.append(a["type"]),
                            action_types=[APPLICATION_SET])
    store.subscribe(lambda s, a: prefix_changes.append(s["application"]["prefix"]),
                    selector=lambda s: s["application"]["prefix"])
    store.subscribe(async_cb)
    await store.dispatch(APPLICATION_SET, {"path": ["prefix"], "value": "!"})
    await store.dispatch(APPLICATION_SET, {"path": ["other"], "value": 1})
    await store.dispatch(APPLICATION_DELETE, {"path": ["other"]})
    assert everything == [APPLICATION_SET, APPLICATION_SET, APPLICATION_DELETE]
    assert only_set == [APPLICATION_SET, APPLICATION_SET]
    assert prefix_changes == ["!"]  # missing -> "!" fired; unrelated changes did not
    assert async_seen == everything
    unsub()
    unsub()  # idempotent
    await store.dispatch(APPLICATION_SET, {"path": ["prefix"], "value": "?"})
    assert only_set == [APPLICATION_SET, APPLICATION_SET]
    assert prefix_changes == ["!", "?"]


async def test_failing_subscriber_is_logged_and_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore()
    seen: list[str] = []

    def broken(state: State, action: Action) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    store.subscribe(lambda s, a: seen.append(a["type"]))
    await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
    assert seen == [APPLICATION_SET]
    assert "subscriber" in caplog.text
    assert "boom" in caplog.text


async def test_batch_notifies_once_with_all_actions() -> None:
    store = StateStore()
    notes: list[Action] = []
    filtered: list[Action] = []
    store.subscribe(lambda s, a: notes.append(a))
    store.subscribe(lambda s, a: filtered.append(a), action_types=[APPLICATION_DELETE])
    async with store.batch():
        await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
        async with store.batch():  # nested: still one notification at the outer end
            await store.dispatch(APPLICATION_SET, {"path": ["b"], "value": 2})
        await store.dispatch(APPLICATION_DELETE, {"path": ["a"]})
        assert store.state["application"] == {"b": 2}  # visible inside the block
        assert notes == []
    assert len(notes) == 1
    assert notes[0]["type"] == BATCH_APPLIED
    assert [a["type"] for a in notes[0]["payload"]["actions"]] == [
        APPLICATION_SET, APPLICATION_SET, APPLICATION_DELETE]
    assert len(filtered) == 1  # the batch contained a matching action


async def test_batch_notifies_even_when_the_block_raises() -> None:
    store = StateStore()
    notes: list[Action] = []
    store.subscribe(lambda s, a: notes.append(a))
    async def failing_block() -> None:
        async with store.batch():
            await store.dispatch(APPLICATION_SET, {"path": ["a"], "value": 1})
            raise KeyError("stop")

    with pytest.raises(KeyError):
        await failing_block()
    assert store.state["application"] == {"a": 1}
    assert [a["type"] for a in notes] == [APPLICATION_SET]


async def test_dispatch_hot_path_does_not_copy_the_state() -> None:
    store = StateStore()
    big = {str(i): {"payload": "x" * 10} for i in range(50_000)}
    await store.dispatch(APPLICATION_SET, {"path": ["big"], "value": big})
    await store.dispatch(APPLICATION_SET, {"path": ["small"], "value": 0})
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(1000):
        await store.dispatch(APPLICATION_SET, {"path": ["small"], "value": i})
    elapsed = loop.time() - start
    assert store.state["application"]["big"] is big
    # 1,000 dispatches over a 50,000-key subtree; a copy per dispatch would take seconds.
    assert elapsed < 0.5, elapsed


async def test_views_removed_keeps_a_panel_resent_meanwhile() -> None:
    """setup_persistence's purge names the message it found gone; a re-send survives."""
    store = StateStore()
    for key, mid in (("a", "1"), ("b", "2")):
        await store.dispatch(PERSISTENT_VIEW_REGISTERED, {
            "state_key": key, "class_name": "P", "message_id": mid, "channel_id": "9",
            "guild_id": None, "user_id": None})
    await store.dispatch(PERSISTENT_VIEWS_REMOVED,
                         {"state_keys": ["a", "b"], "message_ids": {"a": "1", "b": "old"}})
    assert list(store.state["persistent_views"]) == ["b"]
