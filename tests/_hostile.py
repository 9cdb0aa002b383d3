"""Hostile bytes for every load path (issue 7), shared by the fuzz campaign
(tests/campaigns/test_fuzz_load.py) and the journal tests (tests/adapters/test_journal_file.py)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from cascadeui.errors import PersistenceError
from cascadeui.serializer import StateSerializer

SER = StateSerializer()
#: CASCADEUI_FUZZ_SCALE=20 multiplies every example count (the long run in docs/reliability.md).
SCALE = max(1, int(os.environ.get("CASCADEUI_FUZZ_SCALE", "1")))
FUZZ = settings(max_examples=120 * SCALE, deadline=None, database=None)
FUZZ_IO = settings(max_examples=40 * SCALE, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

GOOD = {"application": {"guild": {123: {"tags": {"a", "b"}, "n": 7}}, "name": "bot"},
        "persistent_views": {"panel:1": {"class_name": "Panel", "message_id": 99}}}
GOOD_TEXT = SER.serialize(GOOD).encode()

#: The named hostile cases of the issue, as raw bytes.
NAMED: dict[str, bytes] = {
    "empty": b"",
    "truncated": GOOD_TEXT[: len(GOOD_TEXT) // 2],
    "invalid_utf8": b'{"a": "\xff\xfe\xc3"}',
    "bom": b"\xef\xbb\xbf{}",
    "top_list": b"[1, 2, 3]",
    "top_number": b"42",
    "top_string": b'"state"',
    "top_null": b"null",
    "deep_lists": b"[" * 100_000 + b"]" * 100_000,
    "deep_objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep_tags": b'{"$tuple":[' * 100_000 + b"1" + b"]}" * 100_000,
    "huge_int": b'{"a": ' + b"9" * 100_000 + b"}",
    "big_int_4000_digits": b'{"a": ' + b"9" * 4000 + b"}",
    "duplicate_keys": b'{"a": 1, "a": 2}',
    "nan": b'{"a": NaN}',
    "infinity": b'{"a": -Infinity}',
    "float_overflow": b'{"a": 1e999}',
    "lone_surrogate": b'{"a": "\\ud800"}',
    "nul": b"{\x00}",
    "bad_tag_types": b'{"a": {"$datetime": 5}, "b": {"$set": {"x": 1}}}',
    "bad_map": b'{"a": {"$map": [[[1], 2]]}}',
    "bad_map_pairs": b'{"a": {"$map": [1, 2, 3]}}',
    "bad_date": b'{"a": {"$date": "9999999-01-01"}}',
    "bad_zone": b'{"a": {"$datetime": ["2026-01-01T00:00:00+00:00", "../../etc/passwd"]}}',
    "unhashable_set": b'{"a": {"$set": [[1], {"b": 2}]}}',
}


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(3)
        pos = rnd.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rnd.randrange(256)
        elif op == 1:
            del out[pos:pos + rnd.randint(1, 8)]
        else:
            out[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
    return bytes(out)


hostile = (st.binary(max_size=300)
           | st.sampled_from(sorted(NAMED.values()))
           | st.builds(_mutate, st.just(GOOD_TEXT), st.randoms(use_true_random=False))
           | st.integers(min_value=0, max_value=len(GOOD_TEXT)).map(lambda n: GOOD_TEXT[:n])
           | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))


def outcome(fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | PersistenceError:
    """The result of a load, or its error; anything but a PersistenceError fails the test."""
    try:
        value = fn()
    except PersistenceError as exc:
        return exc
    assert type(value) is dict
    return value


def assert_savable(value: dict[str, Any] | PersistenceError) -> None:
    """Whatever loads must be savable again, or the bot is stuck with a state it can't write."""
    if isinstance(value, dict):
        SER.deserialize(SER.serialize(value).encode("utf-8"))
