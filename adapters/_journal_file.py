"""The journal file format of the JSON file adapter: ``<path>.journal``.

Line 1 is a header binding the journal to the *content* of the snapshot it was started
against, ``<crc> {"cascadeui_journal":2,"snapshot":{"crc32":"<8 hex>","size":<bytes>}}``
(not its inode, so copying both files by any means keeps every change; format 1,
``"snapshot":[st_ino, st_mtime_ns, st_size]`` from earlier builds, is still read). Every
further line is one record, ``<crc32 of the text, 8 hex digits> <record text>``. A
journal is created whole, then only ever appended to (``O_APPEND``, fsync) under the
lock, so a lock-free reader always sees a prefix of it. A bad or incomplete *last* line
is a torn append; a bad line with more data after it is damage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascadeui._merge import Change
from cascadeui.errors import PersistenceError, StateCorruptedError, StorageUnavailableError
from cascadeui.serializer import StateSerializer

from . import _fileio, _journal
from ._fileio import Digest
from .base import Check

__all__ = ["FORMAT", "Binding", "Extent", "JournalFile", "JournalRead", "JournalSig",
           "ReadMain", "Signature", "SnapshotId", "header", "journal_sig", "line",
           "record_line", "signature", "snapshot_id", "version_of"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.file")

#: The header format this build writes; format 1 (bound to the inode) is still read.
FORMAT = 2
#: (inode, mtime_ns, size) of the main file: what a format 1 header binds to.
SnapshotId = tuple[int, int, int]
#: (inode, size, mtime_ns) of the journal file: every append grows it.
JournalSig = tuple[int, int, int]
_VERSION_MASK = (1 << 62) - 1
#: (inode, mtime_ns, ctime_ns, size) of the main file: every full save makes a new inode
#: while the old one still exists, so it changes on every full commit.
Signature = tuple[int, int, int, int]


#: Decode the snapshot: ``(state, stat, digest)``.
ReadMain = Callable[[], tuple[dict[str, Any], os.stat_result, Digest]]


def signature(st: os.stat_result) -> Signature:
    """The (inode, mtime_ns, ctime_ns, size) of the main file."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def version_of(main: os.stat_result, journal: os.stat_result | None) -> int:
    """The version token of a main file and its journal file (None: no journal file)."""
    token = hash((signature(main), journal_sig(journal) if journal is not None else ()))
    return (token & _VERSION_MASK) or 1  # positive: 0 and below mean "nothing stored"


def snapshot_id(st: os.stat_result) -> SnapshotId:
    """The (inode, mtime_ns, size) of a snapshot file (not ctime: a ``.bak`` hard link
    changes the ctime, not the bytes)."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def journal_sig(st: os.stat_result) -> JournalSig:
    """The (inode, size, mtime_ns) of a journal file."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def line(payload: bytes) -> bytes:
    """One journal line: ``<crc32, 8 hex digits> <payload>\\n``."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def record_line(serializer: StateSerializer, changes: Sequence[Change]) -> bytes:
    """One commit's journal line (SerializationError: nothing to write).

    Lines are the framing. Valid JSON holds a raw newline only as whitespace (a custom
    serializer may indent), so replacing it with a space keeps the value.
    """
    text = _journal.encode_record(serializer, changes)
    return line(text.replace("\n", " ").encode("utf-8"))


def header(digest: Digest) -> bytes:
    """The journal's first line, binding it to the snapshot whose bytes have ``digest``."""
    body = {"cascadeui_journal": FORMAT,
            "snapshot": {"crc32": f"{digest[0]:08x}", "size": digest[1]}}
    return line(json.dumps(body, separators=(",", ":")).encode("ascii"))


@dataclass(frozen=True)
class Binding:
    """The snapshot a journal header names: by content (format 2) or by inode (format 1,
    written by earlier builds: ``[st_ino, st_mtime_ns, st_size]``)."""

    format: int
    digest: Digest | None = None
    inode: SnapshotId | None = None

    def binds(self, snapshot: SnapshotId, digest: Digest) -> bool:
        """True if the journal was written against this snapshot."""
        if self.format == 1:
            return self.inode == snapshot
        return self.digest == digest

    def describe(self) -> str:
        """The snapshot it names, for a person."""
        if self.digest is not None:
            return f"a snapshot of {self.digest[1]} bytes with CRC-32 {self.digest[0]:08x}"
        return f"the snapshot file with inode, mtime and size {list(self.inode or ())}"


