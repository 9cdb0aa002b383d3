"""The JSON file adapter: a snapshot file plus a change journal, atomic replace, fsync, ``.bak``.

Next to ``<path>`` (the *snapshot*, put whole by :func:`~._fileio.put`; the previous one
hard-linked to ``.bak`` first, :mod:`._backups`): ``<path>.journal``, the commits appended
since by :meth:`FileStore.save_changes`, one fsynced line each, bound to the snapshot's
content (:mod:`._journal_file`); ``<path>.lineage`` (:mod:`._lineage_file`); the lock files
``<path>.lock`` and ``<path>.lock.commit`` (:mod:`._locks`).

A load is the snapshot with every journal record applied; a store catches up by reading
only the journal bytes past the good end it saw (:meth:`FileStore.load_changes`). Every
full write (``save``, ``save_if_version``, ``transaction``, a compaction) replaces the
snapshot, then deletes the journal. A journal naming another snapshot is never applied
(the leftover of a crash between those steps names ``.bak`` and is ignored; any other is
WARNed and moved aside to ``.journal.orphan-<timestamp>`` by the next write). ``.bak``
never gets a journal applied. No file is read or written through a symlink
(:class:`~cascadeui.errors.ConfigurationError` names the real path); new files get mode
0600.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascadeui._merge import Change
from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StateNotFoundError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from . import _fileio, _journal
from ._backups import Backups
from ._fileio import Digest
from ._journal import Budget
from ._journal_file import (
    FORMAT,
    Extent,
    JournalFile,
    JournalRead,
    Signature,
    SnapshotId,
    journal_sig,
    record_line,
    signature,
    snapshot_id,
    version_of,
)
from ._lineage_file import Lineage, LineageFile
from ._locks import StoreLock
from .base import BackupInfo, BaseStore, Check, StoreInfo

if TYPE_CHECKING:
    from ._journal import JournaledStore
    from ._listeners import Listener

__all__ = ["FileStore"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.file")

#: Lock-free reads that find the snapshot replaced under them retry this often, then lock.
_READ_ATTEMPTS = 5


class FileStore(BaseStore):
    """State in one JSON file plus its change journal, safe across threads and processes.

    Implements :class:`~cascadeui.adapters.VersionedStore` and
    :class:`~cascadeui.adapters.JournaledStore` (:meth:`save_changes`, :meth:`load_changes`).

    :param path: the JSON file (not a symlink); missing directories are created on save.
    :param backups: how many previous generations to keep (``.bak``, ``.bak.1``, ...);
        None keeps as many as already exist next to the file, at least one (what tools
        use, so a script never prunes a bot's deeper backup history).
    :param lock_timeout: seconds to wait for ``<path>.lock`` before
        :class:`~cascadeui.errors.LockTimeoutError`.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], *, backups: int | None = 1,
                 lock_timeout: float = 10.0,
                 serializer: StateSerializer | None = None) -> None:
        super().__init__(serializer=serializer)
        self.path: Path = Path(os.fspath(path)).absolute()
        self._backups = Backups(self.path, backups)
        self.location: str = str(self.path)
        self.lock_timeout = lock_timeout
        self.lock_path: Path = Path(f"{self.path}.lock")
        self._journal = JournalFile(self.path, self._backups.newest_holds)
        #: The change journal appended after the snapshot at :attr:`path`.
        self.journal_path: Path = self._journal.path
        #: The lineage id and generation of the state at :attr:`path` (see
        #: :meth:`load_checked`).
        self._lineage_file = LineageFile(self.path)
        self.lineage_path: Path = self._lineage_file.path
        self._lock = StoreLock(self.lock_path, timeout=lock_timeout, location=self.location)
        self._known_good: Signature | None = None
        self._extent: Extent | None = None
        self._swept = False
        #: The directories of ``path`` exist and are durable (see _fileio.make_dirs).
        self._dirs_ready = False
        #: The backup the last load fell back to (None: it read the main file).
        self._read_from: str | None = None
        #: The lineage of the last state this store read whole or wrote under the lock.
        self._lineage: Lineage | None = None
        #: The version at which load_checked found the medium lost: the whole write over
        #: it starts a new lineage.
        self._fork_at: int | None = None

    @property
    def backups(self) -> int | None:
        """How many backup generations a full write keeps (None: as many as exist)."""
        return self._backups.count

    @backups.setter
    def backups(self, count: int | None) -> None:
        if count is not None and count < 0:
            raise ValueError("backups must be >= 0")
        self._backups.count = count

    # -- paths -------------------------------------------------------------------------

    def backup_paths(self) -> list[Path]:
        """The backup generations, newest first (whether or not they exist)."""
        return self._backups.paths()

    def companion(self, tag: str) -> FileStore:
        """``<path>.<tag>.bak`` next to the file, without backups of its own."""
        return FileStore(f"{self.path}.{tag}.bak", backups=0, lock_timeout=self.lock_timeout,
                         serializer=self.serializer)

    def listener(self, notify: Callable[[int | None], None]) -> Listener:
        """Watch the file and its journal by ``stat`` (for the engine; not started)."""
        from ._listeners import StatListener

        return StatListener(notify, self.location, [self.path, self.journal_path])

    # -- what readers ask (inspect, the CLI) ---------------------------------------------

    def exists(self) -> bool:
        """True when the file, or a backup to fall back to, exists; no I/O beyond ``lstat``."""
        self._check_open()
        return os.path.lexists(self.path) or bool(self._backups.existing())

    def list_backups(self) -> list[BackupInfo]:
        """The ``.bak`` generations next to the file, newest first (never followed)."""
        self._check_open()
        return self._backups.infos()

    def read_backup(self, index: int) -> dict[str, Any]:
        """Decode backup generation ``index`` (0 is ``.bak``), never through a link.

        :raises StateNotFoundError: no such generation.
        :raises ConfigurationError: it is a symlink or not a regular file.
        :raises StateCorruptedError: it does not decode.
        """
        self._check_open()
        path = self._backups.path(index)
        try:
            return self._read(path)[0]
        except FileNotFoundError:
            have = ", ".join(str(i) for i, _ in self._backups.existing()) or "none"
            raise StateNotFoundError(f"no backup {index} at {path} (available: {have})",
                                     location=str(path)) from None

    def describe(self) -> StoreInfo:
        """Sizes of the snapshot and its journal, last change, backups (``lstat`` only).

        ``version`` is None: a file's ``version()`` is an opaque change token.
        """
        self._check_open()
        main = _fileio.lstat(self.path, self.location)
        journal = self._journal.lstat(self.location)
        parts = [st for st in (main, journal) if st is not None]
        backups = tuple(self.list_backups())
        return StoreInfo(
            kind=self.kind, location=self.location, exists=main is not None or bool(backups),
            size=sum(st.st_size for st in parts) if main is not None else None,
            snapshot_size=main.st_size if main is not None else None,
            journal_size=journal.st_size if journal is not None else 0,
            modified=datetime.fromtimestamp(max(st.st_mtime for st in parts), timezone.utc)
            if main is not None else None,
            backups=backups, read_from=self._read_from)

    def check(self) -> tuple[list[Check], dict[str, Any] | None]:
        """The main file decodes, every backup decodes, the journal applies (no fallback).

        Lock-free: a read that finds the snapshot replaced under it starts over.
        """
        self._check_open()
        checks: list[Check] = []
        state: dict[str, Any] | None = None
        for _ in range(_READ_ATTEMPTS):
            checks, state = self._check_main()
            if state is None or checks[-1].ok or not checks[-1].detail.startswith("moved"):
                break
        return checks + self._backups.checks(lambda path: self._read(path)[0]), state

    def _check_main(self) -> tuple[list[Check], dict[str, Any] | None]:
        try:
            state, st, digest = self._read(self.path)
        except FileNotFoundError:
            return [Check("main file exists", False, f"{self.path} is missing")], None
        except PersistenceError as exc:
            return [Check("main file decodes", False, str(exc))], None
        checks = [Check("main file decodes", True, str(self.path))]
        more, ok = self._journal.checks(state, st, digest, self.serializer,
                                        lambda: self._snapshot_moved(snapshot_id(st)))
        return [*checks, *more], state if ok else None

    def journal_mismatch(self) -> str | None:
        """Why ``<path>.journal`` does not belong to the snapshot at ``<path>``; None when
        it does, when either file is missing, or when it is the harmless leftover of an
        interrupted full write. For ``cascadeui verify``.

        :raises StateCorruptedError: the journal's header is damaged.
        """
        self._check_open()
        return self._journal.mismatch()

    # -- reading -----------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state (snapshot + journal); fall back to the newest valid backup.

        Lock-free: the result is always a state that was committed (a record being
        appended meanwhile is not part of it yet).

        :raises StateCorruptedError: no copy (main file or backup) decodes, or the
            journal is damaged (it names the journal file and line; no backup is used,
            which would silently drop acknowledged commits).
        :raises StorageUnavailableError: the file cannot be read at all.
        """
        self._check_open()
        return self._load(locked=False)

    def _load(self, *, locked: bool) -> dict[str, Any]:
        """Snapshot + journal, else a backup; ``locked``: the caller holds the write lock.

        Lock-free, a full write may replace the snapshot between reading it and reading
        the journal: that read starts over (a few times, then under the lock).
        """
        tried: list[str] = []
        first_error: PersistenceError | None = None
        for _ in range(_READ_ATTEMPTS):
            try:
                state, st, digest = self._read(self.path)
            except FileNotFoundError:
                break
            except StateCorruptedError as exc:
                tried.append(str(self.path))
                first_error = exc
                break
            if self._settle(state, st, digest, self._journal.read(), locked=locked):
                self._read_from = None
                return state
        else:  # the snapshot kept being replaced under a lock-free read: read under the lock
            with self._locked():
                return self._load(locked=True)
        state, self._read_from = self._backups.fallback(
            lambda path: self._read(path)[0], tried, first_error, self.location)
        return state

    def _settle(self, state: dict[str, Any], st: os.stat_result, digest: Digest,
                journal: JournalRead | None, *, locked: bool) -> bool:
        """Apply ``journal`` to the snapshot ``state`` read with ``st`` if it belongs to it.

        False when a lock-free read must start over: the journal does not name this
        snapshot and the snapshot was replaced meanwhile (the journal may be the one of
        its successor, or the successor's full write may have just deleted ours). A
        journal naming another snapshot is reported (:meth:`_report_unbound`), never
        applied.

        :raises StateCorruptedError: the journal is damaged or does not fit the snapshot.
        """
        snapshot = snapshot_id(st)
        bound = journal is not None and journal.bound_to(snapshot, digest)
        if not bound and not locked and self._snapshot_moved(snapshot):
            return False
        if journal is not None and bound:
            self._journal.apply(state, journal, self.serializer)
            if journal.stable:
                self._journal.good = journal_sig(journal.stat)
        elif journal is not None and journal.snapshot is not None:
            self._journal.report_unbound(journal)
        self._known_good = signature(st)
        if locked:
            good = journal if journal is not None and bound else None
            self._extent = Extent(
                version_of(st, journal.stat if journal is not None else None), snapshot,
                st.st_size, digest, journal_sig(journal.stat) if journal is not None else None,
                good.end if good is not None else 0, good.lines if good is not None else 0,
                good.snapshot.format if good is not None and good.snapshot is not None
                else FORMAT)
            self._lineage = (self._extent.version, *self._lineage_file.read())
        return True

    def load_checked(self, since: int) -> tuple[dict[str, Any], int, str | None]:
        """:meth:`load_versioned`, plus why the stored state is not a descendant of the one
        this store read or wrote at version ``since``: the medium lost data.

        Loss is: the journal of the same snapshot holding fewer lines than this store saw
        (truncated, deleted, replaced); a state of another lineage (``<path>`` deleted,
        then written again by another process: a whole write into a missing file starts a
        new lineage in ``<path>.lineage``); or an older generation of the same lineage (an
        older copy of the files put back: ``cp -p``, rsync, a volume snapshot restored).
        The next whole write over it starts a new lineage, so other processes see the
        loss too. None when nothing was lost, or when this store did not read or write
        version ``since`` itself.

        :raises StateCorruptedError: as :meth:`load`.
        """
        self._check_open()
        with self._locked():
            seen = self._extent if self._extent is not None and (
                self._extent.version == since) else None
            seen_lineage = self._lineage if self._lineage is not None and (
                self._lineage[0] == since) else None
            state = self._load(locked=True)
            version = self.version()
            now = self._extent
            problem: str | None = None
            if seen is not None and version != 0 and now is not None:
                same_snapshot = (now.snapshot, now.digest) == (seen.snapshot, seen.digest)
                if same_snapshot and now.journal_lines < seen.journal_lines:
                    problem = (f"{self.journal_path} holds {max(now.journal_lines - 1, 0)} "
                               f"good record(s) of the {seen.journal_lines - 1} this store saw "
                               "(truncated, deleted or replaced)")
                elif seen_lineage is not None and self._lineage is not None:
                    problem = self._lineage_file.problem(seen_lineage, self._lineage)
            if problem is not None:
                self._fork_at = version
            return state, version, problem

    def _snapshot_moved(self, snapshot: SnapshotId) -> bool:
        """True if ``<path>`` is no longer the snapshot a lock-free read started from."""
        try:
            return snapshot_id(os.lstat(self.path)) != snapshot
        except OSError:
            return True

    def _read(self, path: Path) -> tuple[dict[str, Any], os.stat_result, Digest]:
        """Decode one whole document (the snapshot or a backup); the stat and the digest
        of the bytes read."""
        data, st, _ = _fileio.read_bytes(path)
        try:
            state = self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{path}: {exc}", location=str(path),
                                      tried=(str(path),)) from exc
        return state, st, _fileio.digest(data)

    def version(self) -> int:
        """An opaque number that changes on every commit (0 when no file); two ``lstat``.

        Built from the main file's (inode, mtime_ns, ctime_ns, size) and the journal's
        (inode, size, mtime_ns): every full save puts a new inode under ``<path>`` while
        the previous one is still alive, and every append grows the journal. Compare
        with ``==``; it is not ordered.
        """
        self._check_open()
        main = _fileio.lstat(self.path, self.location)
        if main is None:
            return 0
        return version_of(main, self._journal.lstat(self.location))

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` of what was read, consistent (under the lock)."""
        self._check_open()
        with self._locked():
            return self._load(locked=True), self.version()

    def load_changes(self, since: int) -> tuple[list[list[list[Any]]], int] | None:
        """The journal records committed after version ``since``, and the current version.

        See :meth:`~cascadeui.adapters.JournaledStore.load_changes`. ``since`` must be
        the version of this store's last locked read, write or catch-up, whose extent
        says where the good part of the journal ended: only the bytes after it are read
        and decoded. Under the lock, as appends are: the records and the version are of
        one state with no retry loop, and a torn tail stays out until it is complete.
        ``([], since)`` without the lock when the version did not move.

        :returns: None when ``since`` cannot be placed (another version, the snapshot or
            the journal file replaced, the journal shorter): load the document instead.
        :raises StateCorruptedError: a line since ``since`` is damaged or does not decode.
        """
        self._check_open()
        if self.version() == since:
            return [], since
        with self._locked():
            extent = self._extent
            if extent is None or extent.version != since:
                return None
            return self._catch_up(extent)

    def _catch_up(self, extent: Extent) -> tuple[list[list[list[Any]]], int] | None:
        """Decode the journal past ``extent`` and move the extent to its end (lock held)."""
        try:
            main = os.lstat(self.path)
        except OSError:
            return None
        if snapshot_id(main) != extent.snapshot:
            return None  # a full write (save, compaction) replaced the snapshot
        found = self._journal.catch_up(extent, main, self.serializer)
        if found is None:
            return None
        self._moved_to(extent, found[1])
        return found[0], found[1].version

    def _moved_to(self, old: Extent, new: Extent) -> None:
        """The journal grew from ``old`` to ``new`` (an append, a catch-up): the same
        snapshot, so the same lineage."""
        self._extent = new
        if self._lineage is not None and self._lineage[0] == old.version:
            self._lineage = (new.version, *self._lineage[1:])

    # -- writing -----------------------------------------------------------------------

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state atomically, rotating the previous file to ``.bak``.

        Also empties the journal (a damaged one is moved aside first).

        :raises SerializationError: ``state`` holds a value JSON cannot store (nothing written).
        :raises LockTimeoutError: another writer held the lock past ``lock_timeout``.
        :raises StorageUnavailableError: the write failed; the old file and backups are intact.
        """
        self._check_open()
        data = self.serializer.serialize(state).encode("utf-8")
        with self._locked():
            self._write(data)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the state to change in place, save it on a clean exit.

        Exclusive across threads and processes (the same lock as :meth:`save`). If the
        body raises, nothing is written. The commit is a full write (it empties the journal).
        """
        self._check_open()
        with self._locked():
            state = self._load(locked=True)
            yield state
            self._write(self.serializer.serialize(state).encode("utf-8"))

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        self._check_open()
        data = self.serializer.serialize(state) if encoded is None else encoded
        with self._locked():
            if self.version() != expected:
                return None
            self._write(data, fork=self._fork_at == expected)
            return self.version()

    def save_changes(self, changes: Sequence[Change], expected: int, *,
                     full: Callable[[], str]) -> int | None:
        """Append ``changes`` to the journal if the stored version is still ``expected``.

        See :meth:`~cascadeui.adapters.JournaledStore.save_changes`. Costs one fsynced
        append of the record (no read: the journal and snapshot sizes come from this
        store's last read or write at ``expected``). Writes ``full()`` as a new snapshot
        instead when the journal is due for compaction, when nothing is stored yet, or
        when the snapshot is unreadable (a full write sets it aside, as :meth:`save` does).

        :returns: the new version, or None when another writer committed since ``expected``.
        :raises SerializationError: a changed value cannot be stored (nothing written).
        :raises StateCorruptedError: the journal is damaged (nothing written).
        """
        self._check_open()
        line = record_line(self.serializer, changes) if changes else b""
        with self._locked():
            current = self.version()
            if not changes:
                return expected if current == expected else None
            extent = self._extent

            def budget(at: int) -> tuple[Budget, bool]:
                nonlocal extent
                if extent is None or extent.version != at:
                    extent = self._inspect()
                if extent is None:  # no readable snapshot to append to: write it whole
                    return Budget(at, 0, sys.maxsize, 0), True
                return Budget(at, extent.journal_lines, extent.journal_end,
                              extent.snapshot_bytes), True  # read or written whole here

            def append(_: Budget) -> int | None:
                assert extent is not None  # budget() found one
                with self._lock.committing():
                    after = self._journal.commit(extent, line, self.location)
                if after is None:
                    return None
                self._moved_to(extent, after)
                return after.version

            def snapshot() -> int:
                self._write(full(), fork=self._fork_at == expected)
                return self.version()

            return _journal.commit_changes(current, expected, len(line), budget=budget,
                                           verify=lambda: None, snapshot=snapshot,
                                           append=append)

    def _inspect(self) -> Extent | None:
        """Read the stored state under the lock to learn its extent (the rare path).

        None when there is no readable snapshot to append to (missing or unreadable).

        :raises StateCorruptedError: the journal is damaged: nothing may be appended.
        """
        try:
            state, st, digest = self._read(self.path)
        except (FileNotFoundError, StateCorruptedError):
            return None
        self._settle(state, st, digest, self._journal.read(), locked=True)
        return self._extent

    def _write(self, data: bytes | str, *, fork: bool = False) -> None:
        """Write the new snapshot durably, rotate backups, replace the main file, drop the journal.

        The lock is held. Backups rotate only once the new bytes are fsynced in the temp
        file, so a failed write (disk full, EIO, read-only) leaves the main file, the
        journal and every backup generation as they were (issue 7, tests/test_faults.py).
        The journal is deleted only after the new snapshot is in place: a crash between
        leaves a stale journal, whose header no longer names the snapshot.
        """
        lineage, generation, written = self._next_lineage(fork)
        # From the last lock check (in `before`, once the new bytes are fsynced) until the
        # stale journal is gone, nobody may confirm a replacement lock file (_locks.py).
        with contextlib.ExitStack() as commit:
            def before() -> None:
                commit.enter_context(self._lock.committing())
                self._make_room()

            try:
                digest = _fileio.put(self.path, data, like=self.path, before=before)
            except LockTimeoutError:
                raise
            except OSError as exc:
                raise StorageUnavailableError(
                    f"cannot save {self.path}: {exc.strerror or exc}; the previous file is "
                    "intact", location=self.location) from exc
            self._known_good = signature(os.stat(self.path))
            try:
                os.unlink(self.journal_path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # harmless: it no longer names the snapshot, readers skip
                log.warning("could not delete the stale journal %s: %s", self.journal_path,
                            exc.strerror or exc)
            else:
                # The unlink must be durable before the write is acknowledged: a header
                # names the snapshot's bytes, so when the new snapshot has the very bytes
                # of the old one (save(a) over a + journal a -> b), a power cut that kept
                # the journal would apply it again and load b (issue 16, test_powercut).
                _fileio.fsync_dir(self.path.parent)
            if not written:
                self._lineage_file.count(lineage, generation)
        main, journal = os.lstat(self.path), self._journal.lstat(self.location)
        self._extent = Extent(version_of(main, journal), snapshot_id(main), main.st_size,
                               digest, journal_sig(journal) if journal is not None else None,
                               0, 0)
        self._lineage = (self._extent.version, lineage, generation)
        if fork:
            self._fork_at = None

    def _next_lineage(self, fork: bool) -> tuple[str, int, bool]:
        """The lineage id and generation a whole write goes on with (lock held), and
        whether ``<path>.lineage`` holds them already: the stored id with the next
        generation, or a new id when there is none, when ``<path>`` is missing (a deleted
        file: what another process saw is gone) or with ``fork``."""
        current, generation = self._lineage_file.read()
        if current and not fork and os.path.lexists(self.path):
            return current, generation + 1, False
        return self._lineage_file.start(self.location), 1, True

    def _sweep(self) -> None:
        """Delete the temp files of writers killed mid-save, once per store, right after
        the first lock: under the commit lock, confirmed, so no live holder owns one (a
        holder whose lock file was pulled fails its own commit check instead)."""
        with self._lock.confirmed() as held:
            if held:
                self._swept = True
                self._backups.sweep_temps()

    # -- what a full write keeps: unreadable files are set aside, never deleted ---------

    def _make_room(self) -> None:
        """Just before a full write replaces ``<path>`` (the commit lock held): keep what
        did not load (set aside, never deleted), then rotate the backups."""
        self._backups.set_aside_unreadable(
            self._known_good, lambda: self._read(self.path), self._journal, self.serializer)
        self._backups.rotate()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if os.path.isdir(self.path):  # else a .lock is left next to a directory
            raise ConfigurationError(
                f"{self.path} is a directory, not a state file (name a file in it, e.g. "
                f"{self.path / 'cascadeui_state.json'})", location=self.location)
        if not self._dirs_ready:
            # The lock would create them, but never fsync their parents: a power cut
            # after an acknowledged first save could lose the new directory and the
            # state in it (issue 16). Once per store.
            _fileio.make_dirs(self.path, self.location)
            self._dirs_ready = True
        with self._lock.holding(self.lock_timeout):
            if not self._swept:
                self._sweep()
            yield


if TYPE_CHECKING:
    def _is_journaled(store: FileStore) -> JournaledStore:
        return store  # mypy checks that FileStore implements the protocol
