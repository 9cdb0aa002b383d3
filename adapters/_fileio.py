"""File primitives of the JSON file adapter: safe opens, the one durable whole-file put.

Every file the adapter reads is opened as a regular file only: never through a symlink
(``O_NOFOLLOW``), never waiting on a FIFO (``O_NONBLOCK``). Every file it writes whole
(the snapshot, a rewritten journal, the lineage) goes through :func:`put`: a private temp
file in the same directory, fsynced, ``os.replace``-d over the target, then the directory
fsynced, so a crash leaves the old or the new bytes, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from cascadeui.errors import ConfigurationError, StorageUnavailableError

__all__ = ["Digest", "aside_name", "copy", "digest", "fsync_dir", "keep_mode", "lstat",
           "make_dirs", "open_regular", "put", "read_bytes", "refuse_special",
           "refuse_symlink", "set_aside"]

#: (CRC-32, length) of a file's bytes: what a journal header binds to.
Digest = tuple[int, int]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
#: Opening a FIFO planted at a state path must fail fast, not wait for a writer forever.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FILE_KINDS = {stat.S_IFDIR: "directory", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket",
               stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
               stat.S_IFLNK: "symlink"}
#: Characters encoded and written at a time by a whole-document write.
_WRITE_CHUNK = 1 << 20


def digest(data: bytes, crc: int = 0, size: int = 0) -> Digest:
    """The (CRC-32, length) of ``data``; ``crc``/``size``: of the bytes before it."""
    return (zlib.crc32(data, crc), size + len(data))


def refuse_symlink(path: Path, exc: OSError | None = None) -> None:
    """Raise :class:`ConfigurationError` naming the real path when ``path`` is a link."""
    if path.is_symlink():
        raise ConfigurationError(
            f"{path} is a symlink; cascadeui does not read or write through links "
            f"(pass the real path: {os.path.realpath(path)})",
            location=str(path)) from exc


def refuse_special(path: Path, st: os.stat_result) -> None:
    """Raise :class:`ConfigurationError` when ``st`` is not a regular file (named)."""
    if not stat.S_ISREG(st.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        raise ConfigurationError(
            f"{path} is a {kind}, not a regular file; cascadeui reads and "
            "writes only regular files (move it away)", location=str(path))


def open_regular(path: Path, flags: int) -> int:
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
        refuse_symlink(path, exc)
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO with no reader, a dir
            refuse_special(path, os.lstat(path))
        raise StorageUnavailableError(f"cannot open {path}: {exc.strerror or exc}",
                                      location=str(path)) from exc
    try:
        refuse_special(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, start: int = 0) -> tuple[bytes, os.stat_result, os.stat_result]:
    """The bytes of ``path`` from ``start``, and its stat before and after the read.

    :raises FileNotFoundError: no such file.
    :raises ConfigurationError: ``path`` is a symlink or not a regular file.
    :raises StorageUnavailableError: it cannot be read.
    """
    fd = open_regular(path, os.O_RDONLY)
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


def lstat(path: Path, location: str) -> os.stat_result | None:
    """``os.lstat(path)``; None when there is no such file.

    :raises StorageUnavailableError: it cannot be looked at (named, at ``location``).
    """
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageUnavailableError(f"cannot stat {path}: {exc.strerror or exc}",
                                      location=location) from exc


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename, an unlink, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, location: str) -> None:
    """Create the missing directories above ``path``, each fsynced into its parent.

    A new directory that is not fsynced into its parent can vanish in a power cut with
    the acknowledged state in it (issue 16, tests/test_powercut.py).
    """
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process made it
                os.mkdir(directory)
            fsync_dir(directory.parent)
    except OSError as exc:
        raise StorageUnavailableError(
            f"cannot create the directory of {path}: {exc.strerror or exc}",
            location=location) from exc


def keep_mode(fd: int, like: Path) -> None:
    """Give the file open at ``fd`` the permission bits of ``like`` (0644, ...)."""
    try:
        mode = os.lstat(like).st_mode & 0o7777
    except FileNotFoundError:
        return
    if mode != 0o600 and hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def put(target: Path, data: bytes | str, *, like: Path, tag: str = "",
        before: Callable[[], None] | None = None, durable: bool = True) -> Digest:
    """Put ``data`` at ``target`` whole and durably; the digest of the bytes written.

    Temp file ``.<name of like>.<tag>.*.tmp`` beside ``target`` (mode 0600, ``O_EXCL``:
    no symlink games; then the bits of ``like``), fsync, ``before()`` (the last checks
    of a commit), ``os.replace``, directory fsync. A ``str`` is encoded a slice at a time
    (UTF-8 of the slices joins to UTF-8 of the whole): no 10 MB copy holds the GIL.
    ``durable=False`` skips both fsyncs (what no power cut needs to keep: still whole).
    """
    prefix = f".{like.name}." + (f"{tag}." if tag else "")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            keep_mode(fh.fileno(), like)
            if isinstance(data, bytes):
                fh.write(data)
                sums = digest(data)
            else:
                sums = (0, 0)
                for start in range(0, len(data), _WRITE_CHUNK):
                    chunk = data[start:start + _WRITE_CHUNK].encode("utf-8")
                    fh.write(chunk)
                    sums = digest(chunk, *sums)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if before is not None:
            before()
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(target.parent)
    return sums


def copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to a new file ``dst`` (``O_EXCL``, 0600), fsynced."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fout:
            fout.write(fin.read())
            fout.flush()
            os.fsync(fout.fileno())


def aside_name(path: Path, kind: str = "corrupt") -> Path:
    """``<path>.<kind>-<UTC timestamp>``, unique (call it under the write lock)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = Path(f"{path}.{kind}-{stamp}Z")
    n = 1
    while os.path.lexists(aside):
        aside = Path(f"{path}.{kind}-{stamp}Z-{n}")
        n += 1
    return aside


def set_aside(path: Path, kind: str = "corrupt") -> Path:
    """Move ``path`` to ``<path>.<kind>-<UTC timestamp>`` (lock held); where it went."""
    aside = aside_name(path, kind)
    os.replace(path, aside)
    return aside
