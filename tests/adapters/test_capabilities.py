"""An adapter's capabilities are worked out once, into a typed value (issue 20, item 4).

``AsyncBackend.capabilities`` (a frozen :class:`~cascadeui._backends.Capabilities`) is
what the engine, the readers and the migrations ask; nothing else probes an adapter.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from _registry import BACKENDS, build, kinds

from cascadeui._backends import (
    AsyncBackend,
    Capabilities,
    aclose_backend,
    as_backend,
    location_of,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


class PlainStore:
    """A third-party adapter with only load and save."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        return dict(self.state)

    def save(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)


@pytest.mark.parametrize("kind", kinds())
async def test_every_built_in_adapter_says_what_it_offers(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    adapter = build(kind, request, tmp_path)
    backend = AsyncBackend(adapter)
    caps = backend.capabilities
    assert caps is backend.capabilities  # worked out once
    assert caps == Capabilities.of(adapter)
    assert caps.kind == kind
    assert caps.versioned
    assert caps.journaled
    assert caps.counter
    assert caps.transaction
    assert caps.described
    assert caps.companion
    assert caps.closable
    traits = BACKENDS[kind].traits
    assert caps.listener == ("listener" in traits)
    assert caps.backups == ("backups" in traits)
    assert backend.versioned
    assert backend.journaled
    await backend.aclose()


async def test_a_plain_adapter_offers_nothing_more_and_its_calls_say_so() -> None:
    backend = as_backend(PlainStore())
    assert isinstance(backend, AsyncBackend)
    assert backend.capabilities == Capabilities(kind="PlainStore")
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.capabilities.versioned = True  # type: ignore[misc]
    assert not backend.versioned
    with pytest.raises(TypeError, match="no transaction"):
        async with backend.transaction():
            pass
    assert await backend.save_state({"application": {"a": 1}, "persistent_views": {}})
    with pytest.raises(TypeError, match="no version"):
        await backend.version()
    with pytest.raises(TypeError, match="no load_versioned"):
        await backend.load_checked(0)
    await aclose_backend(backend)  # no close(): nothing to do
    await aclose_backend(object())  # a custom backend without aclose()


def test_location_of_names_where_any_target_keeps_its_state() -> None:
    assert location_of(PlainStore()) == "PlainStore"
    assert location_of(PlainStore(), "fallback") == "fallback"
    backend = as_backend(PlainStore())
    assert isinstance(backend, AsyncBackend)
    assert backend.location == "PlainStore"

    class Located(PlainStore):
        location = "somewhere"

    assert location_of(Located()) == "somewhere" == location_of(as_backend(Located()))


def test_nothing_but_capabilities_probes_an_adapter() -> None:
    """No ``getattr``/``hasattr`` for an adapter's methods or ``location`` in the package
    outside the one place (``_backends``); ``adapters/`` may know its own members (the
    listener factory is looked up in ``adapters/_listeners``)."""
    probed = {"location", "aclose", "close", "version", "load_checked", "companion",
              "transaction", "kind", "load", "save", "listener"}
    allowed = {("cascadeui/_backends.py", n) for n in probed}
    # A custom async backend's own transaction() (it has no adapter).
    allowed.add(("cascadeui/sync.py", "transaction"))
    found = []
    for path in sorted((ROOT / "cascadeui").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith("cascadeui/testing/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in probed
                    and (where, node.args[1].value) not in allowed):
                found.append(f"{where}:{node.lineno}: {node.args[1].value}")
    assert found == []
