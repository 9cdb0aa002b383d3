"""Lock files that hold: ``flock`` on ``<path>``, checked to still be the file at the path.

``flock`` locks an *inode*. If someone unlinks or replaces the lock file while a writer
holds it (a cleanup script, ``rm *.lock``, an editor), the next writer opens a new file at
the path, locks that inode at once, and two writers are inside the critical section
together (a counter ended at 299 of 301 in issue 12's test). So after locking,
:class:`PathLock` checks that the locked descriptor is still the file at the path (same
device and inode) and otherwise drops it and tries again; and a holder checks
:meth:`PathLock.held` right before it commits, so a holder whose file was pulled from
under it writes nothing (a typed error) instead of racing the new holder.

That check alone leaves a window: a holder checks, then (microseconds later) replaces
the state, while a new holder that locked the new file in between reads the old state
and later writes over the commit. So the last check and the commit it guards run under
a second, short lock, :meth:`PathLock.committing`, and a new holder confirms its file
under the same lock before it reads anything: it either sees the old holder's commit
whole or the old holder sees the file gone and writes nothing. That second lock is a
file the library owns too, ``<lock>.commit`` (earlier builds took it on the state's
*directory*, which anyone who can open the directory can hold forever: ``flock DIR
script``, issue 21), checked to be the file at its path the same way.

Every wait is bounded by the lock's timeout and ends in :class:`LockUnavailableError`;
nothing here blocks in the kernel. The lock files are never deleted by us (deleting
them is exactly what opens that race); they are created with mode 0600 and never
through a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cascadeui.errors import LockTimeoutError, StorageUnavailableError

from ._fileio import refuse_symlink

__all__ = ["LockUnavailableError", "PathLock", "StoreLock"]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: filelock's msvcrt lock (an open file
    fcntl = None  # type: ignore[assignment]  # cannot be unlinked there: no such race)


class LockUnavailableError(TimeoutError):
    """The lock was not had within the timeout."""


class PathLock:
    """An exclusive, reentrant (per thread) lock on the file at ``path``.

    :param path: the lock file; created if missing (mode 0600), never followed if a link.
        Its commit lock is ``<path>.commit``.
    :param timeout: seconds any wait lasts before :class:`LockUnavailableError`.
    :param poll: seconds between attempts while another process holds it.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float,
                 poll: float = 0.005) -> None:
        self.path: Path = Path(path)
        self.commit_path: Path = Path(f"{self.path}.commit")
        self.timeout = timeout
        self.poll = poll
        self._mutex = threading.RLock()  # threads of this process queue here first
        self._fd: int | None = None
        self._depth = 0
        self._fallback: Any = None
        if fcntl is None:  # pragma: no cover - Windows
            from filelock import FileLock

            self._fallback = FileLock(str(self.path), mode=0o600)

    def acquire(self) -> None:
        """Hold the lock (again, if this thread already holds it).

        :raises LockUnavailableError: another holder kept it past :attr:`timeout`.
        :raises OSError: the lock file cannot be created or opened (a symlink: ELOOP).
        """
        deadline = time.monotonic() + self.timeout
        if not self._mutex.acquire(timeout=max(self.timeout, 0)):
            raise LockUnavailableError(str(self.path))
        try:
            if self._depth == 0 and self._fallback is not None:  # pragma: no cover
                from filelock import Timeout

                try:
                    self._fallback.acquire(timeout=self.timeout, poll_interval=self.poll)
                except Timeout:
                    raise LockUnavailableError(str(self.path)) from None
            elif self._depth == 0:
                self._fd = self._lock_file(deadline)
            self._depth += 1
        except BaseException:
            self._mutex.release()
            raise

    def release(self) -> None:
        """Release one level; the file lock itself once the outermost level ends."""
        self._depth -= 1
        try:
            if self._depth == 0 and self._fallback is not None:  # pragma: no cover
                self._fallback.release()
            elif self._depth == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                _unlock(fd)
        finally:
            self._mutex.release()

    def _lock_file(self, deadline: float) -> int:
        """Lock the file at the path and confirm it under the commit lock; until
        ``deadline``."""
        while True:
            fd = _lock_at(self.path, deadline, self.poll)
            try:
                with self._commit_locked(deadline):  # after any commit in flight
                    if _still_at(self.path, fd):
                        return fd
            except BaseException:
                _unlock(fd)
                raise
            _unlock(fd)  # an inode no longer at the path: lock the one there now

    def held(self) -> bool:
        """True while this process holds the lock on the file that is at the path now.

        False once the lock file was unlinked or replaced under the holder: another
        process may then have locked the new file, so a holder checks this right before
        it commits and writes nothing when it is False.
        """
        if self._fallback is not None:  # pragma: no cover - Windows: no unlink race
            return self._depth > 0
        fd = self._fd
        if fd is None:
            return False
        try:
            return _still_at(self.path, fd)
        except OSError:
            return False

    @contextlib.contextmanager
    def committing(self) -> Iterator[bool]:
        """Hold the commit lock for a commit's last steps; yields :meth:`held`.

        The caller writes only when it gets True, and finishes its commit inside the
        block: a process that locks a replacement lock file confirms it under the same
        lock, so it cannot read the state between this check and the commit.

        :raises LockUnavailableError: the commit lock was not had within :attr:`timeout`.
        """
        with self._commit_locked(time.monotonic() + self.timeout):
            yield self.held()

    @contextlib.contextmanager
    def _commit_locked(self, deadline: float) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows: no unlink race to close
            yield
            return
        fd = _lock_at(self.commit_path, deadline, self.poll, confirm=True)
        try:
            yield
        finally:
            _unlock(fd)


