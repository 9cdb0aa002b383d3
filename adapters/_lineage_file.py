"""``<path>.lineage`` of the JSON file adapter: which state this is, and how far it got.

One line, ``<lineage id> <generation>``. The id (16 hex digits) is new whenever a whole
write starts over: no lineage yet, the state file deleted, or a store that found its
medium lost. The generation counts whole writes within one lineage, so an older copy of
the files put back (``cp -p``, rsync, a volume snapshot) shows as a generation that went
back (issue 21). A new id is written durably *before* the snapshot it names; the
generation is counted *after* the snapshot is in place, without fsync: it informs running
stores, and no running store outlives a power cut.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from cascadeui.errors import PersistenceError, StorageUnavailableError

from . import _fileio

__all__ = ["Lineage", "LineageFile"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.file")

#: (version, lineage id, generation) a store saw: id '' when there was no lineage file,
#: generation 0 when it named none (an earlier build's).
Lineage = tuple[int, str, int]

_ID = re.compile(r"[0-9a-f]{1,64}")
_GENERATION = re.compile(r"[0-9]{1,18}")


class LineageFile:
    """``<snapshot>.lineage``, read and written under the store's lock."""

    def __init__(self, snapshot: Path) -> None:
        self.snapshot = snapshot
        self.path: Path = Path(f"{snapshot}.lineage")

    def read(self) -> tuple[str, int]:
        """The id and generation; ('', 0) when there is none (or it is unreadable or
        torn), generation 0 when it names none (an earlier build's)."""
        try:
            data, _, _ = _fileio.read_bytes(self.path)
        except (OSError, PersistenceError):
            return "", 0
        words = data.decode("ascii", "replace").split()
        if not words or not _ID.fullmatch(words[0]):
            return "", 0
        generation = words[1] if len(words) > 1 else ""
        return words[0], int(generation) if _GENERATION.fullmatch(generation) else 0

    def start(self, location: str) -> str:
        """Write a new lineage id (generation 1) durably; the id.

        :raises StorageUnavailableError: it cannot be written (the state is intact).
        """
        lineage = secrets.token_hex(8)
        try:
            _fileio.put(self.path, f"{lineage} 1\n".encode("ascii"), like=self.snapshot,
                        tag="lineage")
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot write {self.path}: {exc.strerror or exc}; the stored state "
                "is intact", location=location) from exc
        return lineage

    def count(self, lineage: str, generation: int) -> None:
        """Record ``generation`` of the snapshot just written (commit lock held); a
        failure only weakens the rollback check (logged)."""
        try:
            _fileio.put(self.path, f"{lineage} {generation}\n".encode("ascii"),
                        like=self.snapshot, tag="lineage", durable=False)
        except OSError as exc:
            log.warning("could not record generation %d in %s: %s", generation, self.path,
                        exc.strerror or exc)

    def problem(self, seen: Lineage, now: Lineage) -> str | None:
        """Why the state at ``now`` is not a descendant of the one at ``seen``; None
        when it is (or when nothing can be told)."""
        if seen[1] and now[1] != seen[1]:
            return (f"{self.snapshot} holds another lineage ({now[1] or 'none'}, this store "
                    f"saw {seen[1]}): it was deleted, then written again by another process")
        if now[2] < seen[2]:
            return (f"{self.snapshot} went back from generation {seen[2]} to generation "
                    f"{now[2]} of its lineage: an older copy of the state was put back "
                    "(restored from a copy, an rsync or a volume snapshot)")
        return None
