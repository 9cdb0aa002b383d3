"""Schema versions for the persisted state, and the migrations between them.

A bot declares the version its code writes and one function per step::

    await setup_persistence(bot, backend=..., version=2,
                            migrations={1: add_scores, 2: rename_panels})

``migrations[k](document) -> document`` upgrades the persisted document
(``{"application": ..., "persistent_views": ...}``) from version ``k - 1`` to ``k``. The
version is stored inside the document, in ``state["application"]["__schema_version__"]``
(the one place every backend, the change journal and the merge already carry; it is taken
out before a migration sees the document); a state stored without it is version 0.

At load, :func:`migrate_adapter` runs as one unit of work in one worker thread: it reads
the state; when it is older than the code it keeps a copy of it (:func:`backup_store`),
then, inside the adapter's ``transaction()`` (the write lock, across processes), checks
that the state is still the copy, runs the steps in order and commits the result with
its version. So exactly one process migrates: another one starting at the same time
waits for the lock, finds the new version and loads the result. A failing step raises
:class:`~cascadeui.errors.MigrationError` naming it and nothing is written; a stored
version newer than the code raises :class:`~cascadeui.errors.SchemaVersionError` and
nothing is written. See ``docs/migrations.md``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ._backends import AsyncBackend, Capabilities, location_of
from ._merge import DELETED, diff
from .actions import SCHEMA_KEY
from .adapters import SyncStore
from .errors import MigrationError, SchemaVersionError

__all__ = ["SCHEMA_KEY", "Migration", "MigrationPlan", "backup_store", "check_migrations",
           "check_unversioned", "migrate_adapter", "migrate_backend", "plan_migration",
           "stored_version", "upgrade"]

log: logging.Logger = logging.getLogger(__name__)

_SLICES = ("application", "persistent_views")
#: Attempts when the state changes between taking the backup and taking the lock.
_ROUNDS = 5

#: ``fn(document) -> document``: upgrades the persisted document by one version.
Migration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class MigrationPlan:
    """What a migration did (or, for a dry run, would do)."""

    from_version: int
    to_version: int
    #: The document before and after (the version key included), for reports.
    before: dict[str, Any] = field(repr=False, default_factory=dict)
    after: dict[str, Any] = field(repr=False, default_factory=dict)
    #: True once the upgraded document was committed (False: nothing to do, or dry run).
    written: bool = False
    #: Where the pre-migration document was kept, None when nothing was migrated.
    backup: str | None = None

    @property
    def needed(self) -> bool:
        """The stored state is older than the code."""
        return self.from_version < self.to_version

    def changes(self) -> list[tuple[list[Any], str]]:
        """The key paths the migration changes: ``(path, "set" | "deleted")``."""
        return [(list(path), "deleted" if value is DELETED else "set")
                for path, value in diff(self.before, self.after)]


def check_migrations(version: int, migrations: Mapping[int, Migration] | None) -> None:
    """Refuse a version/migrations pair that cannot work, before anything is read.

    Keys above ``version`` are steps of later releases: accepted and never run, so a bot,
    a script and the CLI can share one migrations dict across releases (one rule for
    ``setup_persistence``, ``sync.migrate_schema`` and ``cascadeui migrate-schema``).

    :raises ValueError: ``version`` is not a non-negative int, a key is not an int >= 1,
        a value is not callable, or a step between 1 and ``version`` is missing (a state
        stored at any older version must be upgradable).
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"version must be an int >= 0, not {version!r}")
    given = dict(migrations or {})
    wrong = sorted(str(k) for k in given
                    if not isinstance(k, int) or isinstance(k, bool) or k < 1)
    if wrong:
        raise ValueError(f"migrations keys must be the versions (ints >= 1) they upgrade "
                         f"to; got {', '.join(wrong)}")
    for step, fn in given.items():
        if not callable(fn):
            raise ValueError(f"migrations[{step}] is not callable")
    missing = [k for k in range(1, version + 1) if k not in given]
    if missing:
        raise ValueError(f"no migration to version(s) {missing}: a state stored at an older "
                         "version could not be upgraded (give an identity function for a "
                         "step that changes nothing)")


def stored_version(document: Mapping[str, Any], *, location: str | None = None,
                   supported: int = 0) -> int:
    """The schema version stored in ``document`` (0 when it has none).

    :raises SchemaVersionError: the stored version is not a non-negative int.
    """
    app = document.get("application")
    value = app.get(SCHEMA_KEY, 0) if isinstance(app, Mapping) else 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaVersionError(f"{location or 'stored state'}: schema version {value!r} "
                                 "is not a version number", stored=value,
                                 supported=supported, location=location)
    return value


