"""The JSON file adapter: atomic replace, fsync, ``.bak`` rotation and a ``filelock`` lock.

A save never overwrites data in place. It writes the new document to a private temp file
in the same directory, fsyncs it, ``os.replace``-s it over the target and fsyncs the
directory; just before, the current file is hard-linked to ``<path>.bak`` (older
generations shift to ``.bak.1``, ``.bak.2`` ...). A crash at any moment therefore leaves
either the old or the new document under ``<path>``, and the previous one in ``.bak``.

Symlinks: the store never reads or writes through a link at ``<path>``, a backup or the
lock (``O_NOFOLLOW``): it raises :class:`~cascadeui.errors.ConfigurationError` naming the
real path to pass instead, so a planted link cannot redirect a write. (The path is not
resolved at construction: constructors do no I/O, because backends are built on the
event loop.) Links in the directory part of the path are followed as usual. New files
get mode 0600; an existing file keeps its permission bits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from cascadeui.errors import (
    ConfigurationError,
    LockTimeoutError,
    PersistenceError,
    StateCorruptedError,
    StorageUnavailableError,
)
from cascadeui.serializer import StateSerializer

from .base import BaseStore

__all__ = ["FileStore"]

log = logging.getLogger("cascadeui.adapters.file")

#: (inode, mtime_ns, ctime_ns, size): every save makes a new inode while the old one still
#: exists, so the signature of the main file changes on every commit.
_Signature = tuple[int, int, int, int]


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


class FileStore(BaseStore):
    """State in one JSON file, safe across threads and processes.

    :param path: the JSON file (not a symlink); missing directories are created on save.
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
        self._swept = False

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
        first_error: PersistenceError | None = None
        for candidate in [self.path, *self.backup_paths()]:
            try:
                state, sig = self._read(candidate)
            except FileNotFoundError:
                continue
            except (StateCorruptedError, ConfigurationError) as exc:
                if candidate == self.path and isinstance(exc, ConfigurationError):
                    raise  # a symlink at <path> itself: the caller must fix the path
                tried.append(str(candidate))
                first_error = first_error or exc
                continue
            if candidate == self.path:
                self._known_good = sig
            elif tried:
                log.warning("%s is unreadable (%s); loaded the backup %s instead",
                            self.path, first_error.args[0] if first_error else "", candidate)
            else:
                log.warning("%s is missing; loaded the backup %s instead", self.path, candidate)
            return state
        if tried:
            raise StateCorruptedError(
                f"no readable state in {', '.join(tried)}: {first_error}",
                location=self.location, tried=tuple(tried)) from first_error
        return {}

    def _read(self, path: Path) -> tuple[dict[str, Any], _Signature]:
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_BINARY)
        except FileNotFoundError:
            raise
        except OSError as exc:
            self._refuse_symlink(path, exc)
            raise StorageUnavailableError(f"cannot read {path}: {exc.strerror or exc}",
                                          location=str(path)) from exc
        try:
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except OSError as exc:
            raise StorageUnavailableError(f"cannot read {path}: {exc.strerror or exc}",
                                          location=str(path)) from exc
        try:
            state = self.serializer.deserialize(data)
        except StateCorruptedError as exc:
            raise StateCorruptedError(f"{path}: {exc}", location=str(path),
                                      tried=(str(path),)) from exc
        return state, _signature(st)

    def version(self) -> int:
        """An opaque number that changes on every commit (0 when no file); one ``stat``.

        Built from the main file's (inode, mtime_ns, ctime_ns, size) signature: every
        save puts a new inode under ``<path>`` while the previous one is still alive (as
        ``.bak`` or as the replaced file). Compare with ``==``; it is not ordered.
        """
        self._check_open()
        try:
            sig = _signature(os.lstat(self.path))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageUnavailableError(f"cannot stat {self.path}: {exc.strerror or exc}",
                                          location=self.location) from exc
        return hash(sig) or 1

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

    def load_versioned(self) -> tuple[dict[str, Any], int]:
        """:meth:`load` and the :meth:`version` of what was read, consistent (under the lock)."""
        self._check_open()
        with self._locked():
            return self._load(), self.version()

    def save_if_version(self, state: Mapping[str, Any], expected: int, *,
                        encoded: str | None = None) -> int | None:
        """Compare-and-set save: see :meth:`~cascadeui.adapters.VersionedStore.save_if_version`."""
        self._check_open()
        data = (self.serializer.serialize(state) if encoded is None else encoded).encode()
        with self._locked():
            if self.version() != expected:
                return None
            self._write(data)
            return self.version()

    def _refuse_symlink(self, path: Path, exc: OSError | None = None) -> None:
        if path.is_symlink():
            raise ConfigurationError(
                f"{path} is a symlink; cascadeui does not read or write through links "
                f"(pass the real path: {os.path.realpath(path)})",
                location=str(path)) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            # filelock polls every 50 ms by default: under contention that idles the
            # lock most of the time (4 writers: 3x fewer commits per second).
            self._lock.acquire(poll_interval=0.005)
        except FileLockTimeout:
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

    def _write(self, data: bytes) -> None:
        """Write the new document durably, then rotate backups and replace the main file.

        The lock is held. Backups rotate only once the new bytes are fsynced in the temp
        file, so a failed write (disk full, EIO, read-only) leaves the main file and every
        backup generation as they were (issue 7, tests/test_faults.py).
        """
        if not self._swept:
            self._sweep_stale_temps()
        try:
            self._replace(data, before=self._make_room)
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot save {self.path}: {exc.strerror or exc}; the previous file is intact",
                location=self.location) from exc

    def _sweep_stale_temps(self) -> None:
        """Delete temp files of writers killed mid-save; once per store, lock held.

        Every temp file is written under the lock, so while we hold it no live writer
        owns one. Without this, each SIGKILL during a save leaves a state-sized file
        (144 after 200 kills in scripts/crash_campaign.py, issue 7).
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
        self._set_aside_if_corrupt()
        self._rotate()

    def _set_aside_if_corrupt(self) -> None:
        """Never rotate unreadable bytes over the last good backup: move them aside first."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        self._refuse_symlink(self.path)
        if self._known_good == _signature(st):
            return
        try:
            self._read(self.path)
        except StateCorruptedError:
            aside = self._corrupt_name()
            os.replace(self.path, aside)
            log.warning("%s was unreadable; moved it aside to %s before saving", self.path,
                        aside)

    def _corrupt_name(self) -> Path:
        """``<path>.corrupt-<UTC timestamp>``, unique (the lock is held while we look)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = Path(f"{self.path}.corrupt-{stamp}Z")
        n = 1
        while os.path.lexists(aside):
            aside = Path(f"{self.path}.corrupt-{stamp}Z-{n}")
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

    def _replace(self, data: bytes, before: Callable[[], None] | None = None) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")  # mode 0600, O_EXCL: no symlink games
        try:
            with os.fdopen(fd, "wb") as fh:
                self._keep_mode(fh.fileno())
                fh.write(data)
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

    def _keep_mode(self, fd: int) -> None:
        """Give the new file the permission bits of the one it replaces (0644, ...)."""
        try:
            mode = os.lstat(self.path).st_mode & 0o7777
        except FileNotFoundError:
            return
        if mode != 0o600 and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)

    def _fsync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
