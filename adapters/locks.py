"""A lock file that holds: ``flock`` on ``<path>``, checked to still be the file at the path.

``filelock`` (and a bare ``flock``) locks an *inode*. If someone unlinks or replaces the
lock file while a writer holds it (a cleanup script, ``rm *.lock``, an editor), the next
writer opens a new file at the path, locks that inode at once, and two writers are inside
the critical section together (a counter ended at 299 of 301 in issue 12's test). So
after locking, :class:`PathLock` checks that the locked descriptor is still the file at
the path (same device and inode) and otherwise drops it and tries again; and a holder
checks :meth:`PathLock.held` right before it commits, so a holder whose file was pulled
from under it writes nothing (a typed error) instead of racing the new holder.

That check alone leaves a window: a holder checks, then (microseconds later) replaces
the state, while a new holder that locked the new file in between reads the old state
and later writes over the commit (the issue 12 test lost 2 of 150 increments about once
in five runs on a loaded machine). So the last check and the commit it guards run under
a second, short lock, :meth:`PathLock.committing` (``flock`` on the directory), and a new
holder confirms its file under the same lock before it reads anything: it either sees
the old holder's commit whole or the old holder sees the file gone and writes nothing.

The lock file is never deleted by us (deleting it is exactly what opens that race); it
is created with mode 0600 and never through a symlink.
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

__all__ = ["LockUnavailableError", "PathLock"]

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
    :param timeout: seconds :meth:`acquire` waits before :class:`LockUnavailableError`.
    :param poll: seconds between attempts while another process holds it.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float,
                 poll: float = 0.005) -> None:
        self.path: Path = Path(path)
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
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            self._mutex.release()

    def _lock_file(self, deadline: float) -> int:
        """Open, lock and verify the file at the path; retry until ``deadline``."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o600)
            except FileNotFoundError:  # the state's directory does not exist yet
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o600)
            assert fcntl is not None  # __init__ refused a platform without it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                locked = False
            try:
                if locked:
                    with self._directory_locked():  # after any commit in flight
                        if self._still_at_path(fd):
                            return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # held by another process, or an inode no longer at the path
            if locked:
                continue  # the file was replaced: lock the one at the path now
            if time.monotonic() >= deadline:
                raise LockUnavailableError(str(self.path))
            time.sleep(self.poll)

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
            return self._still_at_path(fd)
        except OSError:
            return False

    @contextlib.contextmanager
    def committing(self) -> Iterator[bool]:
        """Hold the directory's commit lock for a commit; yields :meth:`held`.

        The caller writes only when it gets True, and finishes its commit inside the
        block: a process that locks a replacement lock file confirms it under the same
        lock, so it cannot read the state between this check and the commit.
        """
        with self._directory_locked():
            yield self.held()

    @contextlib.contextmanager
    def _directory_locked(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows: no unlink race to close
            yield
            return
        fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for one commit's last steps only
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _still_at_path(self, fd: int) -> bool:
        try:
            at_path = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(at_path.st_mode):
            raise OSError(errno.EINVAL, "the lock file is not a regular file", str(self.path))
        held = os.fstat(fd)
        return at_path.st_ino == held.st_ino and at_path.st_dev == held.st_dev
