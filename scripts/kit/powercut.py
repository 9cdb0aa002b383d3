"""A power-cut simulator: record a process's file-system calls, rebuild every crash state.

SIGKILL keeps the page cache, so a kill campaign cannot catch a missing fsync. This
module records the system calls a writer process makes under ``strace`` (``open``,
``write``/``pwrite``, ``ftruncate``, ``fsync``/``fdatasync``, ``rename``, ``link``,
``unlink``, ``mkdir``, directory fsyncs), turns those on files below one directory into
abstract operations, and builds the states the directory may be left in if the power
goes at any point of the trace, under POSIX rules (the model of the ALICE study, OSDI
2014, "All File Systems Are Not Created Equal"):

- a file's data is durable once the file is fsynced; before that, any *prefix* of its
  unsynced writes may have reached the disk, the next one possibly torn (half of it) or,
  for a write past the end, as zeros (the size grew, the data did not arrive);
- a directory entry (create, rename, link, unlink, mkdir) is durable once its directory
  is fsynced; before that, any subset of the pending entry operations may have reached
  the disk (in program order), whatever the order of the data writes;
- files are independent of each other and of the directory.

Every process-level marker written to ``/dev/null`` (``PCMARK <text>``) is kept in the
trace, so a writer can say which changes it has acknowledged and the checker can ask each
crash state for them. Writes through ``mmap`` are not seen (SQLite's ``-shm`` wal-index,
which SQLite rebuilds from the WAL after a crash).

Why system calls and ``strace`` rather than patching ``os`` in the adapter: one recorder
sees exactly what reaches the kernel from Python's ``io``, ``tempfile``, ``filelock`` and
SQLite's C code alike, and cannot miss a call because an adapter changed how it writes.
See docs/reliability.md, "Power cuts".
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import shutil
import subprocess
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CrashState", "Op", "StraceMissingError", "crash_states", "cut_points",
           "materialise", "parse_trace", "record"]

#: The system calls recorded. ``read`` is left out (its buffers would fill the trace); a
#: write through ``write()`` takes its offset from the position tracked through ``lseek``.
_SYSCALLS = ("open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,fsync,"
             "fdatasync,ftruncate,truncate,rename,renameat,renameat2,link,linkat,unlink,"
             "unlinkat,mkdir,mkdirat,rmdir,close,dup,dup2,dup3,fcntl,sync,syncfs,chdir,clone,"
             "clone3,fork,vfork")
MARKER = b"PCMARK "


class StraceMissingError(RuntimeError):
    """``strace`` is not installed (``apt-get install strace``) or cannot trace here."""


@dataclass(frozen=True)
class Op:
    """One recorded operation on the directory under test, in program order.

    ``kind`` is one of ``create``, ``mkdir``, ``write``, ``trunc``, ``fsync``, ``entry``
    (a directory change: ``entries`` maps relative paths to an inode or None), ``sync``
    (everything) and ``mark`` (a marker the writer wrote: ``text``).
    """

    kind: str
    ino: int = -1
    off: int = 0
    data: bytes = b""
    size: int = 0
    text: str = ""
    #: For ``entry``: ((path, inode or None), ...) applied together; ``dir``: its directory.
    entries: tuple[tuple[str, int | None], ...] = ()
    dir: int = -1
    what: str = ""


# -- recording ----------------------------------------------------------------------------


def record(argv: Sequence[str], trace: str | os.PathLike[str], *,
           env: dict[str, str] | None = None, cwd: str | None = None,
           timeout: float = 300.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` under ``strace``, writing the raw trace to ``trace``.

    :raises StraceMissingError: no ``strace`` on PATH, or it cannot attach (ptrace denied).
    """
    binary = shutil.which("strace")
    if binary is None:
        raise StraceMissingError("strace is not installed (apt-get install strace)")
    cmd = [binary, "-f", "-qq", "-xx", "-s", str(1 << 28), "-o", os.fspath(trace),
           "-e", f"trace={_SYSCALLS}", "--", *argv]
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=timeout,
                         check=False)
    if out.returncode != 0 and b"ptrace" in out.stderr:
        raise StraceMissingError(f"strace cannot trace here: {out.stderr.decode()[-300:]}")
    return out