def check_unversioned(document: Mapping[str, Any], *, location: str,
                      strict: bool = False) -> None:
    """A start without ``version=``: WARN when the stored state has a schema version (the
    code may write old-shape data next to migrated data); with ``strict``, refuse.

    :raises SchemaVersionError: ``strict`` and the stored state is versioned.
    """
    stored = stored_version(document, location=location)
    if not stored:
        return
    message = (f"{location}: the stored state is at schema version {stored}, but this "
               "start passed no version=")
    if strict:
        raise SchemaVersionError(f"{message}; refusing to start (strict_version=True): pass "
                                 f"version={stored} (or later) with your migrations",
                                 stored=stored, supported=0, location=location)
    log.warning("%s; going on unversioned (pass version=%d and your migrations, or "
                "strict_version=True to refuse such a start)", message, stored)


def upgrade(document: Mapping[str, Any], version: int,
            migrations: Mapping[int, Migration], *, location: str | None = None
            ) -> tuple[dict[str, Any], int]:
    """Run the steps from the stored version up to ``version`` on a copy of ``document``.

    :returns: the upgraded document (with its version) and the version it was stored at.
    :raises SchemaVersionError: the document is newer than ``version``.
    :raises MigrationError: a step raised or did not return a document (names the step).
    """
    where = location or "stored state"
    start = stored_version(document, location=location, supported=version)
    if start > version:
        raise SchemaVersionError(
            f"{where} is at schema version {start}, newer than this code's {version}: "
            "refusing to start (older code would misread or overwrite newer data); run "
            "the newer code, or restore a backup taken before the upgrade",
            stored=start, supported=version, location=location)
    doc = {name: copy.deepcopy(document.get(name, {})) for name in _SLICES}
    doc["application"].pop(SCHEMA_KEY, None)  # a step sees the data, not the bookkeeping
    fresh = start == 0 and not doc["application"] and not doc["persistent_views"]
    for step in range(start + 1, version + 1) if not fresh else ():  # new: born current
        try:
            result = migrations[step](doc)
        except Exception as exc:
            raise MigrationError(
                f"{where}: migration to version {step} (from {start}) failed: "
                f"{type(exc).__name__}: {exc}; nothing was written",
                step=step, from_version=start, location=location) from exc
        if not isinstance(result, dict) or not all(
                isinstance(result.get(name, {}), dict) for name in _SLICES):
            raise MigrationError(
                f"{where}: migration to version {step} returned {type(result).__name__}, not "
                "a document dict with dict slices; nothing was written",
                step=step, from_version=start, location=location)
        doc = {name: result.get(name, {}) for name in _SLICES}
    if version:
        doc["application"] = {**doc["application"], SCHEMA_KEY: version}
    return doc, start


def backup_store(adapter: SyncStore, from_version: int) -> SyncStore | None:
    """A store of the same medium where the pre-migration document is kept, or None.

    ``<path>.v<N>.bak`` next to a JSON file, the table ``<table>_v<N>_backup`` in the same
    SQLite or PostgreSQL database, the key ``<key>:v<N>:backup`` on the same Redis; ``N``
    is the version the document had. Other adapters keep no backup (a WARNING says so).
    """
    if not Capabilities.of(adapter).companion:  # BaseStore.companion; adapters/ knows where
        return None
    return cast("SyncStore | None", cast(Any, adapter).companion(f"v{from_version}"))


def plan_migration(adapter: SyncStore, version: int,
                   migrations: Mapping[int, Migration]) -> MigrationPlan:
    """What :func:`migrate_adapter` would do, computed without writing anything."""
    check_migrations(version, migrations)
    location = _location(adapter)
    before = adapter.load()
    after, start = upgrade(before, version, migrations, location=location)
    return MigrationPlan(start, version, before, after if start < version else before)


