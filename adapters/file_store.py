"""The JSON file adapter: a snapshot file plus a change journal, atomic replace, fsync, ``.bak``.

Layout next to ``<path>``:

- ``<path>``, the *snapshot*: the whole document, exactly what :meth:`FileStore.save`
  writes. A full write never overwrites data in place: the new document goes to a
  private temp file in the same directory, is fsynced, ``os.replace``-d over the target
  and the directory is fsynced; just before, the current file is hard-linked to
  ``<path>.bak`` (older generations shift to ``.bak.1``, ``.bak.2`` ...). A crash at any
  moment leaves either the old or the new document under ``<path>``.
- ``<path>.journal``, the *change journal* (see :mod:`cascadeui.adapters._journal`): the
  commits appended after that snapshot by :meth:`FileStore.save_changes`, so a commit
  costs what changed instead of the whole document. Line 1 is a header binding the
  journal to the *content* of the snapshot it was started against, ``<crc>
  {"cascadeui_journal":2,"snapshot":{"crc32":"<8 hex>","size":<bytes>}}`` (not its inode,
  so copying both files by any means keeps every change; format 1, ``"snapshot":[st_ino,
  st_mtime_ns, st_size]`` from earlier builds, is still read, and the next append rewrites
  it as format 2); every further line is one record,
  ``<crc32 of the text, 8 hex digits> <record text>``. A journal is created whole (temp
  file, fsync, replace, directory fsync), then only ever appended to (``O_APPEND``,
  fsync) under the lock; it is never modified in place, so a lock-free reader always
  sees a prefix of it.
- ``<path>.lock``, the lock file every writer holds (:class:`~.locks.PathLock`: a lock
  whose file is unlinked or replaced while held admits no second holder).

A store that read or wrote the state at some version catches up with other processes'
commits by reading only the journal bytes past the good end it saw
(:meth:`FileStore.load_changes`), not the whole document.

A load is the snapshot with every journal record applied in order. Every full write
(``save``, ``save_if_version``, ``transaction``, a compaction) replaces the snapshot,
then deletes the journal. A journal whose header does not name the current snapshot is
never applied. When it names the newest backup (``.bak``: the snapshot the last full
write replaced) it is the leftover of a crash between those two steps, whose records are
in the new snapshot: readers ignore it and the next write removes it. Any other one (a
snapshot restored or copied without its journal) is reported by the load (WARNING naming
both files) and by ``cascadeui verify``, and the next write moves it aside to
``<path>.journal.orphan-<timestamp>`` instead of deleting it. A last line that is
incomplete or fails its checksum is an append that crashed before it was acknowledged:
readers ignore it and the next append rewrites the journal without it. A bad line with
more data after it is damage: :class:`~cascadeui.errors.StateCorruptedError` naming
``<path>.journal`` and the line, and nothing is ever appended after it (a full
``save()`` moves it aside to ``<path>.journal.corrupt-<timestamp>`` before writing).

``.bak`` is the snapshot before the last *full* write, without the journal that was
appended to it: backups rotate only on full writes, and the backup fallback (main file
missing or unreadable) never applies a journal.

Symlinks: the store never reads or writes through a link at ``<path>``, the journal, a
backup or the lock (``O_NOFOLLOW``): it raises :class:`~cascadeui.errors.ConfigurationError`
naming the real path to pass instead, so a planted link cannot redirect a write. (The
path is not resolved at construction: constructors do no I/O, because backends are
built on the event loop.) Links in the directory part of the path are followed as
usual. New files get mode 0600 (a journal takes the main file's permission bits); an
existing file keeps its permission bits.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

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

from . import _journal
from .base import BackupInfo, BaseStore, Check, StoreInfo
from .locks import LockUnavailableError, PathLock

if TYPE_CHECKING:
    from cascadeui._watch import Listener

    from ._journal import JournaledStore

__all__ = ["FileStore"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.file")

#: (inode, mtime_ns, ctime_ns, size): every full save makes a new inode while the old one
#: still exists, so the signature of the main file changes on every full commit.
_Signature = tuple[int, int, int, int]
#: (inode, mtime_ns, size) of the main file: what a journal header binds to. Not ctime:
#: rotating ``.bak`` hard-links the main file, which changes its ctime, not its bytes.
_SnapshotId = tuple[int, int, int]
#: (inode, size, mtime_ns) of the journal file: every append grows it.
_JournalSig = tuple[int, int, int]
#: (CRC-32, length) of the snapshot's bytes: what a journal header binds to (format 2).
#: Content, not the inode, so copying the snapshot and its journal together (cp, cp -p,
#: shutil.copy2, a backup restored elsewhere) keeps every journaled change.
_Digest = tuple[int, int]

#: The header format this build writes; format 1 (bound to the inode) is still read.
_JOURNAL_FORMAT = 2
#: Characters encoded and written at a time by a whole-document write.
_WRITE_CHUNK = 1 << 20
#: Lock-free reads that find the snapshot replaced under them retry this often, then lock.
_READ_ATTEMPTS = 5


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _snapshot_id(st: os.stat_result) -> _SnapshotId:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _journal_sig(st: os.stat_result) -> _JournalSig:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _version_of(main: os.stat_result, journal: os.stat_result | None) -> int:
    """The version token of a main file and its journal file (``()``: no journal file)."""
    return hash((_signature(main), _journal_sig(journal) if journal is not None else ())) or 1


def _line(payload: bytes) -> bytes:
    """One journal line: ``<crc32, 8 hex digits> <payload>\\n``."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _digest(data: bytes, crc: int = 0, size: int = 0) -> _Digest:
    """The (CRC-32, length) of a snapshot's bytes; ``crc``/``size``: of the bytes before."""
    return (zlib.crc32(data, crc), size + len(data))


def _header(digest: _Digest) -> bytes:
    """The journal's first line, binding it to the snapshot whose bytes have ``digest``."""
    body = {"cascadeui_journal": _JOURNAL_FORMAT,
            "snapshot": {"crc32": f"{digest[0]:08x}", "size": digest[1]}}
    return _line(json.dumps(body, separators=(",", ":")).encode("ascii"))


