"""``sync.transaction`` gives its body both persisted slices, so the README's example
works on a fresh store (issue 23 item 12); a body that changes nothing writes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _registry import kinds

from cascadeui import sync
from cascadeui.adapters import BaseStore


@pytest.mark.parametrize("kind", kinds())
def test_the_readme_transaction_works_on_a_fresh_store(
        kind: str, new_store: Callable[[str], BaseStore]) -> None:
    adapter = new_store(kind)
    with sync.transaction(adapter) as state:
        state["application"]["motd"] = "maintenance at 18:00"
    assert new_store(kind).load() == {"application": {"motd": "maintenance at 18:00"}}


@pytest.mark.parametrize("kind", kinds())
def test_a_transaction_that_changes_nothing_adds_no_empty_slices(
        kind: str, new_store: Callable[[str], BaseStore]) -> None:
    with sync.transaction(new_store(kind)) as state:
        assert state == {"application": {}, "persistent_views": {}}
    assert new_store(kind).load() == {}