def migrate_adapter(adapter: SyncStore, version: int,
                    migrations: Mapping[int, Migration]) -> MigrationPlan:
    """Bring the stored state to ``version``: the whole unit of work, in the calling thread.

    Blocking: call it from a worker thread (``anyio.to_thread.run_sync``) or a script.

    :raises SchemaVersionError: the stored state is newer than ``version``.
    :raises MigrationError: a step failed; nothing was written.
    :raises PersistenceError: the medium failed (lock timeout, I/O); nothing was written.
    """
    check_migrations(version, migrations)
    location = _location(adapter)
    start = 0
    for attempt in range(_ROUNDS):
        before = adapter.load()
        start = stored_version(before, location=location, supported=version)
        if start > version:
            upgrade(before, version, migrations, location=location)  # raises, names both
        if start == version:
            return MigrationPlan(start, version, before, before)
        fresh = not any(before.get(name) for name in _SLICES)
        # Nothing stored yet: the state is born at the current version, nothing to keep.
        backup = None if fresh else _keep_backup(adapter, before, start, first=not attempt)
        plan = _commit(adapter, before, version, migrations, location)
        if plan is not None:
            plan.backup = backup
            if plan.written:
                log.warning("%s: stored state migrated from schema version %d to %d "
                            "(backup: %s)", location, plan.from_version, version,
                            backup or "none")
            return plan
    raise MigrationError(f"{location}: the stored state kept changing while it was being "
                         f"migrated ({_ROUNDS} attempts); nothing was written",
                         step=version, from_version=start, location=location)


def _keep_backup(adapter: SyncStore, document: dict[str, Any], start: int, *,
                 first: bool) -> str | None:
    """Write ``document`` to the backup location; the first round refuses a location
    holding any other state (an unrelated state stored under that name, issue 21).

    :raises MigrationError: the backup name is taken; nothing was written.
    """
    backup = backup_store(adapter, start)
    if backup is None:
        log.warning("%s: no backup is kept before migrating from schema version %d "
                    "(%s has no backup location)", _location(adapter), start,
                    type(adapter).__name__)
        return None
    where = location_of(backup, str(backup))
    try:
        if first:
            held = backup.load()
            if held == document:
                return where  # an earlier attempt's backup of this very state
            if held:
                location = _location(adapter)
                raise MigrationError(
                    f"{location}: the backup location {where} already holds another state; "
                    "refusing to overwrite it (move or delete it, then start again); "
                    "nothing was written", step=start + 1, from_version=start,
                    location=location)
        backup.save(document)
    finally:
        backup.close()
    return where


class _MovedError(Exception):
    """Internal: the state changed after the backup was taken; take it again."""


class _CurrentError(Exception):
    """Internal: another process migrated meanwhile; nothing to write."""


def _commit(adapter: SyncStore, before: dict[str, Any], version: int,
            migrations: Mapping[int, Migration], location: str) -> MigrationPlan | None:
    """Under the write lock: migrate ``before`` if it is still what is stored.

    :returns: the plan (written, or found already current); None to retry.
    """
    result: list[MigrationPlan] = []
    try:
        with adapter.transaction() as state:
            start = stored_version(state, location=location, supported=version)
            if start == version:
                result.append(MigrationPlan(start, version, state, state))
                raise _CurrentError
            if state != before:
                raise _MovedError
            after, start = upgrade(state, version, migrations, location=location)
            state.clear()
            state.update(after)
            result.append(MigrationPlan(start, version, before, after, written=True))
    except _MovedError:
        return None
    except _CurrentError:
        pass
    return result[0]


def _location(adapter: object) -> str:
    return location_of(adapter)


async def migrate_backend(backend: object, version: int,
                          migrations: Mapping[int, Migration] | None) -> MigrationPlan:
    """:func:`migrate_adapter` for an async backend, in one worker thread.

    A backend without a synchronous adapter (a custom ``StorageBackend``) is migrated with
    ``load_state``/``save_state``: no lock, no backup, so only one process may start it.

    :raises SchemaVersionError: as :func:`migrate_adapter`.
    :raises MigrationError: as :func:`migrate_adapter`.
    :raises PersistenceError: as :func:`migrate_adapter`.
    """
    import anyio.to_thread

    from .errors import StorageUnavailableError

    steps = dict(migrations or {})
    check_migrations(version, steps)
    if isinstance(backend, AsyncBackend) and backend.capabilities.transaction:
        adapter: SyncStore = backend.store
        return await anyio.to_thread.run_sync(migrate_adapter, adapter, version, steps)
    location = _location(backend)
    before = await backend.load_state()  # type: ignore[attr-defined]
    after, start = upgrade(before, version, steps, location=location)
    if start == version:
        return MigrationPlan(start, version, before, before)
    if not await backend.save_state(after):  # type: ignore[attr-defined]
        raise StorageUnavailableError(f"{location}: saving the migrated state failed",
                                      location=location)
    log.warning("%s: stored state migrated from schema version %d to %d (no lock, no "
                "backup: a custom backend)", location, start, version)
    return MigrationPlan(start, version, before, after, written=True)