@dataclass(frozen=True)
class JournalRead:
    """One read of ``<path>.journal``: its good lines, and where the good part ends."""

    stat: os.stat_result
    #: The snapshot its header names; None when even the header is a torn tail (or the
    #: read started after the header).
    snapshot: Binding | None
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

    def bound_to(self, snapshot: SnapshotId, digest: Digest) -> bool:
        """True when its header names this snapshot."""
        return self.snapshot is not None and self.snapshot.binds(snapshot, digest)


@dataclass(frozen=True)
class Extent:
    """What the last read, write or catch-up under the lock saw.

    Lets ``save_changes`` skip a read, and ``load_changes`` read only the journal bytes
    committed since.
    """

    version: int
    snapshot: SnapshotId
    snapshot_bytes: int
    #: The snapshot's content, which a new journal header names.
    digest: Digest
    #: The journal file on disk at ``version`` (None: no journal file).
    journal: JournalSig | None
    #: Good bytes of a journal bound to ``snapshot``; 0 when there is none (or it is stale).
    journal_end: int
    #: Lines in those ``journal_end`` bytes (to number the lines read after them).
    journal_lines: int
    #: The header format of that journal (1: bound to the inode, rewritten on next append).
    journal_format: int = FORMAT


class JournalFile:
    """``<snapshot>.journal``: read, check, decode, append to, rewrite and set it aside.

    :param leftover: whether a binding names the newest backup (``.bak``): a journal
        naming it is the harmless leftover of an interrupted full write.
    """

    def __init__(self, snapshot: Path, leftover: Callable[[Binding], bool]) -> None:
        self.snapshot = snapshot
        self.leftover = leftover
        self.path: Path = Path(f"{snapshot}.journal")
        #: A journal file this store read (or wrote) whole and found good.
        self.good: JournalSig | None = None
        #: Journal files already reported as naming another snapshot (log once each).
        self._reported: set[JournalSig] = set()

    def lstat(self, location: str) -> os.stat_result | None:
        """The journal file's lstat (a symlink's own), None when there is none."""
        return _fileio.lstat(self.path, location)

    def damaged(self, lineno: int, reason: str) -> StateCorruptedError:
        """The error naming a damaged line of the journal."""
        where = str(self.path)
        return StateCorruptedError(
            f"{where} line {lineno}: {reason} (the snapshot {self.snapshot} is intact; move "
            "the journal aside to load it without the changes appended since)",
            location=where, tried=(where,))

    def read(self, start: int = 0, lines: int = 0) -> JournalRead | None:
        """Read and check the journal; None when there is none.

        ``start``: read only the bytes from this offset, the end of ``lines`` good lines
        read before (no header check then).

        :raises StateCorruptedError: the header line is damaged (a damaged record line is
            raised when the journal is applied: a stale journal is never applied).
        :raises ConfigurationError: the journal path is a symlink.
        """
        try:
            data, st, after = _fileio.read_bytes(self.path, start)
        except FileNotFoundError:
            return None
        stable = (start + len(data) == st.st_size
                  and journal_sig(after) == journal_sig(st))
        return self._scan(data, st, stable, offset=start, lineno=lines)

    def _scan(self, data: bytes, st: os.stat_result, stable: bool, *, offset: int = 0,
              lineno: int = 0) -> JournalRead:
        """Split journal bytes into the header's snapshot, the good records, and their end.

        ``data`` starts at ``offset`` in the file, after ``lineno`` lines (0: at the
        header). A bad or incomplete *last* line is a torn append and ends the good
        part; a bad line followed by anything is damage (raised at once in the header,
        which names the snapshot; recorded for a record line, so that a stale journal is
        skipped).
        """
        snapshot: Binding | None = None
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
                damage = self.damaged(lineno, "checksum mismatch, and more data follows")
                if lineno == 1:
                    raise damage
                return JournalRead(st, snapshot, records, offset + pos, good, stable, damage)
            if lineno == 1:
                snapshot = self._parse_header(payload)
            else:
                records.append((lineno, payload))
            pos, good = nl + 1, lineno
        return JournalRead(st, snapshot, records, offset + pos, good, stable, None)

    def _parse_header(self, payload: bytes) -> Binding:
        """The snapshot a header line names: format 2 ``{"crc32": "<8 hex>", "size": n}``,
        or format 1 ``[st_ino, st_mtime_ns, st_size]`` (earlier builds)."""
        try:
            head = json.loads(payload)
            fmt, snap = head["cascadeui_journal"], head["snapshot"]
        except (ValueError, TypeError, KeyError, RecursionError):
            raise self.damaged(1, "not a cascadeui journal header") from None
        if fmt == 1:
            if not (isinstance(snap, list) and len(snap) == 3
                    and all(type(x) is int for x in snap)):
                raise self.damaged(1, "the header names no snapshot")
            return Binding(1, inode=(snap[0], snap[1], snap[2]))
        if fmt != FORMAT:
            raise self.damaged(1, f"unsupported journal format {fmt!r}")
        crc = snap.get("crc32") if isinstance(snap, dict) else None
        size = snap.get("size") if isinstance(snap, dict) else None
        if not (isinstance(crc, str) and len(crc) == 8 and type(size) is int and size >= 0):
            raise self.damaged(1, "the header names no snapshot")
        try:
            return Binding(2, digest=(int(crc, 16), size))
        except ValueError:
            raise self.damaged(1, "the header names no snapshot") from None

    def decode(self, journal: JournalRead, serializer: StateSerializer
               ) -> list[list[list[Any]]]:
        """The decoded ops of every record of ``journal``, in order.

        :raises StateCorruptedError: a record does not decode, or a line before the end
            is damaged (named by its line).
        """
        if journal.damage is not None:
            raise journal.damage
        return _journal.decode_records(serializer, journal.records, location=str(self.path),
                                       name=str, fail=self.damaged)[0]

    def apply(self, state: dict[str, Any], journal: JournalRead,
              serializer: StateSerializer) -> None:
        """Apply every record of ``journal`` to ``state`` in order.

        :raises StateCorruptedError: as :meth:`decode`, or a record does not fit.
        """
        ops = self.decode(journal, serializer)
        _journal.apply_records(state, zip([n for n, _ in journal.records], ops, strict=True),
                               location=str(self.path), name=str, fail=self.damaged)

    def good_part(self, end: int, location: str) -> bytes:
        """The first ``end`` bytes of the journal: its header and good records."""
        try:
            fd = _fileio.open_regular(self.path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise StorageUnavailableError(f"cannot read {self.path}: it vanished",
                                          location=location) from exc
        with os.fdopen(fd, "rb") as fh:
            return fh.read(end)

    def rewrite(self, data: bytes) -> None:
        """Put ``data`` at the journal path whole (temp file, fsync, replace, dir fsync)."""
        _fileio.put(self.path, data, like=self.snapshot, tag="journal")

    def append(self, inode: int, end: int, data: bytes, location: str) -> bool:
        """O_APPEND ``data`` and fsync; False if the file is not inode ``inode`` with
        ``end`` bytes (changed outside the lock: the caller re-reads).

        On a failed write or fsync the journal is rewritten without ``data`` (best
        effort), so an unacknowledged record never stays visible.
        """
        fd = _fileio.open_regular(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            st = os.fstat(fd)
            if (st.st_ino, st.st_size) != (inode, end):
                return False
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    self.rewrite(self.good_part(end, location))
                raise
        finally:
            os.close(fd)
        return True

    # -- a journal that names another snapshot ---------------------------------------

    def unbound_problem(self, journal: JournalRead) -> str | None:
        """What is wrong with a journal that does not name the snapshot; None when it is
        the harmless leftover of an interrupted full write (it names ``.bak``)."""
        binding = journal.snapshot
        if binding is None or self.leftover(binding):
            return None
        return (f"{self.path} does not belong to the snapshot {self.snapshot}: its header "
                f"names {binding.describe()}, so its {len(journal.records)} record(s) are "
                "not applied (was the snapshot replaced, restored or copied without this "
                f"journal?); the next write moves it aside to {self.path}.orphan-<timestamp>")

    def report_unbound(self, journal: JournalRead) -> None:
        """Log, once per journal file, that it names another snapshot.

        The leftover of a full write interrupted between replacing the snapshot and
        deleting the journal: INFO (its records are in the new snapshot). Any other one
        (a snapshot copied, restored or replaced without its journal) holds records no
        load applies: WARNING, and the next write moves it aside instead of deleting it.
        """
        sig = journal_sig(journal.stat)
        if sig in self._reported:
            return
        self._reported.add(sig)
        problem = self.unbound_problem(journal)
        if problem is None:
            log.info("%s is the journal of the previous snapshot (a full write was "
                     "interrupted before deleting it); its records are in %s, ignoring it",
                     self.path, self.snapshot)
        else:
            log.warning("%s", problem)

    def set_aside_unbound(self, journal: JournalRead | None = None) -> None:
        """Before a write drops a journal that names another snapshot: keep its records.

        Moved to ``<path>.journal.orphan-<timestamp>`` (WARNING), unless it is the
        leftover of an interrupted full write. Lock held.
        """
        try:
            if journal is None:
                journal = self.read()
        except StateCorruptedError:
            return  # a damaged header names nothing to keep
        if journal is None or journal.snapshot is None:
            return
        if self.unbound_problem(journal) is None:
            return
        aside = _fileio.set_aside(self.path, "orphan")
        log.warning("%s does not belong to the snapshot %s (its header names %s); moved "
                    "its %d record(s) aside to %s before writing", self.path,
                    self.snapshot, journal.snapshot.describe(), len(journal.records), aside)

    def keep_before_write(self, main_aside: Path | None, serializer: StateSerializer,
                          read_main: ReadMain) -> None:
        """Before a full write drops the journal: never delete records that did not load.

        A journal read (or written) whole is fine; any other journal that names the
        current snapshot is loaded once, and moved to ``<path>.journal.corrupt-<timestamp>``
        if that fails. The journal of a snapshot set aside as unreadable follows it
        (``<aside>.journal``). Lock held.
        """
        try:
            jst = os.lstat(self.path)
        except FileNotFoundError:
            return
        if main_aside is not None:
            os.replace(self.path, f"{main_aside}.journal")
            return
        if self.good == journal_sig(jst):
            return
        try:
            state, st, digest = read_main()
        except FileNotFoundError:
            self.set_aside_unbound()  # it names no snapshot that exists
            return
        try:
            journal = self.read()
            if journal is None or journal.snapshot is None:
                return
            if journal.bound_to(snapshot_id(st), digest):
                self.apply(state, journal, serializer)
            else:
                self.set_aside_unbound(journal)
        except StateCorruptedError as exc:
            aside = _fileio.set_aside(self.path)
            log.warning("%s; moved it aside to %s before saving", exc, aside)

    # -- what readers ask (cascadeui verify, inspect) --------------------------------

    def checks(self, state: dict[str, Any], st: os.stat_result, digest: Digest,
               serializer: StateSerializer, moved: Callable[[], bool]
               ) -> tuple[list[Check], bool]:
        """Whether the journal belongs to the snapshot ``state`` (read with ``st``, of
        ``digest``) and applies to it (it is applied in place); False: it does not.
        ``moved()``: the snapshot was replaced since it was read (checked once the
        journal is read; the caller reads both again)."""
        try:
            journal = self.read()
            if moved():
                return [Check("change journal applies", False, "moved")], True
            problem = None
            if journal is None or journal.snapshot is None:
                detail = "no journal"
            elif not journal.bound_to(snapshot_id(st), digest):
                problem = self.unbound_problem(journal)
                detail = "it names another snapshot: not applied"
            else:
                self.apply(state, journal, serializer)
                detail = f"{len(journal.records)} record(s) after the snapshot"
        except PersistenceError as exc:
            return [Check("change journal applies", False, str(exc))], False
        return [Check("change journal belongs to the snapshot", problem is None,
                      problem or ""), Check("change journal applies", True, detail)], True

    def mismatch(self) -> str | None:
        """Why the journal does not belong to the snapshot now at its path; None when it
        does, when either file is missing, or when it is a harmless leftover.

        :raises StateCorruptedError: the journal's header is damaged.
        """
        try:
            data, st, _ = _fileio.read_bytes(self.snapshot)
        except FileNotFoundError:
            return None
        journal = self.read()
        if journal is None or journal.snapshot is None or journal.bound_to(
                snapshot_id(st), _fileio.digest(data)):
            return None
        return self.unbound_problem(journal)

    # -- catching up and appending, under the write lock -----------------------------

    def catch_up(self, extent: Extent, main: os.stat_result, serializer: StateSerializer
                 ) -> tuple[list[list[list[Any]]], Extent] | None:
        """The records past ``extent`` (decoded) and the extent at the journal's end.

        With no journal bound to the snapshot at ``extent`` (none, stale, torn header),
        every record of a journal now bound to it came after: it is read from the start.
        None when ``extent`` cannot be placed (the journal replaced or cut short, or
        written outside the lock while read).

        :raises StateCorruptedError: a line since ``extent`` is damaged or does not decode.
        """
        start = extent.journal_end
        journal = self.read(start, extent.journal_lines)
        if journal is None:
            if start:
                return None
            return [], Extent(version_of(main, None), extent.snapshot,
                              extent.snapshot_bytes, extent.digest, None, 0, 0)
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
        if start or journal.bound_to(extent.snapshot, extent.digest):
            records = self.decode(journal, serializer)
            end, lines = journal.end, journal.lines
            if not start or self.good == extent.journal:
                self.good = journal_sig(journal.stat)  # every record decodes
        elif journal.snapshot is not None:
            self.report_unbound(journal)
        return records, Extent(version_of(main, journal.stat), extent.snapshot,
                               extent.snapshot_bytes, extent.digest,
                               journal_sig(journal.stat), end, lines, fmt)

    def commit(self, extent: Extent, record: bytes, location: str) -> Extent | None:
        """Append ``record`` (one line) to the journal bound to ``extent.snapshot``,
        durably; the extent after it. Lock held, the commit confirmed.

        A new journal (none for this snapshot, a stale one set aside), one of format 1,
        or one with a torn tail is rewritten whole with the record; else the record is
        appended. None when the file is not the one ``extent`` saw.
        """
        head: bytes | None = None
        try:
            if extent.journal_end == 0:  # no journal for this snapshot (none, stale, torn)
                if extent.journal is not None:
                    self.set_aside_unbound()
                head = header(extent.digest)
            elif extent.journal_format != FORMAT:
                # Written by an earlier build (bound to the inode): the same records under
                # a header naming the snapshot's content, so a copy keeps them from now on.
                good = self.good_part(extent.journal_end, location)
                head = header(extent.digest) + good[good.index(b"\n") + 1:]
            elif extent.journal is not None and extent.journal[1] > extent.journal_end:
                head = self.good_part(extent.journal_end, location)  # without a torn tail
            if head is not None:
                self.rewrite(head + record)
                end = len(head) + len(record)
            elif extent.journal is None or not self.append(
                    extent.journal[0], extent.journal_end, record, location):
                return None  # changed outside the lock: let the caller re-read
            else:
                end = extent.journal_end + len(record)
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot append to {self.path}: {exc.strerror or exc}; the stored "
                "state is intact", location=location) from exc
        main, journal = os.lstat(self.snapshot), os.lstat(self.path)
        self.good = journal_sig(journal)
        lines = 2 if extent.journal_end == 0 else extent.journal_lines + 1
        return Extent(version_of(main, journal), extent.snapshot, extent.snapshot_bytes,
                      extent.digest, journal_sig(journal), end, lines)