@dataclass(frozen=True)
class _Binding:
    """The snapshot a journal header names: by content (format 2) or by inode (format 1,
    written by earlier builds: ``[st_ino, st_mtime_ns, st_size]``)."""

    format: int
    digest: _Digest | None = None
    inode: _SnapshotId | None = None

    def binds(self, snapshot: _SnapshotId, digest: _Digest) -> bool:
        """True if the journal was written against this snapshot."""
        if self.format == 1:
            return self.inode == snapshot
        return self.digest == digest

    def describe(self) -> str:
        if self.digest is not None:
            return f"a snapshot of {self.digest[1]} bytes with CRC-32 {self.digest[0]:08x}"
        return f"the snapshot file with inode, mtime and size {list(self.inode or ())}"


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
#: Opening a FIFO planted at a state path must fail fast, not wait for a writer forever.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FILE_KINDS = {stat.S_IFDIR: "directory", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket",
               stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
               stat.S_IFLNK: "symlink"}


def _what(mode: int) -> str:
    """``directory``, ``FIFO``... for a file mode that is not a regular file."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "special file")


@dataclass(frozen=True)
class _Journal:
    """One read of ``<path>.journal``: its good lines, and where the good part ends."""

    stat: os.stat_result
    #: The snapshot its header names; None when even the header is a torn tail (or the
    #: read started after the header).
    snapshot: _Binding | None
    #: (line number, record text) of every good record line, in order.
    records: list[tuple[int, bytes]]
    #: Bytes up to the end of the last good line (the header included).
    end: int
    #: Lines up to ``end`` (the header included).
    lines: int
    #: The file did not change while it was read (size and mtime before == after).
    stable: bool
    #: A bad record line with data after it (raised only if the journal is applied).
    damage: StateCorruptedError | None


@dataclass(frozen=True)
class _Extent:
    """What the last read, write or catch-up under the lock saw.

    Lets ``save_changes`` skip a read, and ``load_changes`` read only the journal bytes
    committed since.
    """

    version: int
    snapshot: _SnapshotId
    snapshot_bytes: int
    #: The snapshot's content, which a new journal header names.
    digest: _Digest
    #: The journal file on disk at ``version`` (None: no journal file).
    journal: _JournalSig | None
    #: Good bytes of a journal bound to ``snapshot``; 0 when there is none (or it is stale).
    journal_end: int
    #: Lines in those ``journal_end`` bytes (to number the lines read after them).
    journal_lines: int
    #: The header format of that journal (1: bound to the inode, rewritten on next append).
    journal_format: int = _JOURNAL_FORMAT


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
        if backups is not None and backups < 0:
            raise ValueError("backups must be >= 0")
        self.path: Path = Path(os.fspath(path)).absolute()
        self.location: str = str(self.path)
        self.backups = backups
        self.lock_timeout = lock_timeout
        self.lock_path: Path = Path(f"{self.path}.lock")
        #: The change journal appended after the snapshot at :attr:`path`.
        self.journal_path: Path = Path(f"{self.path}.journal")
        #: The lineage id of the state at :attr:`path` (see :meth:`load_checked`).
        self.lineage_path: Path = Path(f"{self.path}.lineage")
        self._lock = PathLock(self.lock_path, timeout=lock_timeout)
        self._known_good: _Signature | None = None
        #: A journal file this store read (or wrote) whole and found good.
        self._journal_good: _JournalSig | None = None
        self._extent: _Extent | None = None
        self._swept = False
        #: The directories of ``path`` exist and are durable (see _make_dirs).
        self._dirs_ready = False
        #: Journal files already reported as naming another snapshot (log once each).
        self._reported: set[_JournalSig] = set()
        #: The backup the last load fell back to (None: it read the main file).
        self._read_from: str | None = None
        #: (version, lineage id) of the last state this store read whole or wrote under
        #: the lock ('' when no lineage file exists).
        self._lineage: tuple[int, str] | None = None
        #: The version at which load_checked found the medium lost: the whole write over
        #: it starts a new lineage.
        self._fork_at: int | None = None

    # -- paths -------------------------------------------------------------------------

    def backup_paths(self) -> list[Path]:
        """The backup generations, newest first (whether or not they exist)."""
        count = self.backups
        if count is None:
            count = max([1, *(index + 1 for index, _ in self._existing_backups())])
        return [self._backup_path(i) for i in range(count)]

    def _backup_path(self, index: int) -> Path:
        return Path(f"{self.path}.bak" + (f".{index}" if index else ""))

    def _existing_backups(self) -> list[tuple[int, Path]]:
        """(index, path) of every ``<name>.bak[.N]`` next to the file, newest first."""
        pattern = re.compile(re.escape(self.path.name) + r"\.bak(?:\.([1-9]\d*))?")
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return []
        found = []
        for name in names:
            m = pattern.fullmatch(name)
            if m:
                found.append((int(m.group(1) or 0), self.path.parent / name))
        return sorted(found)

    def companion(self, tag: str) -> FileStore:
        """``<path>.<tag>.bak`` next to the file, without backups of its own."""
        return FileStore(f"{self.path}.{tag}.bak", backups=0, lock_timeout=self.lock_timeout,
                         serializer=self.serializer)

    def listener(self, notify: Callable[[int | None], None]) -> Listener:
        """Watch the file and its journal by ``stat`` (for the engine; not started)."""
        from cascadeui._watch import StatListener

        return StatListener(notify, self.location, [self.path, self.journal_path])

    # -- what readers ask (inspect, the CLI) ---------------------------------------------

    def exists(self) -> bool:
        """True when the file, or a backup to fall back to, exists; no I/O beyond ``lstat``."""
        self._check_open()
        return os.path.lexists(self.path) or bool(self._existing_backups())

    def list_backups(self) -> list[BackupInfo]:
        """The ``.bak`` generations next to the file, newest first (``lstat``: a link is
        listed as what it is, never followed)."""
        self._check_open()
        found = []
        for index, path in self._existing_backups():
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found.append(BackupInfo(index, str(path), st.st_size,
                                    datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return found

    def read_backup(self, index: int) -> dict[str, Any]:
        """Decode backup generation ``index`` (0 is ``.bak``), never through a link.

        :raises StateNotFoundError: no such generation.
        :raises ConfigurationError: it is a symlink or not a regular file.
        :raises StateCorruptedError: it does not decode.
        """
        self._check_open()
        path = self._backup_path(index)
        try:
            return self._read(path)[0]
        except FileNotFoundError:
            have = ", ".join(str(i) for i, _ in self._existing_backups()) or "none"
            raise StateNotFoundError(f"no backup {index} at {path} (available: {have})",
                                     location=str(path)) from None

    def describe(self) -> StoreInfo:
        """Sizes of the snapshot and its journal, last change, backups (``lstat`` only).

        ``version`` is None: a file's ``version()`` is an opaque change token.
        """
        self._check_open()
        main = self._lstat(self.path)
        journal = self._lstat(self.journal_path)
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

    def _lstat(self, path: Path) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailableError(f"cannot stat {path}: {exc.strerror or exc}",
                                          location=self.location) from exc

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
        for info in self.list_backups():
            try:
                self.read_backup(info.index)
                checks.append(Check(f"backup {info.index} decodes", True, info.path))
            except PersistenceError as exc:
                checks.append(Check(f"backup {info.index} decodes", False, str(exc)))
        return checks, state

    def _check_main(self) -> tuple[list[Check], dict[str, Any] | None]:
        try:
            state, st, digest = self._read(self.path)
        except FileNotFoundError:
            return [Check("main file exists", False, f"{self.path} is missing")], None
        except PersistenceError as exc:
            return [Check("main file decodes", False, str(exc))], None
        checks = [Check("main file decodes", True, str(self.path))]
        try:
            journal = self._read_journal()
            if self._snapshot_moved(_snapshot_id(st)):
                return [*checks, Check("change journal applies", False, "moved")], state
            problem = None
            if journal is None or journal.snapshot is None:
                detail = "no journal"
            elif not journal.snapshot.binds(_snapshot_id(st), digest):
                problem = self._unbound_problem(journal)
                detail = "it names another snapshot: not applied"
            else:
                self._apply(state, journal)
                detail = f"{len(journal.records)} record(s) after the snapshot"
        except PersistenceError as exc:
            return [*checks, Check("change journal applies", False, str(exc))], None
        return [*checks, Check("change journal belongs to the snapshot", problem is None,
                               problem or ""),
                Check("change journal applies", True, detail)], state

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
            if self._settle(state, st, digest, self._read_journal(), locked=locked):
                return self._settled(state)
        else:  # the snapshot kept being replaced under a lock-free read: read under the lock
            with self._locked():
                return self._load(locked=True)
        return self._load_backup(tried, first_error)

    def _settled(self, state: dict[str, Any]) -> dict[str, Any]:
        self._read_from = None
        return state

    def _settle(self, state: dict[str, Any], st: os.stat_result, digest: _Digest,
                journal: _Journal | None, *, locked: bool) -> bool:
        """Apply ``journal`` to the snapshot ``state`` read with ``st`` if it belongs to it.

        False when a lock-free read must start over: the journal does not name this
        snapshot and the snapshot was replaced meanwhile (the journal may be the one of
        its successor, or the successor's full write may have just deleted ours). A
        journal naming another snapshot is reported (:meth:`_report_unbound`), never
        applied.

        :raises StateCorruptedError: the journal is damaged or does not fit the snapshot.
        """
        snapshot = _snapshot_id(st)
        bound = journal is not None and journal.snapshot is not None and (
            journal.snapshot.binds(snapshot, digest))
        if not bound and not locked and self._snapshot_moved(snapshot):
            return False
        if journal is not None and bound:
            self._apply(state, journal)
            if journal.stable:
                self._journal_good = _journal_sig(journal.stat)
        elif journal is not None and journal.snapshot is not None:
            self._report_unbound(journal)
        self._known_good = _signature(st)
        if locked:
            self._extent = _Extent(
                _version_of(st, journal.stat if journal is not None else None), snapshot,
                st.st_size, digest,
                _journal_sig(journal.stat) if journal is not None else None,
                journal.end if journal is not None and bound else 0,
                journal.lines if journal is not None and bound else 0,
                journal.snapshot.format if journal is not None and bound
                and journal.snapshot is not None else _JOURNAL_FORMAT)
            self._lineage = (self._extent.version, self._read_lineage())
        return True

    def _report_unbound(self, journal: _Journal) -> None:
        """Log, once per journal file, that ``<path>.journal`` names another snapshot.

        A journal left by a full write interrupted between replacing the snapshot and
        deleting the journal names the snapshot now at ``.bak``: its records are in the
        new snapshot (INFO). Any other one (a snapshot copied, restored or replaced
        without its journal) holds records this load does not apply: WARNING, and the
        next write moves it aside instead of deleting it.
        """
        sig = _journal_sig(journal.stat)
        if sig in self._reported:
            return
        self._reported.add(sig)
        problem = self._unbound_problem(journal)
        if problem is None:
            log.info("%s is the journal of the previous snapshot (a full write was "
                     "interrupted before deleting it); its records are in %s, ignoring it",
                     self.journal_path, self.path)
        else:
            log.warning("%s", problem)

    def _unbound_problem(self, journal: _Journal) -> str | None:
        """What is wrong with a journal that does not name the snapshot at ``<path>``;
        None when it is the harmless leftover of an interrupted full write."""
        binding = journal.snapshot
        if binding is None or self._is_leftover(binding):
            return None
        return (f"{self.journal_path} does not belong to the snapshot {self.path}: its header "
                f"names {binding.describe()}, so its {len(journal.records)} record(s) are "
                "not applied (was the snapshot replaced, restored or copied without this "
                "journal?); the next write moves it aside to "
                f"{self.journal_path}.orphan-<timestamp>")

    def _is_leftover(self, binding: _Binding) -> bool:
        """True if ``binding`` names the newest backup: the snapshot the last full write
        replaced (it rotates the old snapshot to ``.bak`` before replacing it)."""
        gens = self.backup_paths()
        if not gens:
            return False
        try:
            if binding.format == 1:
                return _snapshot_id(os.lstat(gens[0])) == binding.inode
            data, _, _ = self._read_bytes(gens[0])
        except (OSError, PersistenceError):
            return False
        return _digest(data) == binding.digest

    def load_checked(self, since: int) -> tuple[dict[str, Any], int, str | None]:
        """:meth:`load_versioned`, plus why the stored state is not a descendant of the one
        this store read or wrote at version ``since``: the medium lost data.

        Loss is: the journal of the same snapshot holding fewer lines than this store saw
        (truncated, deleted, replaced), or a state of another lineage (``<path>`` deleted,
        then written again by another process: a whole write into a missing file starts a
        new lineage in ``<path>.lineage``). The next whole write over it starts a new
        lineage, so other processes see the loss too. None when nothing was lost, or when
        this store did not read or write version ``since`` itself.

        :raises StateCorruptedError: as :meth:`load`.
        """
        self._check_open()
        with self._locked():
            seen = self._extent if self._extent is not None and (
                self._extent.version == since) else None
            seen_lineage = self._lineage[1] if self._lineage is not None and (
                self._lineage[0] == since) else ""
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
                elif seen_lineage and self._lineage is not None and (
                        self._lineage[1] != seen_lineage):
                    problem = (f"{self.path} holds another lineage "
                               f"({self._lineage[1] or 'none'}, this store saw {seen_lineage}): "
                               "it was deleted, then written again by another process")
            if problem is not None:
                self._fork_at = version
            return state, version, problem

    def journal_mismatch(self) -> str | None:
        """Why ``<path>.journal`` does not belong to the snapshot at ``<path>``; None when
        it does, when either file is missing, or when it is the harmless leftover of an
        interrupted full write. For ``cascadeui verify``.

        :raises StateCorruptedError: the journal's header is damaged.
        """
        self._check_open()
        try:
            data, st, _ = self._read_bytes(self.path)
        except FileNotFoundError:
            return None
        journal = self._read_journal()
        if journal is None or journal.snapshot is None or journal.snapshot.binds(
                _snapshot_id(st), _digest(data)):
            return None
        return self._unbound_problem(journal)

    def _snapshot_moved(self, snapshot: _SnapshotId) -> bool:
        """True if ``<path>`` is no longer the snapshot a lock-free read started from."""
        try:
            return _snapshot_id(os.lstat(self.path)) != snapshot
        except OSError:
            return True

    def _load_backup(self, tried: list[str], first_error: PersistenceError | None
                     ) -> dict[str, Any]:
        """The newest readable backup, when the main file is missing or unreadable.

        Backups are whole snapshots: no journal is applied to them.
        """
        for candidate in self.backup_paths():
            try:
                state, _, _ = self._read(candidate)
            except FileNotFoundError:
                continue
            except (StateCorruptedError, ConfigurationError) as exc:
                tried.append(str(candidate))
                first_error = first_error or exc
                continue
            if tried:
                log.warning("%s is unreadable (%s); loaded the backup %s instead",
                            self.path, first_error.args[0] if first_error else "", candidate)
            else:
                log.warning("%s is missing; loaded the backup %s instead", self.path, candidate)
            self._read_from = str(candidate)
            return state
        if tried:
            raise StateCorruptedError(
                f"no readable state in {', '.join(tried)}: {first_error}",
                location=self.location, tried=tuple(tried)) from first_error
        return {}

    def _read(self, path: Path) -> tuple[dict[str, Any], os.stat_result, _Digest]:
        """Decode one whole document (the snapshot or a backup); the stat and the digest
        of the bytes read."""
        data, st, _ = self._read_bytes(path)
        try:
            state = self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{path}: {exc}", location=str(path),
                                      tried=(str(path),)) from exc
        return state, st, _digest(data)

    def _read_bytes(self, path: Path, start: int = 0
                    ) -> tuple[bytes, os.stat_result, os.stat_result]:
        """The bytes of ``path`` from ``start``, never through a symlink, and its stat
        before and after the read.

        :raises FileNotFoundError: no such file.
        :raises ConfigurationError: ``path`` is a symlink.
        :raises StorageUnavailableError: it cannot be read.
        """
        fd = self._open_regular(path, os.O_RDONLY)
        try:
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if start:
                    fh.seek(start)
                data = fh.read()
                return data, st, os.fstat(fh.fileno())
        except OSError as exc:
            raise StorageUnavailableError(f"cannot read {path}: {exc.strerror or exc}",
                                          location=str(path)) from exc

    def _open_regular(self, path: Path, flags: int) -> int:
        """``os.open`` a regular file: never through a link, never blocking on a FIFO.

        :raises FileNotFoundError: no such file.
        :raises ConfigurationError: a symlink, a FIFO, a directory... (named).
        :raises StorageUnavailableError: it cannot be opened.
        """
        try:
            fd = os.open(path, flags | _O_NOFOLLOW | _O_BINARY | _O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError as exc:
            self._refuse_symlink(path, exc)
            if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO with no reader, a dir
                self._refuse_special(path, os.lstat(path))
            raise StorageUnavailableError(f"cannot open {path}: {exc.strerror or exc}",
                                          location=str(path)) from exc
        try:
            self._refuse_special(path, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refuse_special(self, path: Path, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(
                f"{path} is a {_what(st.st_mode)}, not a regular file; cascadeui reads and "
                "writes only regular files (move it away)", location=str(path))

    def _read_journal(self, start: int = 0, lines: int = 0) -> _Journal | None:
        """Read and check ``<path>.journal``; None when there is none.

        ``start``: read only the bytes from this offset, the end of ``lines`` good lines
        read before (no header check then).

        :raises StateCorruptedError: the header line is damaged (a damaged record line is
            raised when the journal is applied: a stale journal is never applied).
        :raises ConfigurationError: the journal path is a symlink.
        """
        try:
            data, st, after = self._read_bytes(self.journal_path, start)
        except FileNotFoundError:
            return None
        stable = (start + len(data) == st.st_size
                  and _journal_sig(after) == _journal_sig(st))
        return self._scan(data, st, stable, offset=start, lineno=lines)

    def _scan(self, data: bytes, st: os.stat_result, stable: bool, *, offset: int = 0,
              lineno: int = 0) -> _Journal:
        """Split journal bytes into the header's snapshot, the good records, and their end.

        ``data`` starts at ``offset`` in the file, after ``lineno`` lines (0: at the
        header). A bad or incomplete *last* line is a torn append and ends the good
        part; a bad line followed by anything is damage (raised at once in the header,
        which names the snapshot; recorded for a record line, so that a stale journal is
        skipped).
        """
        snapshot: _Binding | None = None
        records: list[tuple[int, bytes]] = []
        pos, size, good = 0, len(data), lineno
        while pos < size:
            lineno += 1
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # incomplete last line: an append that never finished
            payload = data[pos + 9:nl]
            if (nl - pos < 9 or data[pos + 8] != 0x20
                    or b"%08x" % zlib.crc32(payload) != data[pos:pos + 8]):
                if nl + 1 >= size:
                    break  # a bad last line: an append that never finished
                damage = self._damaged(lineno, "checksum mismatch, and more data follows")
                if lineno == 1:
                    raise damage
                return _Journal(st, snapshot, records, offset + pos, good, stable, damage)
            if lineno == 1:
                snapshot = self._parse_header(payload)
            else:
                records.append((lineno, payload))
            pos, good = nl + 1, lineno
        return _Journal(st, snapshot, records, offset + pos, good, stable, None)

    def _parse_header(self, payload: bytes) -> _Binding:
        """The snapshot a header line names: format 2 ``{"crc32": "<8 hex>", "size": n}``,
        or format 1 ``[st_ino, st_mtime_ns, st_size]`` (earlier builds)."""
        try:
            header = json.loads(payload)
            fmt, snap = header["cascadeui_journal"], header["snapshot"]
        except (ValueError, TypeError, KeyError, RecursionError):
            raise self._damaged(1, "not a cascadeui journal header") from None
        if fmt == 1:
            if not (isinstance(snap, list) and len(snap) == 3
                    and all(type(x) is int for x in snap)):
                raise self._damaged(1, "the header names no snapshot")
            return _Binding(1, inode=(snap[0], snap[1], snap[2]))
        if fmt != _JOURNAL_FORMAT:
            raise self._damaged(1, f"unsupported journal format {fmt!r}")
        crc = snap.get("crc32") if isinstance(snap, dict) else None
        size = snap.get("size") if isinstance(snap, dict) else None
        if not (isinstance(crc, str) and len(crc) == 8 and type(size) is int and size >= 0):
            raise self._damaged(1, "the header names no snapshot")
        try:
            return _Binding(2, digest=(int(crc, 16), size))
        except ValueError:
            raise self._damaged(1, "the header names no snapshot") from None

    def _apply(self, state: dict[str, Any], journal: _Journal) -> None:
        """Apply every record of ``journal`` to ``state`` in order.

        :raises StateCorruptedError: a record does not decode or does not fit, or a line
            before the end is damaged.
        """
        if journal.damage is not None:
            raise journal.damage
        for lineno, text in journal.records:
            try:
                _journal.apply_record(state, _journal.decode_record(self.serializer, text))
            except StateCorruptedError as exc:
                raise self._damaged(lineno, str(exc)) from exc

    def _damaged(self, lineno: int, reason: str) -> StateCorruptedError:
        where = str(self.journal_path)
        return StateCorruptedError(
            f"{where} line {lineno}: {reason} (the snapshot {self.path} is intact; move the "
            "journal aside to load it without the changes appended since)",
            location=where, tried=(where,))

    def version(self) -> int:
        """An opaque number that changes on every commit (0 when no file); two ``lstat``.

        Built from the main file's (inode, mtime_ns, ctime_ns, size) and the journal's
        (inode, size, mtime_ns): every full save puts a new inode under ``<path>`` while
        the previous one is still alive, and every append grows the journal. Compare
        with ``==``; it is not ordered.
        """
        self._check_open()
        try:
            main = os.lstat(self.path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageUnavailableError(f"cannot stat {self.path}: {exc.strerror or exc}",
                                          location=self.location) from exc
        return _version_of(main, self._lstat_journal())

    def _lstat_journal(self) -> os.stat_result | None:
        """The journal file's lstat (a symlink's own), None when there is none."""
        try:
            return os.lstat(self.journal_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot stat {self.journal_path}: {exc.strerror or exc}",
                location=self.location) from exc

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

    def _catch_up(self, extent: _Extent) -> tuple[list[list[list[Any]]], int] | None:
        """Decode the journal past ``extent`` and move the extent to its end (lock held).

        With no journal bound to the snapshot at ``extent`` (none, stale, torn header),
        every record of a journal now bound to it came after: it is read from the start.
        """
        try:
            main = os.lstat(self.path)
        except OSError:
            return None
        if _snapshot_id(main) != extent.snapshot:
            return None  # a full write (save, compaction) replaced the snapshot
        start = extent.journal_end
        journal = self._read_journal(start, extent.journal_lines)
        if journal is None:
            if start:
                return None
            version = _version_of(main, None)
            self._extent = _Extent(version, extent.snapshot, extent.snapshot_bytes,
                                   extent.digest, None, 0, 0)
            self._lineage_moves(extent.version, version)
            return [], version
        if start and (extent.journal is None or journal.stat.st_ino != extent.journal[0]
                      or journal.stat.st_size < start):
            return None  # replaced (a torn tail rewritten away) or cut short
        if not journal.stable:
            return None  # written outside the lock while we read
        records: list[list[list[Any]]] = []
        end = lines = 0
        fmt = extent.journal_format
        if not start and journal.snapshot is not None:
            fmt = journal.snapshot.format
        if start or (journal.snapshot is not None
                     and journal.snapshot.binds(extent.snapshot, extent.digest)):
            if journal.damage is not None:
                raise journal.damage
            for lineno, text in journal.records:
                try:
                    records.append(_journal.decode_record(self.serializer, text))
                except StateCorruptedError as exc:
                    raise self._damaged(lineno, str(exc)) from exc
            end, lines = journal.end, journal.lines
            if not start or self._journal_good == extent.journal:
                # Every record decodes; the caller applies them to the document it holds.
                self._journal_good = _journal_sig(journal.stat)
        elif journal.snapshot is not None:
            self._report_unbound(journal)
        version = _version_of(main, journal.stat)
        self._extent = _Extent(version, extent.snapshot, extent.snapshot_bytes, extent.digest,
                               _journal_sig(journal.stat), end, lines, fmt)
        self._lineage_moves(extent.version, version)
        return records, version

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
        line = _line(self._record_text(changes)) if changes else b""
        with self._locked():
            if self.version() != expected:
                return None
            if not changes:
                return expected
            extent = self._extent
            if extent is None or extent.version != expected:
                extent = self._inspect()
            if extent is None or _journal.should_compact(
                    extent.journal_end, len(line), extent.snapshot_bytes):
                self._write(full(), fork=self._fork_at == expected)
                return self.version()
            return self._append(extent, line)

    def _record_text(self, changes: Sequence[Change]) -> bytes:
        """One record's bytes, without the line framing (SerializationError: nothing written)."""
        text = _journal.encode_record(self.serializer, changes)
        # Lines are the framing. Valid JSON holds a raw newline only as whitespace (a
        # custom serializer may indent), so replacing it with a space keeps the value.
        return text.replace("\n", " ").encode("utf-8")

    def _inspect(self) -> _Extent | None:
        """Read the stored state under the lock to learn its extent (the rare path).

        None when there is no readable snapshot to append to (missing or unreadable).

        :raises StateCorruptedError: the journal is damaged: nothing may be appended.
        """
        try:
            state, st, digest = self._read(self.path)
        except FileNotFoundError:
            return None
        except StateCorruptedError:
            return None
        self._settle(state, st, digest, self._read_journal(), locked=True)
        return self._extent

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """Around a commit's last steps: the lock file must still be the one we locked,
        and nobody may confirm a replacement lock until the commit is whole
        (:meth:`PathLock.committing`).

        :raises LockTimeoutError: it was unlinked or replaced while held (another process
            may hold the new one): nothing is written.
        """
        with self._lock.committing() as held:
            if not held:
                self._lock_lost()
            yield

    def _lock_lost(self) -> NoReturn:
        raise LockTimeoutError(
            f"{self.lock_path} was removed or replaced while this writer held it; "
            "nothing was written (another process may be writing now: retry)",
            lock=str(self.lock_path), timeout=self.lock_timeout, location=self.location)

    def _append(self, extent: _Extent, line: bytes) -> int | None:
        """Append ``line`` to the journal bound to ``extent.snapshot``, durably (lock held)."""
        with self._committing():
            return self._append_locked(extent, line)

    def _append_locked(self, extent: _Extent, line: bytes) -> int | None:
        self._sweep_once()
        head: bytes | None = None
        try:
            if extent.journal_end == 0:  # no journal for this snapshot (none, stale, torn)
                if extent.journal is not None:
                    self._set_unbound_journal_aside()
                head = _header(extent.digest)
            elif extent.journal_format != _JOURNAL_FORMAT:
                # Written by an earlier build (bound to the inode): the same records under
                # a header naming the snapshot's content, so a copy keeps them from now on.
                good = self._good_part(extent)
                head = _header(extent.digest) + good[good.index(b"\n") + 1:]
            elif extent.journal is not None and extent.journal[1] > extent.journal_end:
                head = self._good_part(extent)  # a torn tail: a clean journal without it
            if head is not None:
                self._new_journal(head + line)
                end = len(head) + len(line)
            else:
                if not self._append_line(extent, line):
                    return None
                end = extent.journal_end + len(line)
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot append to {self.journal_path}: {exc.strerror or exc}; the stored "
                "state is intact", location=self.location) from exc
        main, journal = os.lstat(self.path), os.lstat(self.journal_path)
        version = _version_of(main, journal)
        self._journal_good = _journal_sig(journal)
        lines = 2 if extent.journal_end == 0 else extent.journal_lines + 1
        self._extent = _Extent(version, extent.snapshot, extent.snapshot_bytes, extent.digest,
                               _journal_sig(journal), end, lines)
        self._lineage_moves(extent.version, version)
        return version

    def _lineage_moves(self, old: int, new: int) -> None:
        """The lineage known at version ``old`` is the one at ``new`` (an append, a
        catch-up: the same snapshot)."""
        if self._lineage is not None and self._lineage[0] == old:
            self._lineage = (new, self._lineage[1])

    def _good_part(self, extent: _Extent) -> bytes:
        """The first ``journal_end`` bytes of the journal: its header and good records."""
        try:
            fd = self._open_regular(self.journal_path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise StorageUnavailableError(f"cannot read {self.journal_path}: it vanished",
                                          location=self.location) from exc
        with os.fdopen(fd, "rb") as fh:
            return fh.read(extent.journal_end)

    def _append_line(self, extent: _Extent, line: bytes) -> bool:
        """O_APPEND the line and fsync; False if the file is not the one ``extent`` saw.

        On a failed write or fsync the journal is rewritten without the line (best
        effort), so an unacknowledged record never stays visible.
        """
        fd = self._open_regular(self.journal_path, os.O_WRONLY | os.O_APPEND)
        try:
            st = os.fstat(fd)
            if extent.journal is None or (st.st_ino, st.st_size) != (
                    extent.journal[0], extent.journal_end):
                return False  # changed outside the lock: let the caller re-read
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    self._new_journal(self._good_part(extent))
                raise
        finally:
            os.close(fd)
        return True

    def _new_journal(self, data: bytes) -> None:
        """Put ``data`` at ``<path>.journal`` whole: temp file, fsync, replace, dir fsync."""
        self._put(self.journal_path, data, "journal")

    def _put(self, target: Path, data: bytes, kind: str) -> None:
        """Put ``data`` at ``target`` whole: temp file, fsync, replace, dir fsync."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.{kind}.",
                                   suffix=".tmp")  # mode 0600, O_EXCL
        try:
            with os.fdopen(fd, "wb") as fh:
                self._keep_mode(fh.fileno())
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()

    def _refuse_symlink(self, path: Path, exc: OSError | None = None) -> None:
        if path.is_symlink():
            raise ConfigurationError(
                f"{path} is a symlink; cascadeui does not read or write through links "
                f"(pass the real path: {os.path.realpath(path)})",
                location=str(path)) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if os.path.isdir(self.path):  # else a .lock is left next to a directory
            raise ConfigurationError(
                f"{self.path} is a directory, not a state file (name a file in it, e.g. "
                f"{self.path / 'cascadeui_state.json'})", location=self.location)
        if not self._dirs_ready:
            self._make_dirs()
        try:
            # Polls every 5 ms: filelock's default 50 ms idled the lock most of the time
            # under contention (4 writers: 3x fewer commits per second).
            self._lock.timeout = self.lock_timeout
            self._lock.acquire()
        except LockUnavailableError:
            raise LockTimeoutError(
                f"could not lock {self.lock_path} within {self.lock_timeout:g}s "
                "(another process is writing, or a writer hangs)",
                lock=str(self.lock_path), timeout=self.lock_timeout,
                location=self.location) from None
        except OSError as exc:
            self._refuse_symlink(self.lock_path, exc)
            raise StorageUnavailableError(
                f"cannot create lock {self.lock_path}: {exc.strerror or exc}",
                location=self.location) from exc
        try:
            yield
        finally:
            self._lock.release()

    def _make_dirs(self) -> None:
        """Create the missing directories of :attr:`path`, each fsynced into its parent.

        filelock would create them for the lock file, but never fsyncs their parents: a
        power cut after an acknowledged first save could lose the new directory and the
        state in it (issue 16, tests/test_powercut.py). Once per store.
        """
        missing: list[Path] = []
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        try:
            for directory in reversed(missing):
                with contextlib.suppress(FileExistsError):  # another process made it
                    os.mkdir(directory)
                self._fsync_dir(directory.parent)
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot create the directory of {self.path}: {exc.strerror or exc}",
                location=self.location) from exc
        self._dirs_ready = True

    def _write(self, data: bytes | str, *, fork: bool = False) -> None:
        """Write the new snapshot durably, rotate backups, replace the main file, drop the journal.

        The lock is held. Backups rotate only once the new bytes are fsynced in the temp
        file, so a failed write (disk full, EIO, read-only) leaves the main file, the
        journal and every backup generation as they were (issue 7, tests/test_faults.py).
        The journal is deleted only after the new snapshot is in place: a crash between
        leaves a stale journal, whose header no longer names the snapshot.
        """
        self._sweep_once()
        lineage = self._next_lineage(fork)
        # From the last lock check (in `before`, once the new bytes are fsynced) until the
        # stale journal is gone, nobody may confirm a replacement lock file (locks.py).
        with contextlib.ExitStack() as commit:
            def before() -> None:
                commit.enter_context(self._committing())
                self._make_room()

            try:
                digest = self._replace(data, before=before)
            except OSError as exc:
                raise StorageUnavailableError(
                    f"cannot save {self.path}: {exc.strerror or exc}; the previous file is "
                    "intact", location=self.location) from exc
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
                self._fsync_dir()
        main, journal = os.lstat(self.path), self._lstat_journal()
        self._extent = _Extent(_version_of(main, journal), _snapshot_id(main), main.st_size,
                               digest, _journal_sig(journal) if journal is not None else None,
                               0, 0)
        self._lineage = (self._extent.version, lineage)
        if fork:
            self._fork_at = None

    def _next_lineage(self, fork: bool) -> str:
        """The lineage id a whole write goes on with (lock held): the stored one, or a new
        one written to ``<path>.lineage`` first when there is none, when ``<path>`` is
        missing (a deleted file: what another process saw is gone) or with ``fork``."""
        current = self._read_lineage()
        if current and not fork and os.path.lexists(self.path):
            return current
        lineage = secrets.token_hex(8)
        try:
            self._put(self.lineage_path, f"{lineage}\n".encode("ascii"), "lineage")
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot write {self.lineage_path}: {exc.strerror or exc}; the stored state "
                "is intact", location=self.location) from exc
        return lineage

    def _read_lineage(self) -> str:
        """The id in ``<path>.lineage``; '' when there is none (or it is unreadable)."""
        try:
            data, _, _ = self._read_bytes(self.lineage_path)
        except (OSError, PersistenceError):
            return ""
        return data.decode("ascii", "replace").strip()[:64]

    def _sweep_once(self) -> None:
        """Run :meth:`_sweep_stale_temps` before this store's first write (lock held)."""
        if not self._swept:
            self._sweep_stale_temps()

    def _sweep_stale_temps(self) -> None:
        """Delete temp files of writers killed mid-save; once per store, lock held.

        Every temp file (snapshot ``.<name>.*.tmp``, journal ``.<name>.journal.*.tmp``,
        backup link ``<name>.bak.<pid>.tmp``) is written under the lock, so while we
        hold it no live writer owns one. Without this, each SIGKILL during a save leaves
        a state-sized file (144 after 200 kills in scripts/crash_campaign.py, issue 7).
        """
        self._swept = True
        main, bak = f".{self.path.name}.", f"{self.path.name}.bak"
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for name in names:
            if name.endswith(".tmp") and (name.startswith(main) or name.startswith(bak)):
                with contextlib.suppress(OSError):
                    os.unlink(self.path.parent / name)

    def _make_room(self) -> None:
        """Just before a full write replaces ``<path>`` (the lock checked, see
        :meth:`_committing`): keep what did not load, rotate."""
        self._refuse_journal_symlink()
        aside = self._set_aside_if_corrupt()
        self._set_journal_aside_if_unreadable(aside)
        self._rotate()

    def _refuse_journal_symlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(self.journal_path).st_mode):
                self._refuse_symlink(self.journal_path)

    def _set_aside_if_corrupt(self) -> Path | None:
        """Never rotate unreadable bytes over the last good backup: move them aside first.

        :returns: where the unreadable main file went, or None.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        self._refuse_symlink(self.path)
        if self._known_good == _signature(st):
            return None
        try:
            self._read(self.path)
        except StateCorruptedError:
            aside = self._corrupt_name(self.path)
            os.replace(self.path, aside)
            log.warning("%s was unreadable; moved it aside to %s before saving", self.path,
                        aside)
            return aside
        return None

    def _set_journal_aside_if_unreadable(self, main_aside: Path | None) -> None:
        """Before a full write drops the journal: never delete records that did not load.

        A journal this store read (or wrote) whole is fine; any other journal that names
        the current snapshot is loaded once, and moved to
        ``<path>.journal.corrupt-<timestamp>`` if that fails. The journal of a snapshot
        set aside as unreadable follows it (``<aside>.journal``).
        """
        try:
            jst = os.lstat(self.journal_path)
        except FileNotFoundError:
            return
        if main_aside is not None:
            os.replace(self.journal_path, f"{main_aside}.journal")
            return
        if self._journal_good == _journal_sig(jst):
            return
        try:
            state, st, digest = self._read(self.path)
        except FileNotFoundError:
            self._set_unbound_journal_aside()  # it names no snapshot that exists
            return
        try:
            journal = self._read_journal()
            if journal is None or journal.snapshot is None:
                return
            if journal.snapshot.binds(_snapshot_id(st), digest):
                self._apply(state, journal)
            else:
                self._set_unbound_journal_aside(journal)
        except StateCorruptedError as exc:
            aside = self._corrupt_name(self.journal_path)
            os.replace(self.journal_path, aside)
            log.warning("%s; moved it aside to %s before saving", exc, aside)

    def _set_unbound_journal_aside(self, journal: _Journal | None = None) -> None:
        """Before a write drops a journal that names another snapshot: keep its records.

        Moved to ``<path>.journal.orphan-<timestamp>`` (WARNING), unless it is the
        leftover of an interrupted full write, whose records are in the snapshot (then
        the write deletes it as usual). Lock held.
        """
        try:
            if journal is None:
                journal = self._read_journal()
        except StateCorruptedError:
            return  # a damaged header names nothing to keep
        if journal is None or journal.snapshot is None:
            return
        problem = self._unbound_problem(journal)
        if problem is None:
            return
        aside = self._corrupt_name(self.journal_path, "orphan")
        os.replace(self.journal_path, aside)
        log.warning("%s does not belong to the snapshot %s (its header names %s); moved "
                    "its %d record(s) aside to %s before writing", self.journal_path,
                    self.path, journal.snapshot.describe(), len(journal.records), aside)

    def _corrupt_name(self, path: Path, kind: str = "corrupt") -> Path:
        """``<path>.<kind>-<UTC timestamp>``, unique (the lock is held while we look)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = Path(f"{path}.{kind}-{stamp}Z")
        n = 1
        while os.path.lexists(aside):
            aside = Path(f"{path}.{kind}-{stamp}Z-{n}")
            n += 1
        return aside

    def _rotate(self) -> None:
        gens = self.backup_paths()
        if not gens or not self.path.exists():
            return
        with contextlib.suppress(OSError):
            if os.path.samefile(self.path, gens[0]):
                # .bak already is this very file (a save failed after rotating): rotating
                # again would shift a duplicate, and renaming a link onto its own inode
                # does nothing, which would leave the temp link behind.
                return
        # Hard-link the current file to .bak (via a temp name, so .bak is always whole);
        # the main file stays in place, so a crash never leaves the target missing. The
        # link comes first: if it fails (ENOSPC, EROFS) no generation has shifted yet.
        tmp = Path(f"{gens[0]}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            try:
                os.link(self.path, tmp, follow_symlinks=False)
            except OSError:  # a filesystem without hard links: copy instead
                self._copy(self.path, tmp)
            for older, newer in zip(reversed(gens[1:]), reversed(gens[:-1]), strict=True):
                if newer.exists():
                    os.replace(newer, older)
            os.replace(tmp, gens[0])
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _copy(self, src: Path, dst: Path) -> None:
        with open(src, "rb") as fin:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fout:
                fout.write(fin.read())
                fout.flush()
                os.fsync(fout.fileno())

    def _replace(self, data: bytes | str,
                 before: Callable[[], None] | None = None) -> _Digest:
        """Put ``data`` at ``<path>`` atomically and durably; the digest of its bytes."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")  # mode 0600, O_EXCL: no symlink games
        try:
            with os.fdopen(fd, "wb") as fh:
                self._keep_mode(fh.fileno())
                if isinstance(data, bytes):
                    fh.write(data)
                    digest = _digest(data)
                else:
                    # Encoded a slice at a time (UTF-8 of the slices joins to UTF-8 of the
                    # whole): no 10 MB copy holds the GIL, each write lets the loop run.
                    digest = (0, 0)
                    for start in range(0, len(data), _WRITE_CHUNK):
                        chunk = data[start:start + _WRITE_CHUNK].encode("utf-8")
                        fh.write(chunk)
                        digest = _digest(chunk, *digest)
                fh.flush()
                os.fsync(fh.fileno())
            if before is not None:
                before()
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()
        self._known_good = _signature(os.stat(self.path))
        return digest

    def _keep_mode(self, fd: int) -> None:
        """Give the new file the permission bits of the main file (0644, ...)."""
        try:
            mode = os.lstat(self.path).st_mode & 0o7777
        except FileNotFoundError:
            return
        if mode != 0o600 and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)

    def _fsync_dir(self, directory: Path | None = None) -> None:
        fd = os.open(self.path.parent if directory is None else directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


if TYPE_CHECKING:
    def _is_journaled(store: FileStore) -> JournaledStore:
        return store  # mypy checks that FileStore implements the protocol
