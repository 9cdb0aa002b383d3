"""Property tests (hypothesis) for StateSerializer's exact round trip (issue 7).

Arbitrary nested states with naive and aware datetimes, dates, sets, frozensets,
tuples and int/str/tuple keys come back exactly: same types, same values, same
offsets, through the serializer alone and through every real adapter. A value JSON
cannot hold always raises ``TypeError`` (``SerializationError``) naming its key path,
and nothing on disk (or in Redis) changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from _helpers import assert_exact
from _registry import build, dump, kinds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascadeui._backends import AsyncBackend
from cascadeui.adapters import FileStore
from cascadeui.errors import SerializationError
from cascadeui.serializer import StateSerializer

# database=None: hypothesis keeps nothing in the repository.
#: CASCADEUI_FUZZ_SCALE=20 multiplies every example count (the long run in docs/reliability.md).
SCALE = max(1, int(os.environ.get("CASCADEUI_FUZZ_SCALE", "1")))
FAST = settings(max_examples=40 * SCALE, deadline=None, database=None)
STORES = settings(max_examples=25 * SCALE, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])

SER = StateSerializer()

# -- strategies --------------------------------------------------------------------------

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m)))
naive_dt = st.datetimes()
aware_dt = st.builds(lambda d, tz: d.replace(tzinfo=tz), st.datetimes(), offsets)
dates = st.dates()
floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**200), max_value=2**200)
# Keys that look like the serializer's own tags must survive too.
texts = st.text(max_size=12) | st.sampled_from(
    ["$set", "$map", "$dict", "$tuple", "$date", "$datetime", "$frozenset", "a.b", "a/b",
     "'\"", "\x00", ""])

scalars = st.none() | st.booleans() | ints | floats | texts | naive_dt | aware_dt | dates
hashables = st.recursive(
    st.booleans() | ints | texts | naive_dt | aware_dt | dates,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4)
keys = ints | texts | st.tuples(ints | texts, ints | texts)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (st.lists(inner, max_size=4)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(texts, inner, max_size=4)
            | st.dictionaries(keys, inner, max_size=4)
            | st.sets(hashables, max_size=4)
            | st.frozensets(hashables, max_size=4))


values = st.recursive(scalars, _containers, max_leaves=25)
states = st.dictionaries(texts, values, max_size=5)




# -- round trip ----------------------------------------------------------------------------


@FAST
@given(states)
def test_round_trip_is_exact(state: dict[str, Any]) -> None:
    text = SER.serialize(state)
    assert "\n" not in text  # compact output
    assert_exact(state, SER.deserialize(text))
    assert_exact(state, SER.deserialize(text.encode("utf-8")))


@FAST
@given(states)
def test_serialize_is_deterministic_and_idempotent(state: dict[str, Any]) -> None:
    text = SER.serialize(state)
    assert SER.serialize(SER.deserialize(text)) == SER.serialize(SER.deserialize(text))
    again = SER.deserialize(SER.serialize(SER.deserialize(text)))
    assert_exact(state, again)


def test_examples_named_by_the_issue() -> None:
    aware = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    state = {"application": {
        "naive": datetime(2026, 1, 2, 3, 4, 5), "aware": aware, "day": date(2026, 1, 2),
        "tags": {"a", "b"}, "frozen": frozenset({(1, 2)}), "pair": (1, "x"),
        "scores": {123456789012345678: 5, 42: 1}, "grid": {(1, 2): "x"},
        "$set": [1], "nested": {"$tuple": [1]}}}
    back = SER.deserialize(SER.serialize(state))
    assert_exact(state, back)
    assert back["application"]["scores"][123456789012345678] == 5  # scores[user.id] works
    assert back["application"]["aware"].utcoffset() == timedelta(hours=5, minutes=30)


# -- non-serializable values ---------------------------------------------------------------


class Opaque:
    """A user object a bot might put in state by mistake."""


BAD_VALUES: list[Callable[[], Any]] = [
    object, Opaque, lambda: b"raw", lambda: 1 + 2j, lambda: Decimal("1.5"),
    lambda: float("nan"), lambda: float("inf"), lambda: -float("inf"), lambda: bytearray(b"x"),
    lambda: range(3), lambda: (lambda: None),
]


def _fmt(path: list[Any]) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


@st.composite
def poisoned(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A state with exactly one unstorable value planted at a random dict/list position."""
    state = draw(st.dictionaries(texts, st.recursive(
        st.none() | ints | texts | naive_dt,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=10), max_size=4))
    bad = draw(st.sampled_from(BAD_VALUES))()
    node: Any = state
    path: list[Any] = []
    while True:
        containers = ([k for k, v in node.items() if isinstance(v, (dict, list))]
                      if isinstance(node, dict) else
                      [i for i, v in enumerate(node) if isinstance(v, (dict, list))])
        if not containers or draw(st.booleans()):
            break
        step = draw(st.sampled_from(containers))
        path.append(step)
        node = node[step]
    if isinstance(node, dict):
        key = draw(keys)
        node[key] = bad
    else:
        key = draw(st.integers(min_value=0, max_value=len(node)))
        node.insert(key, bad)
    return state, _fmt([*path, key])


