"""cascadeui._merge: the three-way merge behind multi-process writes (issue 4)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cascadeui._merge import DELETED, diff, merge3


def test_disjoint_changes_are_all_kept() -> None:
    base = {"application": {"a": 1, "b": {"x": 1, "y": 2}}, "persistent_views": {}}
    ours = {"application": {**base["application"], "a": 2},
            "persistent_views": base["persistent_views"]}
    theirs = {"application": {"a": 1, "b": {"x": 1, "y": 3}, "c": 5},
              "persistent_views": {"k": {"class_name": "P"}}}
    result = merge3(base, ours, theirs)
    assert result.merged == {"application": {"a": 2, "b": {"x": 1, "y": 3}, "c": 5},
                             "persistent_views": {"k": {"class_name": "P"}}}
    assert result.conflicts == []
    assert sorted(result.theirs) == [("application", "b", "y"), ("application", "c"),
                                     ("persistent_views", "k")]


def test_same_leaf_goes_to_ours_and_is_a_conflict() -> None:
    base = {"application": {"n": 1}}
    result = merge3(base, {"application": {"n": 2}}, {"application": {"n": 3}})
    assert result.merged == {"application": {"n": 2}}
    assert result.conflicts == [("application", "n")]


def test_equal_changes_are_not_a_conflict() -> None:
    base = {"application": {"n": 1}}
    result = merge3(base, {"application": {"n": 2}}, {"application": {"n": 2}})
    assert result.merged == {"application": {"n": 2}}
    assert result.conflicts == []


def test_both_create_the_same_dict_merge_inside() -> None:
    base: dict[str, Any] = {"application": {}}
    result = merge3(base, {"application": {"g": {"a": 1}}}, {"application": {"g": {"b": 2}}})
    assert result.merged == {"application": {"g": {"a": 1, "b": 2}}}
    assert result.conflicts == []


def test_deletions_on_either_side() -> None:
    base = {"application": {"a": 1, "b": 2, "c": 3}}
    ours = {"application": {"b": 2, "c": 3}}            # we deleted a
    theirs = {"application": {"a": 1, "b": 2}}          # they deleted c
    assert merge3(base, ours, theirs).merged == {"application": {"b": 2}}


def test_lists_are_leaves_later_writer_wins() -> None:
    """docs/multiprocess.md: concurrent list edits are a conflict, ours wins."""
    base = {"application": {"log": [1]}}
    result = merge3(base, {"application": {"log": [1, 2]}}, {"application": {"log": [1, 3]}})
    assert result.merged == {"application": {"log": [1, 2]}}
    assert result.conflicts == [("application", "log")]


def test_diff_skips_shared_subtrees_by_identity() -> None:
    big = {f"k{i}": {"v": i} for i in range(1000)}
    old = {"application": {"big": big, "n": 1}}
    new = {"application": {"big": big, "n": 2}}
    assert diff(old, new) == [(("application", "n"), 2)]
    assert diff(new, {"application": {"big": big}}) == [(("application", "n"), DELETED)]


keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
leaf = st.integers(0, 5)
docs = st.recursive(leaf, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12)


@settings(max_examples=100, deadline=None, database=None)
@given(base=st.dictionaries(keys, docs, max_size=4),
       ours_new=st.dictionaries(st.text(alphabet="xyz", min_size=1, max_size=2), docs,
                                max_size=3),
       theirs_new=st.dictionaries(st.text(alphabet="uvw", min_size=1, max_size=2), docs,
                                  max_size=3))
def test_additions_under_disjoint_keys_always_survive(
        base: dict[str, Any], ours_new: dict[str, Any], theirs_new: dict[str, Any]) -> None:
    ours = {**base, **ours_new}
    theirs = {**base, **theirs_new}
    result = merge3(base, ours, theirs)
    assert result.merged == {**base, **ours_new, **theirs_new}
    assert result.conflicts == []
