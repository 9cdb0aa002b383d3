"""Backup generations of the JSON file adapter: ``<path>.bak``, ``.bak.1``, ``.bak.2`` ...

Every full write hard-links the current snapshot to ``.bak`` first (older generations
shift by one), so ``.bak`` is the snapshot before the last *full* write, without the
journal appended to it. When the main file is missing or unreadable, a load falls back to
the newest generation that decodes (never applying a journal). Files that did not load
are set aside as ``<file>.<kind>-<UTC timestamp>``, never deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cascadeui.errors import ConfigurationError, PersistenceError, StateCorruptedError
from cascadeui.serializer import StateSerializer

from . import _fileio
from ._journal_file import Binding, JournalFile, ReadMain, Signature, signature, snapshot_id
from .base import BackupInfo, Check

__all__ = ["Backups"]

log: logging.Logger = logging.getLogger("cascadeui.adapters.file")


class Backups:
    """The ``.bak`` generations next to ``path``.

    :param count: how many to keep; None keeps as many as already exist, at least one
        (what tools use, so a script never prunes a bot's deeper backup history).
    """

    def __init__(self, path: Path, count: int | None) -> None:
        if count is not None and count < 0:
            raise ValueError("backups must be >= 0")
        self.main = path
        self.count = count

    def paths(self) -> list[Path]:
        """The backup generations, newest first (whether or not they exist)."""
        count = self.count
        if count is None:
            count = max([1, *(index + 1 for index, _ in self.existing())])
        return [self.path(i) for i in range(count)]

    def path(self, index: int) -> Path:
        """Where generation ``index`` lives (0: ``.bak``)."""
        return Path(f"{self.main}.bak" + (f".{index}" if index else ""))

    def existing(self) -> list[tuple[int, Path]]:
        """(index, path) of every ``<name>.bak[.N]`` next to the file, newest first."""
        pattern = re.compile(re.escape(self.main.name) + r"\.bak(?:\.([1-9]\d*))?")
        try:
            names = os.listdir(self.main.parent)
        except OSError:
            return []
        found = []
        for name in names:
            m = pattern.fullmatch(name)
            if m:
                found.append((int(m.group(1) or 0), self.main.parent / name))
        return sorted(found)

    def infos(self) -> list[BackupInfo]:
        """The existing generations, newest first (``lstat``: a link is listed as what
        it is, never followed)."""
        found = []
        for index, path in self.existing():
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found.append(BackupInfo(index, str(path), st.st_size,
                                    datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return found

    def checks(self, read: Callable[[Path], object]) -> list[Check]:
        """Whether each existing generation decodes (``read`` decodes one)."""
        found = []
        for info in self.infos():
            try:
                read(Path(info.path))
                found.append(Check(f"backup {info.index} decodes", True, info.path))
            except (PersistenceError, OSError) as exc:  # OSError: it vanished meanwhile
                found.append(Check(f"backup {info.index} decodes", False, str(exc)))
        return found

    def newest_holds(self, binding: Binding) -> bool:
        """True if ``binding`` names ``.bak``: the snapshot the last full write replaced
        (a journal naming it is the harmless leftover of an interrupted write)."""
        gens = self.paths()
        if not gens:
            return False
        try:
            if binding.format == 1:
                return snapshot_id(os.lstat(gens[0])) == binding.inode
            data, _, _ = _fileio.read_bytes(gens[0])
        except (OSError, PersistenceError):
            return False
        return _fileio.digest(data) == binding.digest

    def set_aside_unreadable(self, known_good: Signature | None, read_main: ReadMain,
                             journal: JournalFile, serializer: StateSerializer) -> None:
        """Before a full write: move an unreadable main file aside (never rotate it over
        the last good backup), and keep journal records that did not load (lock held).

        :param known_good: the signature of a main file this store read or wrote whole.
        """
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(journal.path).st_mode):
                _fileio.refuse_symlink(journal.path)
        aside: Path | None = None
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.main)
            _fileio.refuse_symlink(self.main)
            if known_good != signature(st):
                try:
                    read_main()
                except StateCorruptedError:
                    aside = _fileio.set_aside(self.main)
                    log.warning("%s was unreadable; moved it aside to %s before saving",
                                self.main, aside)
        journal.keep_before_write(aside, serializer, read_main)

    def rotate(self) -> None:
        """Hard-link the main file to ``.bak``, shifting older generations (lock held)."""
        gens = self.paths()
        if not gens or not self.main.exists():
            return
        with contextlib.suppress(OSError):
            if os.path.samefile(self.main, gens[0]):
                # .bak already is this very file (a save failed after rotating): rotating
                # again would shift a duplicate, and renaming a link onto its own inode
                # does nothing, which would leave the temp link behind.
                return
        # Via a temp name, so .bak is always whole; the main file stays in place, so a
        # crash never leaves the target missing. The link comes first: if it fails
        # (ENOSPC, EROFS) no generation has shifted yet.
        tmp = Path(f"{gens[0]}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            try:
                os.link(self.main, tmp, follow_symlinks=False)
            except OSError:  # a filesystem without hard links: copy instead
                _fileio.copy(self.main, tmp)
            for older, newer in zip(reversed(gens[1:]), reversed(gens[:-1]), strict=True):
                if newer.exists():
                    os.replace(newer, older)
            os.replace(tmp, gens[0])
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def fallback(self, read: Callable[[Path], dict[str, Any]], tried: list[str],
                 first_error: PersistenceError | None, location: str
                 ) -> tuple[dict[str, Any], str | None]:
        """The newest backup that ``read`` decodes, and its path; ``({}, None)`` when
        there is none and nothing was unreadable.

        :raises StateCorruptedError: nothing in ``tried`` nor any backup decodes.
        """
        for candidate in self.paths():
            try:
                state = read(candidate)
            except FileNotFoundError:
                continue
            except (StateCorruptedError, ConfigurationError) as exc:
                tried.append(str(candidate))
                first_error = first_error or exc
                continue
            if tried:
                log.warning("%s is unreadable (%s); loaded the backup %s instead", self.main,
                            first_error.args[0] if first_error else "", candidate)
            else:
                log.warning("%s is missing; loaded the backup %s instead", self.main,
                            candidate)
            return state, str(candidate)
        if tried:
            raise StateCorruptedError(
                f"no readable state in {', '.join(tried)}: {first_error}",
                location=location, tried=tuple(tried)) from first_error
        return {}, None

    def sweep_temps(self) -> None:
        """Delete temp files of writers killed mid-save (lock held).

        Every temp file (snapshot ``.<name>.*.tmp``, journal ``.<name>.journal.*.tmp``,
        backup link ``<name>.bak.<pid>.tmp``) is written under the lock, so while we
        hold it no live writer owns one. Without this, each SIGKILL during a save leaves
        a state-sized file (144 after 200 kills in scripts/crash_campaign.py, issue 7).
        """
        main, bak = f".{self.main.name}.", f"{self.main.name}.bak"
        try:
            names = os.listdir(self.main.parent)
        except OSError:
            return
        for name in names:
            if name.endswith(".tmp") and (name.startswith(main) or name.startswith(bak)):
                with contextlib.suppress(OSError):
                    os.unlink(self.main.parent / name)