@FAST
@given(poisoned())
def test_unstorable_value_raises_type_error_with_its_path(case: tuple[dict[str, Any], str]) -> None:
    state, path = case
    with pytest.raises(TypeError) as info:
        SER.serialize(state)
    assert isinstance(info.value, SerializationError)
    assert info.value.path == path
    assert path in str(info.value)


@pytest.mark.parametrize("odd", ["\ud800", "ok\udfffok", "\udc80\ud800x"])
def test_lone_surrogate_round_trips_as_utf8(odd: str) -> None:
    # A lone surrogate is a valid Python str without a UTF-8 form: written raw, every
    # medium failed with UnicodeEncodeError. JSON \u escapes keep it exactly.
    state = {"application": {"name": [odd], odd: 1, (odd, 2): {odd}}}
    text = SER.serialize(state)
    text.encode("utf-8")  # strict: must not raise
    assert_exact(state, SER.deserialize(text.encode("utf-8")))


def test_too_deep_state_is_a_serialization_error() -> None:
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="nesting"):
        SER.serialize({"a": deep})


def test_huge_int_is_rejected_not_crashing() -> None:
    with pytest.raises(SerializationError) as info:
        SER.serialize({"a": {"b": 10**5000}})
    assert info.value.path == "state['a']['b']"


# -- through every real adapter ------------------------------------------------------------


@pytest.fixture(params=kinds())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with build(request.param, request, tmp_path) as s:
        # Every byte (row, key) the medium keeps, to prove that a failed save changed nothing.
        s.snapshot_medium = lambda: dump(request.param, request, tmp_path)
        yield s


@STORES
@given(state=states)
def test_adapters_round_trip_exactly(store: Any, state: dict[str, Any]) -> None:
    store.save(state)
    assert_exact(state, store.load())


@STORES
@given(good=states, case=poisoned())
def test_failed_serialization_changes_nothing_stored(
        store: Any, good: dict[str, Any], case: tuple[dict[str, Any], str]) -> None:
    store.save(good)
    store.save(good)  # a backup generation exists too
    before = store.snapshot_medium()
    bad, path = case
    with pytest.raises(SerializationError) as info:
        store.save(bad)
    assert info.value.path == path
    with pytest.raises(TypeError), store.transaction() as st_:
        st_["replaced"] = bad
    assert store.snapshot_medium() == before
    assert_exact(good, store.load())


def test_facade_raises_type_error_instead_of_returning_false(tmp_path: Path) -> None:
    async def main() -> None:
        backend = AsyncBackend(FileStore(tmp_path / "s.json"))
        assert await backend.save_state({"a": 1})
        with pytest.raises(TypeError, match=r"state\['a'\]\['b'\]"):
            await backend.save_state({"a": {"b": Opaque()}})
        assert await backend.load_state() == {"a": 1}
        await backend.aclose()

    anyio.run(main)
    # No .bak, no temp file (s.json.lineage is the state's lineage id, issue 11).
    assert set(os.listdir(tmp_path)) - {"s.json.lock", "s.json.lock.commit"} == {
        "s.json", "s.json.lineage"}