# -- parsing --------------------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^([a-z0-9_]+)\((.*)\) += (-?\d+|\?)(.*)$", re.S)
_STR = re.compile(r'^"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?$')
_IOV = re.compile(r'iov_base="((?:\\x[0-9a-f]{2})*)"')


def _split_args(args: str) -> list[str]:
    """Split strace's argument text at top-level commas (strings are all ``\\xNN``)."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in args:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur).strip())
    return out


def _bytes(arg: str) -> bytes:
    m = _STR.match(arg)
    if m is None:
        raise ValueError(f"not a string argument: {arg[:60]!r}")
    if m.group(2):
        raise ValueError("a string was truncated by strace (raise -s)")
    return bytes.fromhex(m.group(1).replace("\\x", ""))


@dataclass
class _Fd:
    ino: int  # -1: outside the directory; -2: /dev/null (markers)
    pos: int = 0
    append: bool = False


@dataclass
class _Parser:
    root: str
    ops: list[Op] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)
    dirs: set[int] = field(default_factory=lambda: {0})
    sizes: dict[int, int] = field(default_factory=dict)
    fds: dict[tuple[int, int], _Fd] = field(default_factory=dict)
    #: Working directories set by ``chdir`` (and inherited by forks): redis-server chdirs
    #: into its ``--dir``. A relative path of a process that never chdir'd is not ours.
    cwds: dict[int, str] = field(default_factory=dict)
    #: Thread id -> the id whose descriptor table it shares (CLONE_FILES).
    groups: dict[int, int] = field(default_factory=dict)
    pid: int = 0
    next_ino: int = 1

    def rel(self, path: str) -> str | None:
        """The path relative to the root, or None when outside it."""
        if not path.startswith("/"):
            cwd = self.cwds.get(self.pid)
            if cwd is None:
                return None
            path = os.path.join(cwd, path)
        path = os.path.normpath(path)
        if path == self.root:
            return ""
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1:]
        return None

    def ino_of(self, rel: str) -> int | None:
        return 0 if rel == "" else self.entries.get(rel)

    def dir_of(self, rel: str) -> int:
        parent = os.path.dirname(rel)
        found = self.ino_of(parent)
        return 0 if found is None else found

    def entry(self, what: str, *changes: tuple[str, int | None]) -> None:
        for path, ino in changes:
            if ino is None:
                self.entries.pop(path, None)
            else:
                self.entries[path] = ino
        self.ops.append(Op("entry", entries=tuple(changes), dir=self.dir_of(changes[0][0]),
                           what=what))

    def write(self, ino: int, off: int, data: bytes) -> None:
        if not data:
            return
        self.ops.append(Op("write", ino=ino, off=off, data=data))
        self.sizes[ino] = max(self.sizes.get(ino, 0), off + len(data))

    def call(self, pid: int, name: str, args: list[str], ret: int) -> None:
        self.pid = pid
        if name == "chdir":
            if ret == 0:
                self.cwds[pid] = os.path.normpath(os.path.join(
                    self.cwds.get(pid, "/"), _bytes(args[0]).decode("utf-8", "surrogateescape")))
            return
        if name in ("clone", "clone3", "fork", "vfork"):
            if ret > 0:
                if pid in self.cwds:
                    self.cwds[ret] = self.cwds[pid]
                group = self.groups.get(pid, pid)
                if any("CLONE_FILES" in a for a in args):
                    # A thread (strace names it by its own id) shares the descriptor
                    # table: redis-server fsyncs its AOF from a background thread.
                    self.groups[ret] = group
                else:  # a child process starts with copies of its parent's descriptors
                    for (owner, num), entry in list(self.fds.items()):
                        if owner == group:
                            self.fds[ret, num] = _Fd(entry.ino, entry.pos, entry.append)
            return
        pid = self.groups.get(pid, pid)  # descriptors belong to the thread group
        if name in ("open", "openat", "creat"):
            path = _bytes(args[1] if name == "openat" else args[0]).decode("utf-8",
                                                                            "surrogateescape")
            flags = args[2] if name == "openat" else (args[1] if name == "open" else "O_CREAT")
            if ret < 0:
                return
            if path == "/dev/null":
                self.fds[pid, ret] = _Fd(-2)
                return
            rel = self.rel(path)
            if rel is None:
                self.fds[pid, ret] = _Fd(-1)
                return
            ino = self.ino_of(rel)
            if ino is None:
                if "O_CREAT" not in flags and name != "creat":
                    self.fds[pid, ret] = _Fd(-1)
                    return
                ino = self.next_ino
                self.next_ino += 1
                self.sizes[ino] = 0
                self.entry("create " + rel, (rel, ino))
            elif "O_TRUNC" in flags or name == "creat":
                self.ops.append(Op("trunc", ino=ino, size=0))
                self.sizes[ino] = 0
            self.fds[pid, ret] = _Fd(ino, append="O_APPEND" in flags)
            return
        if name in ("close",):
            self.fds.pop((pid, int(args[0])), None)
            return
        if name in ("dup", "dup2", "dup3") or (name == "fcntl" and "F_DUPFD" in args[1]):
            old = self.fds.get((pid, int(args[0])))
            if ret >= 0 and old is not None:
                self.fds[pid, ret] = old
            return
        if name in ("mkdir", "mkdirat"):
            rel = self.rel(_bytes(args[1 if name == "mkdirat" else 0]).decode(
                "utf-8", "surrogateescape"))
            if ret == 0 and rel is not None:
                ino = self.next_ino
                self.next_ino += 1
                self.dirs.add(ino)
                self.entry("mkdir " + rel, (rel, ino))
            return
        if name in ("rename", "renameat", "renameat2", "link", "linkat"):
            two = name in ("rename", "link")
            src = self.rel(_bytes(args[0 if two else 1]).decode("utf-8", "surrogateescape"))
            dst = self.rel(_bytes(args[1 if two else 3]).decode("utf-8", "surrogateescape"))
            if ret != 0 or src is None or dst is None:
                return
            ino = self.ino_of(src)
            if ino is None:
                return
            if name.startswith("rename"):
                if src != dst:
                    self.entry(f"rename {src} -> {dst}", (dst, ino), (src, None))
            else:
                self.entry(f"link {src} -> {dst}", (dst, ino))
            return
        if name in ("unlink", "unlinkat", "rmdir"):
            rel = self.rel(_bytes(args[1 if name == "unlinkat" else 0]).decode(
                "utf-8", "surrogateescape"))
            if ret == 0 and rel is not None:
                self.entry("unlink " + rel, (rel, None))
            return
        if name in ("sync", "syncfs"):
            self.ops.append(Op("sync"))
            return
        fd = self.fds.get((pid, int(args[0]))) if args and args[0].lstrip("-").isdigit() else None
        if fd is None or ret < 0:
            return
        if name == "lseek":
            fd.pos = ret
            return
        if fd.ino == -2:
            if name == "write":
                data = _bytes(args[1])
                if data.startswith(MARKER):
                    self.ops.append(Op("mark", text=data[len(MARKER):].decode()))
            return
        if fd.ino < 0:
            return
        if name in ("fsync", "fdatasync"):
            self.ops.append(Op("fsync", ino=fd.ino))
        elif name == "write":
            data = _bytes(args[1])[:ret]
            off = self.sizes.get(fd.ino, 0) if fd.append else fd.pos
            self.write(fd.ino, off, data)
            fd.pos = off + len(data)
        elif name == "pwrite64":
            self.write(fd.ino, int(args[3]), _bytes(args[1])[:ret])
        elif name in ("writev", "pwritev", "pwritev2"):
            data = b"".join(bytes.fromhex(m.replace("\\x", ""))
                            for m in _IOV.findall(args[1]))[:ret]
            if name == "writev":
                off = self.sizes.get(fd.ino, 0) if fd.append else fd.pos
                fd.pos = off + len(data)
            else:
                off = int(args[3])
            self.write(fd.ino, off, data)
        elif name == "ftruncate":
            self.ops.append(Op("trunc", ino=fd.ino, size=int(args[1])))
            self.sizes[fd.ino] = int(args[1])


def parse_trace(text: str, root: str | os.PathLike[str]) -> list[Op]:
    """The operations on files below ``root`` (an empty directory when the trace began).

    :raises ValueError: a line that cannot be read (a string truncated by strace, ...).
    """
    parser = _Parser(os.path.normpath(os.fspath(root)))
    pending: dict[int, str] = {}
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<... "):
            head = pending.pop(pid, None)
            if head is None:
                continue
            rest = head + rest[rest.index("resumed>") + len("resumed>"):]
        call = _CALL.match(rest)
        if call is None or call.group(3) == "?":
            continue
        parser.call(pid, call.group(1), _split_args(call.group(2)), int(call.group(3)))
    return parser.ops


# -- crash states ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashState:
    """What the directory holds after a cut: relative path -> inode, inode -> bytes."""

    entries: tuple[tuple[str, int], ...]
    contents: tuple[tuple[int, bytes], ...]
    dirs: frozenset[int]
    #: How it came about, for a report: the pending operations kept and dropped.
    how: str

    def key(self) -> str:
        """A digest of the state (paths, links between them, bytes), to skip duplicates."""
        h = hashlib.sha256()
        for path, ino in self.entries:
            h.update(f"{path}\0{ino}\0".encode())
        for ino, data in self.contents:
            h.update(f"{ino}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()


def cut_points(ops: Sequence[Op]) -> list[int]:
    """Indexes ``i`` such that the power may go right after ``ops[i]`` (not after a mark)."""
    return [i for i, op in enumerate(ops) if op.kind != "mark"]


def _apply(data: bytearray, op: Op) -> None:
    if op.kind == "trunc":
        del data[op.size:]
        data.extend(bytes(max(0, op.size - len(data))))
    elif op.kind == "write":
        end = op.off + len(op.data)
        if len(data) < end:
            data.extend(bytes(end - len(data)))
        data[op.off:end] = op.data


#: Prefixes of one file's pending writes tried at most (evenly spread, ends included):
#: a server that fsyncs once a second may have hundreds pending.
_MAX_PREFIXES = 16


def _variants(base: bytes, pending: list[Op]) -> list[tuple[bytes, str]]:
    """Contents a file may have: any prefix of its pending writes, the next one torn."""
    out: list[tuple[bytes, str]] = []
    data = bytearray(base)
    n = len(pending)
    step = max(1, -(-n // _MAX_PREFIXES))
    tried = set(range(0, n + 1, step)) | {n, n - 1}
    for j in range(n + 1):
        if j in tried:
            out.append((bytes(data), f"{j}/{n} writes"))
        if j == n:
            break
        op = pending[j]
        if j in tried and op.kind == "write" and len(op.data) > 1:
            half = bytearray(data)
            _apply(half, Op("write", off=op.off, data=op.data[: len(op.data) // 2]))
            out.append((bytes(half), f"{j}/{len(pending)} writes + half of the next"))
            if op.off + len(op.data) > len(data):
                zeros = bytearray(data)
                _apply(zeros, Op("write", off=op.off, data=bytes(len(op.data))))
                out.append((bytes(zeros), f"{j}/{len(pending)} writes + zeros for the next"))
        _apply(data, op)
    return out


def crash_states(ops: Sequence[Op], *, limit: int = 32, seed: int = 0,
                 only: Collection[int] | None = None
                 ) -> Iterator[tuple[int, list[CrashState]]]:
    """For every cut point ``i``: the crash states after ``ops[i]`` (at most ``limit``).

    ``only``: build them at these cut points only (the others are skipped, not built).

    All combinations are built when there are at most ``limit``; otherwise the two
    extremes (nothing pending reached the disk / everything did), every "all but one
    directory change" and random combinations.
    """
    rng = random.Random(seed)
    durable: dict[str, int] = {}
    content: dict[int, bytes] = {}
    dirs: set[int] = {0}
    pend_dir: list[Op] = []
    pend_data: dict[int, list[Op]] = {}
    for i, op in enumerate(ops):
        if op.kind == "mark":
            continue
        if op.kind in ("write", "trunc"):
            pend_data.setdefault(op.ino, []).append(op)
        elif op.kind == "entry":
            pend_dir.append(op)
            for _, ino in op.entries:
                if ino is not None and op.what.startswith("mkdir"):
                    dirs.add(ino)
        elif op.kind == "fsync":
            if op.ino in dirs:
                keep = [p for p in pend_dir if p.dir != op.ino]
                for p in pend_dir:
                    if p.dir == op.ino:
                        _assign(durable, p)
                pend_dir = keep
            else:
                data = bytearray(content.get(op.ino, b""))
                for p in pend_data.pop(op.ino, []):
                    _apply(data, p)
                content[op.ino] = bytes(data)
        elif op.kind == "sync":
            for p in pend_dir:
                _assign(durable, p)
            pend_dir = []
            for ino, plist in pend_data.items():
                data = bytearray(content.get(ino, b""))
                for p in plist:
                    _apply(data, p)
                content[ino] = bytes(data)
            pend_data = {}
        if only is None or i in only:
            yield i, _states_at(durable, content, frozenset(dirs), pend_dir, pend_data,
                                limit, rng)


def _assign(entries: dict[str, int], op: Op) -> None:
    for path, ino in op.entries:
        if ino is None:
            entries.pop(path, None)
        else:
            entries[path] = ino


def _states_at(durable: dict[str, int], content: dict[int, bytes], dirs: frozenset[int],
               pend_dir: list[Op], pend_data: dict[int, list[Op]], limit: int,
               rng: random.Random) -> list[CrashState]:
    n = len(pend_dir)
    subsets: list[tuple[bool, ...]]
    if 2 ** n <= limit:
        subsets = list(itertools.product((False, True), repeat=n))
    else:
        subsets = [tuple([False] * n), tuple([True] * n)]
        subsets += [tuple(j != k for j in range(n)) for k in range(n)]
        subsets += [tuple(j < k for j in range(n)) for k in range(n)]
        while len(subsets) < limit:
            subsets.append(tuple(rng.random() < 0.5 for _ in range(n)))
    # Only files a crash state can name matter (a replaced journal's unsynced tail does not).
    reachable = set(durable.values()) | {ino for p in pend_dir for _, ino in p.entries}
    variants = {ino: _variants(content.get(ino, b""), plist)
                for ino, plist in pend_data.items() if plist and ino in reachable}
    # The combinations of directory subsets and per-file contents: all of them when few.
    inos = sorted(variants)
    choices = [range(len(subsets)), *(range(len(variants[ino])) for ino in inos)]
    total = 1
    for c in choices:
        total *= len(c)
    if total <= limit:
        combos = list(itertools.product(*choices))
    else:
        combos = [tuple([0] * len(choices)),
                  tuple(len(c) - 1 for c in choices)]
        combos += [(k, *(len(c) - 1 for c in choices[1:])) for k in range(len(subsets))]
        combos += [(0, *(rng.randrange(len(c)) for c in choices[1:]))
                   for _ in range(len(subsets))]
        while len(combos) < limit:
            combos.append(tuple(rng.randrange(len(c)) for c in choices))
        combos = combos[:limit]
    out: list[CrashState] = []
    for combo in combos:
        subset = subsets[combo[0]]
        entries = dict(durable)
        kept, dropped = [], []
        for p, keep in zip(pend_dir, subset, strict=True):
            if keep:
                _assign(entries, p)
                kept.append(p.what)
            else:
                dropped.append(p.what)
        data = dict(content)
        notes = []
        for ino, pick in zip(inos, combo[1:], strict=True):
            data[ino], note = variants[ino][pick]
            notes.append(f"inode {ino}: {note}")
        live = {ino for ino in entries.values()}
        how = (f"kept {kept or 'no'} directory changes, dropped {dropped or 'none'}; "
               + ("; ".join(notes) or "no unsynced data"))
        out.append(CrashState(tuple(sorted(entries.items())),
                              tuple(sorted((i, d) for i, d in data.items() if i in live
                                           and i not in dirs)), dirs, how))
    return out


def materialise(state: CrashState, where: str | os.PathLike[str]) -> dict[int, Path]:
    """Write ``state`` into the empty directory ``where`` (hard links stay hard links).

    Entries whose directory did not survive are left out. Returns inode -> first path.
    """
    base = Path(where)
    paths: dict[int, Path] = {}
    present = dict(state.entries)
    contents = dict(state.contents)
    for path, ino in sorted(state.entries, key=lambda e: e[0].count("/")):
        parent = os.path.dirname(path)
        if parent and present.get(parent) not in state.dirs:
            continue
        if parent and not (base / parent).is_dir():
            continue
        target = base / path
        if ino in state.dirs:
            target.mkdir(exist_ok=True)
        elif ino in paths:
            os.link(paths[ino], target)
        else:
            target.write_bytes(contents.get(ino, b""))
            os.chmod(target, 0o600)
            paths[ino] = target
    return paths
