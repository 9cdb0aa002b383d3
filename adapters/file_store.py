"""The JSON file adapter: atomic replace, fsync, ``.bak`` rotation and a ``filelock`` lock.

A save never overwrites data in place. It writes the new document to a private temp file
in the same directory, fsyncs it, ``os.replace``-s it over the target and fsyncs the
directory; just before, the current file is hard-linked to ``<path>.bak`` (older
generations shift to ``.bak.1``, ``.bak.2`` ...). A crash at any moment therefore leaves
either the old or the new document under ``<path>``, and the previous one in ``.bak``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from cascadeui.errors import (
    LockTimeoutError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from .base import BaseStore

__all__ = ["FileStore"]

log = logging.getLogger("cascadeui.adapters.file")

_Signature = tuple[int, int, int]  # (inode, mtime_ns, size) of a file we know is valid


class FileStore(BaseStore):
    """State in one JSON file, safe across threads and processes.

    :param path: the JSON file; its directory must exist.
    :param backups: how many previous generations to keep (``.bak``, ``.bak.1``, ...).
    :param lock_timeout: seconds to wait for ``<path>.lock`` before
        :class:`~cascadeui.errors.LockTimeoutError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, backups: int = 1,
                 lock_timeout: float = 10.0,
                 serializer: StateSerializer | None = None) -> None:
        super().__init__(serializer=serializer)
        if backups < 0:
            raise ValueError("backups must be >= 0")
        self.path = Path(os.fspath(path)).absolute()
        self.location = str(self.path)
        self.backups = backups
        self.lock_timeout = lock_timeout
        self.lock_path = Path(f"{self.path}.lock")
        self._lock = FileLock(self.lock_path, timeout=lock_timeout, mode=0o600)
        self._known_good: _Signature | None = None

    # -- paths -------------------------------------------------------------------------

    def backup_paths(self) -> list[Path]:
        """The backup generations, newest first (whether or not they exist)."""
        return [Path(f"{self.path}.bak" + (f".{i}" if i else "")) for i in range(self.backups)]

    # -- reading -----------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored state; fall back to the newest valid backup, with a warning.

        :raises StateCorruptedError: no copy (main file or backup) decodes.
        :raises StorageUnavailableError: the file cannot be read at all.
        """
        self._check_open()
        return self._load()

    def _load(self) -> dict[str, Any]:
        tried: list[str] = []
        first_error: StateCorruptedError | None = None
        for candidate in [self.path, *self.backup_paths()]:
            try:
                state, sig = self._read(candidate)
            except FileNotFoundError:
                continue
            except StateCorruptedError as exc:
                tried.append(str(candidate))
                first_error = first_error or exc
                continue
            if candidate == self.path:
                self._known_good = sig
            elif tried:
                log.warning("%s is unreadable (%s); loaded the backup %s instead",
                            self.path, first_error, candidate)
            else:
                log.warning("%s is missing; loaded the backup %s instead", self.path, candidate)
            return state
        if tried:
            raise StateCorruptedError(
                f"no readable state in {', '.join(tried)}: {first_error}",
                location=self.location, tried=tuple(tried))
        return {}

    def _read(self, path: Path) -> tuple[dict[str, Any], _Signature]:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageUnavailableError(f"cannot read {path}: {exc.strerror or exc}",
                                          location=str(path)) from exc
        try:
            state = self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{path}: {exc}", location=str(path),
                                      tried=(str(path),)) from exc
        return state, (st.st_ino, st.st_mtime_ns, st.st_size)

    # -- writing -----------------------------------------------------------------------

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the stored state atomically, rotating the previous file to ``.bak``.

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
        body raises, nothing is written.
        """
        self._check_open()
        with self._locked():
            state = self._load()
            yield state
            self._write(self.serializer.serialize(state).encode("utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except FileLockTimeout:
            raise LockTimeoutError(
                f"could not lock {self.lock_path} within {self.lock_timeout:g}s "
                "(another process is writing, or a writer hangs)",
                lock=str(self.lock_path), timeout=self.lock_timeout,
                location=self.location) from None
        except OSError as exc:
            raise StorageUnavailableError(f"cannot create lock {self.lock_path}: {exc}",
                                          location=self.location) from exc
        try:
            yield
        finally:
            self._lock.release()

    def _write(self, data: bytes) -> None:
        """Rotate backups and atomically replace the main file (the lock is held)."""
        try:
            self._set_aside_if_corrupt()
            self._rotate()
            self._replace(data)
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot save {self.path}: {exc.strerror or exc}; the previous file is intact",
                location=self.location) from exc

    def _set_aside_if_corrupt(self) -> None:
        """Never rotate unreadable bytes over the last good backup: move them aside first."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if self._known_good == (st.st_ino, st.st_mtime_ns, st.st_size):
            return
        try:
            self._read(self.path)
        except StateCorruptedError:
            aside = Path(f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            os.replace(self.path, aside)
            log.warning("%s was unreadable; moved it aside to %s", self.path, aside)

    def _rotate(self) -> None:
        gens = self.backup_paths()
        if not gens or not self.path.exists():
            return
        for older, newer in zip(reversed(gens[1:]), reversed(gens[:-1])):
            if newer.exists():
                os.replace(newer, older)
        # Hard-link the current file to .bak (via a temp name, so .bak is always whole);
        # the main file stays in place, so a crash never leaves the target missing.
        tmp = Path(f"{gens[0]}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(self.path, tmp)
        except OSError:  # a filesystem without hard links: copy instead
            self._copy(self.path, tmp)
        os.replace(tmp, gens[0])

    def _copy(self, src: Path, dst: Path) -> None:
        with open(src, "rb") as fin:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fout:
                fout.write(fin.read())
                fout.flush()
                os.fsync(fout.fileno())

    def _replace(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")  # mode 0600, O_EXCL: no symlink games
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()
        st = os.stat(self.path)
        self._known_good = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _fsync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
