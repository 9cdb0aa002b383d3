"""StateSerializer: exact round trip, readable tags, clear errors (issue 2)."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cascadeui.errors import SerializationError, StateCorruptedError
from cascadeui.serializer import MAX_DEPTH, StateSerializer

SER = StateSerializer()


def rt(state: dict[str, Any]) -> dict[str, Any]:
    return SER.deserialize(SER.serialize(state))


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (== alone says 1 == 1.0 == True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            same(k, next(k2 for k2 in b if k2 == k)) and same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    return bool(a == b)


class Color(enum.IntEnum):
    RED = 1


class Mode(str, enum.Enum):
    FAST = "fast"


@pytest.mark.parametrize("value", [
    datetime(2026, 1, 2, 3, 4, 5, 6),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2026, 7, 1, tzinfo=ZoneInfo("America/New_York")),
    date(2026, 2, 28),
    {1, 2, 3}, set(), {"b", "a"}, {(1, 2), (3, 4)}, {1, "a", None},
    frozenset({1, 2}), frozenset(),
    (), (1,), (1, (2, (3, [4, (5,)]))), ("a", {"k": (1,)}),
    {1: "a", 2: "b"}, {1: "int", "1": "str"}, {(1, 2): "t"}, {None: 1, True: 2, 1.5: 3},
    {frozenset({1}): "fs"}, {date(2026, 1, 1): "d"}, {datetime(2026, 1, 1): "dt"},
    {"$set": [1, 2]}, {"$datetime": "2026-01-01"}, {"$dict": []}, {"$other": 1},
    {"a": {"$tuple": [1]}}, [{"$map": []}],
    2**100, -(2**100), 0.1, -0.0, 1e308, "", "\x00\u2028\U0001f600", True, None,
    [1, [2, [3]]],
])
def test_exact_round_trip(value: Any) -> None:
    state = {"v": value, "nested": {"list": [value], "deep": {"x": value}}}
    back = rt(state)
    assert same(back, state), (back, state)


def test_zoneinfo_round_trip_keeps_zone_and_fold() -> None:
    when = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris"))
    back = rt({"t": when})["t"]
    assert back.tzinfo == ZoneInfo("Europe/Paris")
    assert back.utcoffset() == timedelta(hours=1)  # the second 02:30 (after the change)
    assert back.fold == 1


def test_tagged_format_is_readable_and_compact() -> None:
    text = SER.serialize({
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "day": date(2026, 1, 2),
        "seen": {3, 1, 2},
        "pair": (1, "a"),
        "scores": {123: 4},
        "esc": {"$set": 1},
        "plain": ["x", 1.5, None],
    })
    assert text == (
        '{"when":{"$datetime":"2026-01-02T03:04:05+00:00"},"day":{"$date":"2026-01-02"},'
        '"seen":{"$set":[1,2,3]},"pair":{"$tuple":[1,"a"]},"scores":{"$map":[[123,4]]},'
        '"esc":{"$dict":[["$set",1]]},"plain":["x",1.5,null]}')
    assert " " not in text
    assert SER.serialize({"s": "\u00e9\U0001f600"}) == '{"s":"\u00e9\U0001f600"}'


def test_plain_json_from_older_files_loads_unchanged() -> None:
    old = '{"started": "2026-01-01T00:00:00", "seen": ["a", "b"], "scores": {"123": 4}}'
    assert SER.deserialize(old) == {"started": "2026-01-01T00:00:00", "seen": ["a", "b"],
                                    "scores": {"123": 4}}
    pretty = json.dumps({"s": {"$set": [1]}, "t": {"$tuple": [1]}}, indent=4)
    assert SER.deserialize(pretty) == {"s": {1}, "t": (1,)}
    assert SER.deserialize(b'{"a": 1}') == {"a": 1}


def test_json_subclasses_are_stored_as_their_base_type() -> None:
    state = {"color": Color.RED, "mode": Mode.FAST, "od": OrderedDict(b=1, a=2)}
    back = rt(state)
    assert back == {"color": 1, "mode": "fast", "od": {"b": 1, "a": 2}}
    assert type(back["color"]) is int
    assert type(back["mode"]) is str
    assert type(back["od"]) is dict
    assert rt(OrderedDict(x=1)) == {"x": 1}  # any Mapping is accepted as the state


@pytest.mark.parametrize(("state", "path"), [
    ({"application": {"when": Decimal("1")}}, "state['application']['when']"),
    ({"a": [1, 2, {"b": object()}]}, "state['a'][2]['b']"),
    ({"a": {5: timedelta(1)}}, "state['a'][5]"),
    ({"a": ({"x": time(1)},)}, "state['a'][0]['x']"),
    ({"a": {Decimal("1"): 1}}, "state['a'][Decimal('1')]"),
    ({"a": {complex(1, 2)}}, "state['a']"),
    ({"a": b"bytes"}, "state['a']"),
])
def test_unstorable_value_raises_type_error_naming_the_path(state: dict[str, Any],
                                                            path: str) -> None:
    with pytest.raises(TypeError) as info:
        SER.serialize(state)
    err = info.value
    assert isinstance(err, SerializationError)
    assert err.path.startswith(path)
    assert str(err).startswith(path)
    assert "not serializable" in str(err)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_rejected(bad: float) -> None:
    for state, path in [({"x": bad}, "state['x']"), ({"l": [0, bad]}, "state['l'][1]"),
                        ({"s": {bad}}, "state['s']"), ({"m": {bad: 1}}, "state['m']")]:
        with pytest.raises(SerializationError, match="not valid JSON") as info:
            SER.serialize(state)
        assert info.value.path.startswith(path)
    with pytest.raises(StateCorruptedError, match=r"NaN|Infinity"):
        SER.deserialize('{"x": NaN}')
    with pytest.raises(StateCorruptedError):
        SER.deserialize('{"x": 1e999}')


def _nest(depth: int) -> dict[str, Any]:
    state: dict[str, Any] = {}
    node = state
    for _ in range(depth):
        node["d"] = {}
        node = node["d"]
    return state


def test_nesting_limit_is_a_clear_error() -> None:
    ok = _nest(MAX_DEPTH - 1)
    assert rt(ok) == ok
    with pytest.raises(SerializationError, match=f"deeper than {MAX_DEPTH}"):
        SER.serialize(_nest(MAX_DEPTH + 5))
    with pytest.raises(SerializationError, match="deeper"):
        SER.serialize(_nest(100_000))
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(SerializationError):
        SER.serialize(loop)
    lst: list[Any] = []
    lst.append(lst)
    with pytest.raises(SerializationError):
        SER.serialize({"l": lst})


def test_deeply_nested_text_is_corrupt_not_a_crash() -> None:
    with pytest.raises(StateCorruptedError, match="deep"):
        SER.deserialize('{"a":' + "[" * 200_000 + "]" * 200_000 + "}")


def test_duplicate_keys_last_wins() -> None:
    assert SER.deserialize('{"a": 1, "a": 2}') == {"a": 2}
    assert SER.deserialize('{"m": {"$map": [[1, "x"], [1, "y"]]}}') == {"m": {1: "y"}}


def test_huge_integers() -> None:
    limit_ok = 10**4000  # below CPython's default 4,300-digit int/str limit
    assert rt({"n": limit_ok}) == {"n": limit_ok}
    with pytest.raises(SerializationError, match="too large") as info:
        SER.serialize({"a": [1, 10**5000]})
    assert info.value.path == "state['a'][1]"
    with pytest.raises(StateCorruptedError):
        SER.deserialize('{"n": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("text", [
    "", "   ", "[1, 2]", '"str"', "null", "nope", '{"a": 1', "\xff",
    '{"s": {"$set": 5}}', '{"s": {"$set": [[1]]}}', '{"m": {"$map": [[[1], 2]]}}',
    '{"m": {"$map": [[1]]}}', '{"m": {"$map": 3}}', '{"d": {"$datetime": 5}}',
    '{"d": {"$datetime": "yesterday"}}', '{"d": {"$datetime": ["2026-01-01", "No/Zone"]}}',
    '{"d": {"$date": "2026-13-01"}}', '{"t": {"$tuple": "abc"}}', '{"f": {"$frozenset": {}}}',
])
def test_bad_text_raises_state_corrupted(text: str) -> None:
    with pytest.raises(StateCorruptedError) as info:
        SER.deserialize(text)
    assert isinstance(info.value, ValueError)
    with pytest.raises(StateCorruptedError):
        SER.deserialize(text.encode("utf-8", "surrogateescape"))


def test_invalid_utf8_bytes_are_corrupt() -> None:
    with pytest.raises(StateCorruptedError):
        SER.deserialize(b'{"a": "\xff\xfe"}')


def test_lone_surrogate_survives() -> None:
    state = {"s": "a\ud800b"}
    text = SER.serialize(state)
    text.encode("utf-8")  # storable
    assert SER.deserialize(text) == state


def test_state_must_be_a_mapping() -> None:
    with pytest.raises(SerializationError, match="must be a dict"):
        SER.serialize([1, 2])  # type: ignore[arg-type]


def test_serialize_does_not_mutate_or_alias_the_input() -> None:
    inner = {"t": (1, 2), "s": {1}}
    state = {"a": inner, "k": {1: [1]}}
    SER.serialize(state)
    assert state == {"a": {"t": (1, 2), "s": {1}}, "k": {1: [1]}}
    assert type(inner["t"]) is tuple


def test_plain_fast_path_writes_what_the_walk_writes() -> None:
    from cascadeui import serializer as s

    plain = {"a": [1, 2.5, "x", None, True, {"b": []}], "c": {"d": {"e": "f"}}, "$x": {}}
    assert s._only_plain(plain)
    walked = s._encode(plain, 0, s._LEAVES)
    assert SER.serialize(plain) == s._ENCODER.encode(walked)
    for not_plain in ({"a": (1,)}, {"a": {1: 2}}, {"a": [{"$set": 1}]}, {"a": [{1}]},
                      {"a": [[datetime(2026, 1, 1)]]}, {"a": Color.RED}):
        assert not s._only_plain(not_plain)
        assert rt(not_plain) == not_plain
