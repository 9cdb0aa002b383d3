"""A storage failure in the middle of a merge round must not desynchronise the engine.

Found by ``scripts/campaigns/partition.py`` (a PostgreSQL host behind a 50 ms link): a
store's compare-and-set missed (another host had committed), it loaded the other host's
commits, and its retried write then failed with the connection. The engine had already
taken the other host's version but kept its own older document as the base, so its next
write passed the compare-and-set with a document that lacked the other host's changes,
and the compaction on close wrote it whole: acknowledged changes of the other host were
gone. The failure is injected at the facade (a real SQLite file underneath), because a
connection that dies exactly between those two calls cannot be produced on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cascadeui.actions import APPLICATION_SET
from cascadeui.errors import StorageUnavailableError
from cascadeui.persistence import SQLiteBackend
from cascadeui.store import StateStore

pytestmark = pytest.mark.anyio



class FlakySQLite(SQLiteBackend):
    """SQLite whose next append fails after a compare-and-set miss, once, when armed."""

    armed = False
    missed = False

    async def save_changes(self, before: Any, after: Any, expected: int,
                           **kwargs: Any) -> int | None:
        if self.armed and self.missed:
            self.armed = False
            raise StorageUnavailableError("connection lost while committing (injected)",
                                          location=self.location)
        version = await super().save_changes(before, after, expected, **kwargs)
        if self.armed and version is None:
            self.missed = True  # the next call is the retry after loading theirs
        return version


async def test_a_failed_retry_after_a_merge_loses_no_other_writers_change(
        tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    flaky = FlakySQLite(path)
    a, b = StateStore(), StateStore()
    await a.enable_persistence(flaky, poll_interval=None)
    await b.enable_persistence(SQLiteBackend(path), poll_interval=None)
    await a.dispatch(APPLICATION_SET, {"path": ["a0"], "value": 0})
    assert await a.flush()
    await b.dispatch(APPLICATION_SET, {"path": ["b1"], "value": 1})
    assert await b.flush()  # b's acknowledged change; a has not seen it
    flaky.armed = True
    await a.dispatch(APPLICATION_SET, {"path": ["a1"], "value": 1})
    assert not await a.flush()  # miss, load b's commit, retry: the connection "dies"
    await b.dispatch(APPLICATION_SET, {"path": ["b2"], "value": 2})
    assert await b.flush()
    assert await a.flush()  # the retry after the outage
    await a.close()  # compacts: writes a's view of the document whole
    await b.close()
    reader = StateStore()
    await reader.enable_persistence(SQLiteBackend(path))
    assert reader.state["application"] == {"a0": 0, "a1": 1, "b1": 1, "b2": 2}
    await reader.close()
