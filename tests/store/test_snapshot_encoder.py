"""SnapshotEncoder: incremental encoding gives exactly StateSerializer.serialize's text."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadeui.actions import set_in
from cascadeui.errors import SerializationError
from cascadeui.serializer import SnapshotEncoder, StateSerializer

SER = StateSerializer()

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(
    st.one_of(scalars, st.sets(st.integers(), max_size=3).map(set),
              st.tuples(st.integers(), st.text(max_size=3))),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4),
                            st.dictionaries(st.integers(), inner, max_size=3)),
    max_leaves=20)
states = st.dictionaries(st.sampled_from(["application", "persistent_views"]),
                         st.dictionaries(st.text(max_size=4), values, max_size=5))


@settings(max_examples=150, deadline=None, database=None)
@given(state=states, edits=st.lists(st.tuples(st.lists(st.text(max_size=3), min_size=1,
                                                       max_size=3), values), max_size=5))
def test_successive_snapshots_encode_exactly(state: dict[str, Any],
                                             edits: list[tuple[list[str], Any]]) -> None:
    encoder = SnapshotEncoder(levels=2, wide=2)  # small thresholds: exercise every path
    assert encoder.encode(state) == SER.serialize(state)
    for path, value in edits:
        try:
            state = set_in(state, ["application", *path], value)
        except TypeError:  # a non-dict on the way: not an edit a reducer could make
            continue
        assert encoder.encode(state) == SER.serialize(state)


def test_unchanged_subtrees_are_not_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    big = {f"u{i}": {"n": i} for i in range(200)}
    state = {"application": {"users": big, "small": 0}}
    encoder = SnapshotEncoder()
    encoder.encode(state)
    calls: list[Any] = []
    original = StateSerializer.encode_value

    def counting(self: StateSerializer, value: Any, **kw: Any) -> str:
        calls.append(value)
        return original(self, value, **kw)

    monkeypatch.setattr(StateSerializer, "encode_value", counting)
    state = set_in(state, ["application", "small"], 1)
    assert encoder.encode(state) == SER.serialize(state)
    assert calls == [1]  # only the changed leaf; the 200 users came from the memo


def test_errors_name_the_full_path() -> None:
    encoder = SnapshotEncoder()
    state = {"application": {"a": {"b": [1, {"when": object()}]}}}
    with pytest.raises(SerializationError) as info:
        encoder.encode(state)
    assert info.value.path == "state['application']['a']['b'][1]['when']"
    ok = {"application": {"t": datetime(2026, 1, 1, tzinfo=timezone.utc)}}
    assert encoder.encode(ok) == SER.serialize(ok)  # the encoder is usable after an error