class StoreLock:
    """A store's :class:`PathLock` on ``<state>.lock``, with the library's typed errors.

    :param location: the store's location, for the errors.
    """

    def __init__(self, path: Path, *, timeout: float, location: str) -> None:
        self.path = path
        self.location = location
        self._lock = PathLock(path, timeout=timeout)

    @contextlib.contextmanager
    def holding(self, timeout: float) -> Iterator[None]:
        """Hold the lock (reentrant per thread) for at most ``timeout`` seconds of wait.

        Polls every 5 ms: filelock's default 50 ms idled the lock most of the time under
        contention (4 writers: 3x fewer commits per second).

        :raises LockTimeoutError: another writer held it past ``timeout``.
        :raises StorageUnavailableError: the lock file cannot be created.
        :raises ConfigurationError: a symlink is at the lock's path.
        """
        self._lock.timeout = timeout
        try:
            self._lock.acquire()
        except LockUnavailableError as exc:
            raise self._timeout(exc, "another process is writing, or a writer hangs"
                                ) from None
        except OSError as exc:
            raise self._unusable(exc) from exc
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Around a commit's last steps: the lock file must still be the one we locked,
        and nobody may confirm a replacement lock until the commit is whole.

        :raises LockTimeoutError: it was unlinked or replaced while held (another process
            may hold the new one), or the commit lock stayed held: nothing is written.
        """
        with self.confirmed() as held:
            if not held:
                raise LockTimeoutError(
                    f"{self.path} was removed or replaced while this writer held it; "
                    "nothing was written (another process may be writing now: retry)",
                    lock=str(self.path), timeout=self._lock.timeout, location=self.location)
            yield

    @contextlib.contextmanager
    def confirmed(self) -> Iterator[bool]:
        """Hold the commit lock; yields whether this holder's lock is still the one at
        the path (:meth:`PathLock.committing`)."""
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(self._lock.committing())
            except LockUnavailableError as exc:
                raise self._timeout(exc, "another process holds it; nothing was written"
                                    ) from None
            except OSError as exc:
                raise self._unusable(exc) from exc
            yield held

    def _unusable(self, exc: OSError) -> StorageUnavailableError:
        """The error for a lock file that cannot be opened (a symlink: ConfigurationError)."""
        for path in (self.path, self._lock.commit_path):
            refuse_symlink(path, exc)
        return StorageUnavailableError(
            f"cannot create lock {exc.filename or self.path}: {exc.strerror or exc}",
            location=self.location)

    def _timeout(self, exc: LockUnavailableError, why: str) -> LockTimeoutError:
        return LockTimeoutError(
            f"could not lock {exc.args[0] if exc.args else self.path} within "
            f"{self._lock.timeout:g}s ({why})", lock=str(self.path),
            timeout=self._lock.timeout, location=self.location)


def _lock_at(path: Path, deadline: float, poll: float, *, confirm: bool = False) -> int:
    """Open (create, 0600, no link) and ``flock`` the file at ``path``; poll until
    ``deadline``. ``confirm``: also retry until the locked file is the one at the path.

    :raises LockUnavailableError: still held by another at ``deadline``.
    """
    assert fcntl is not None  # PathLock uses filelock on a platform without it
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o600)
        except FileNotFoundError:  # the state's directory does not exist yet
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        else:
            try:
                if not confirm or _still_at(path, fd):
                    return fd
            except BaseException:
                _unlock(fd)
                raise
            _unlock(fd)
            continue  # replaced while we locked it: lock the file at the path now
        if time.monotonic() >= deadline:
            raise LockUnavailableError(str(path))
        time.sleep(poll)


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _still_at(path: Path, fd: int) -> bool:
    """True if the file open at ``fd`` is the one at ``path`` (device and inode)."""
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(at_path.st_mode):
        raise OSError(errno.EINVAL, "the lock file is not a regular file", str(path))
    held = os.fstat(fd)
    return at_path.st_ino == held.st_ino and at_path.st_dev == held.st_dev
