"""The ``cascadeui`` command line (also ``python -m cascadeui``); see ``docs/cli.md``.

TARGET is a path or URL (``bot_state.json``, ``cascadeui.db``, ``sqlite:///x.db``,
``redis://:pw@host:6379/0?key=cascadeui:state``). Exit codes: 0 success, 1 failure (one
line on stderr naming the target, password redacted; the traceback only with
``--debug``), 2 usage. ``--json`` prints machine-readable output where a script would
parse it. Read-only commands never create a file or a database.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from cascadeui import __version__, sync
from cascadeui._backends import Capabilities
from cascadeui._entries import entry_problem
from cascadeui._inspection import (
    _human_bytes,
    format_path,
    get_path,
    inspect,
    parse_path,
    set_path,
)
from cascadeui._targets import open_store, redacted
from cascadeui.actions import SCHEMA_KEY
from cascadeui.adapters import BackupStore, Check, DescribedStore, SyncStore
from cascadeui.errors import (
    ConfigurationError,
    PersistenceError,
    SerializationError,
    StateCorruptedError,
)
from cascadeui.serializer import StateSerializer, check_storable

__all__ = ["UsageError", "main"]

log: logging.Logger = logging.getLogger(__name__)

_WRITABLE_SLICES = ("application", "persistent_views")
#: ``migrate`` shows its progress bar on a terminal from this source size up.
PROGRESS_THRESHOLD = 1 << 20
#: A write that has waited this long for a lock says so on stderr.
LOCK_NOTE_AFTER = 1.0


#: What ``verify`` says of an empty SQLite database (issue 23): it may be a copy.
WAL_NOTE = ("an empty database: if it is a copy, the copy may have missed its -wal file "
            "(a SQLite database in WAL mode is the file plus <name>-wal until a checkpoint; "
            "`cp` of the file alone while a bot runs or after a kill loses every change in "
            "the -wal). Copy with `cascadeui backup TARGET DEST` instead")


class UsageError(Exception):
    """A bad argument found after parsing (bad PATH, bad JSON value): exit code 2."""


def _encoded(value: Any) -> Any:
    """``value`` as the JSON the serializer would store (tags for sets, int keys, ...)."""
    return json.loads(StateSerializer().serialize({"v": value}))["v"]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number and cannot be stored")


def _decoded(text: str, path: Sequence[Any] = ()) -> Any:
    """Parse a JSON value, honouring the serializer's tags (``{"$set": [1, 2]}``); errors
    name the user's ``path`` (``application.v``), not the serializer's internals.

    :raises UsageError: not one JSON value, ``NaN``/``Infinity``, a bad tag: the VALUE
        is to blame, never the stored state.
    """
    try:
        json.loads(text, parse_constant=_no_constant)  # one whole value, nothing after it
    except ValueError as exc:
        raise UsageError(f"VALUE is not JSON ({exc}); quote strings: '\"text\"'") from None
    serializer = StateSerializer()
    try:
        value = serializer.deserialize('{"v": ' + text + "}")["v"]
        check_storable(value, path)
    except (StateCorruptedError, SerializationError) as exc:
        reason = str(exc).removeprefix("stored state is not valid: ")
        raise UsageError(f"VALUE {_clip(text)} cannot be stored: {reason}") from None
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - guarded above
        raise UsageError(f"VALUE {text} cannot be stored: not a finite number")
    return value


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _open_for_write(target: str) -> SyncStore:
    """The adapter ``set``/``delete``/``migrate`` write to: created if missing, but a
    foreign database or a directory is refused before anything is made."""
    adapter = open_store(target)
    try:
        if isinstance(adapter, DescribedStore):
            adapter.exists()  # raises for what must never be written to
    except BaseException:
        adapter.close()
        raise
    return adapter


@contextlib.contextmanager
def _lock_note(command: str, target: str) -> Iterator[None]:
    """After :data:`LOCK_NOTE_AFTER` seconds of waiting, say on stderr what we wait for."""
    done = threading.Event()

    def note() -> None:
        if not done.wait(LOCK_NOTE_AFTER):
            print(f"cascadeui {command} {redacted(target)}: waiting for the write lock "
                  "(another process is writing; giving up after the lock timeout, 10 s by "
                  "default)", file=sys.stderr, flush=True)

    thread = threading.Thread(target=note, name="cascadeui-lock-note", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _print_json(data: Any, out: TextIO, indent: int | None = 2) -> None:
    json.dump(data, out, indent=indent, ensure_ascii=False)
    out.write("\n")


# -- commands ----------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    snapshot = inspect(args.target)
    if args.json:
        _print_json(snapshot.to_dict(), sys.stdout)
    else:
        print(repr(snapshot))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    parse_path(args.path)
    adapter = open_store(args.target, existing=True)
    try:
        state = adapter.load()
    finally:
        adapter.close()
    _print_json(_encoded(get_path(state, args.path)), sys.stdout)
    return 0


def _writable(path: str) -> list[Any]:
    segs = parse_path(path)
    if segs[0].quoted or segs[0].text not in _WRITABLE_SLICES or len(segs) < 2:
        raise UsageError(f"PATH {path!r} must start with application. or "
                         "persistent_views. and name a key (other keys are not persisted)")
    if segs[0].text == "application" and segs[1].text == SCHEMA_KEY:
        raise UsageError(f"application.{SCHEMA_KEY} is the schema version, kept by "
                         "cascadeui; change it with `cascadeui migrate-schema`")
    return segs


def _check_panels(state: dict[str, Any], segs: list[Any]) -> None:
    """A change under ``persistent_views.KEY`` must leave an entry restore accepts."""
    if segs[0].text != "persistent_views":
        return
    views = state.get("persistent_views", {})
    for key in (k for k in views if str(k) == segs[1].text):
        problem = entry_problem(views[key])
        if problem is not None:
            raise UsageError(f"persistent_views.{format_path([key])} would not restore "
                             f"({problem}); every start would report it as failed")


def cmd_set(args: argparse.Namespace) -> int:
    segs = _writable(args.path)
    value = _decoded(args.value, [s.text for s in segs])
    adapter = _open_for_write(args.target)
    try:
        with _lock_note(args.command, args.target), sync.transaction(adapter) as state:
            state.setdefault(segs[0].text, {})
            set_path(state, args.path, value)
            _check_panels(state, segs)
    finally:
        adapter.close()
    if args.json:
        _print_json({"target": redacted(args.target), "path": args.path,
                     "value": _encoded(value)}, sys.stdout)
    else:
        print(f"set {args.path} in {redacted(args.target)}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _writable(args.path)
    adapter = open_store(args.target, existing=True)
    try:
        with _lock_note(args.command, args.target), sync.transaction(adapter) as state:
            removed = delete_path(state, args.path)
    finally:
        adapter.close()
    if args.json:
        _print_json({"target": redacted(args.target), "path": args.path,
                     "removed": _encoded(removed)}, sys.stdout)
    else:
        print(f"deleted {args.path} from {redacted(args.target)}")
    return 0


def delete_path(state: dict[str, Any], path: str) -> Any:
    """Remove the key (or list item) at PATH; return what it held.

    :raises KeyError: nothing there.
    """
    segs = parse_path(path)
    parent_path = format_path([s.text for s in segs[:-1]]) if len(segs) > 1 else ""
    if len(segs) > 1:
        quoted = [f'"{s.text}"' if s.quoted else s.text for s in segs[:-1]]
        parent = get_path(state, ".".join(quoted))
    else:
        parent = state
    get_path(state, path)  # KeyError naming the missing segment
    last = segs[-1]
    if isinstance(parent, dict):
        number = last.as_int()
        key: Any = number if number is not None and number in parent else last.text
        return parent.pop(key)
    if isinstance(parent, list):
        return parent.pop(int(last.text))
    raise KeyError(f"{path}: {parent_path} holds a {type(parent).__name__}")


def cmd_dump(args: argparse.Namespace) -> int:
    adapter = open_store(args.target, existing=True)
    try:
        document = adapter.load()
    finally:
        adapter.close()
    _print_json(_encoded(document), sys.stdout, None if args.compact else 2)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with _blaming(args.source):
        source = open_store(args.source, existing=True)
    target: SyncStore | None = None
    try:
        target = _open_for_write(args.target)
        holds = target.exists() if isinstance(target, DescribedStore) else bool(target.load())
        if not args.force and holds:
            raise _CommandError(args.target, "the target already holds state; pass --force to "
                                        "replace it")
        size = source.describe().size if isinstance(source, DescribedStore) else None
        show = args.progress == "always" or (
            args.progress == "auto" and sys.stderr.isatty()
            and (size or 0) >= PROGRESS_THRESHOLD)
        bar = _ProgressBar(sys.stderr, size) if show else None
        started = time.perf_counter()
        copied = sync.migrate_storage(source, target, progress=bar, strict=True)
        seconds = time.perf_counter() - started
    finally:
        source.close()
        if target is not None:
            target.close()
    if not copied:
        raise _CommandError(args.source, "holds no state; nothing copied")
    src, dst = redacted(args.source), redacted(args.target)
    if args.json:
        _print_json({"source": src, "target": dst, "bytes": size, "verified": True,
                     "seconds": round(seconds, 3)}, sys.stdout)
    else:
        amount = f"{size:,} bytes" if size is not None else "the state"
        print(f"migrated {amount} from {src} to {dst} in {seconds:.2f}s (read back and "
              "verified)")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of TARGET at the new DEST; never replaces a state."""
    source = open_store(args.target, existing=True)
    dest: SyncStore | None = None
    try:
        with _blaming(args.dest):
            dest = _open_for_write(args.dest)
        holds = dest.exists() if isinstance(dest, DescribedStore) else bool(dest.load())
        if holds:
            raise _CommandError(args.dest, "already holds state; a backup never replaces "
                                           "one (name a new file, key or table)")
        whole = getattr(source, "backup_to", None)  # the medium's own copy (SQLite)
        path = getattr(dest, "path", None)
        if callable(whole) and _kind(dest) == _kind(source) and isinstance(path, str):
            dest.close()
            whole(path)
            how = "whole database, online backup"
            reread = open_store(args.dest, existing=True)
            try:
                reread.load()  # the copy decodes
            finally:
                reread.close()
        else:
            sync.migrate_storage(source, dest, strict=True)
            how = "state copied, read back and compared"
    finally:
        source.close()
        if dest is not None:
            dest.close()
    src, dst = redacted(args.target), redacted(args.dest)
    if args.json:
        _print_json({"target": src, "dest": dst, "method": how}, sys.stdout)
    else:
        print(f"backed up {src} to {dst} ({how})")
    return 0


def cmd_migrate_schema(args: argparse.Namespace) -> int:
    if args.to < 0:
        raise UsageError(f"--to must be a schema version >= 0, not {args.to}")
    open_store(args.target, existing=True).close()  # nothing stored: exit 1, create nothing
    steps = _load_migrations(args.migrations)
    plan = sync.migrate_schema(args.target, args.to, steps, dry_run=args.dry_run)
    changes = [{"path": path, "change": kind} for path, kind in plan.changes()]
    if args.json:
        _print_json({"target": redacted(args.target), "from_version": plan.from_version,
                     "to_version": plan.to_version, "dry_run": args.dry_run,
                     "written": plan.written, "backup": plan.backup and redacted(plan.backup),
                     "changes": changes}, sys.stdout)
        return 0
    if not plan.needed:
        print(f"{redacted(args.target)} is at schema version {plan.from_version}: nothing to do")
        return 0
    done = ("dry run, nothing written" if args.dry_run else
            f"written; backup: {redacted(plan.backup) if plan.backup else 'none'}")
    print(f"schema version {plan.from_version} -> {plan.to_version}: {len(changes)} "
          f"change(s) ({done})")
    for change in changes:
        print(f"  {change['change']:8} {'.'.join(map(str, change['path']))}")
    return 0


def _load_migrations(spec: str) -> dict[Any, Any]:
    """``module[:attribute]`` (default attribute ``MIGRATIONS``) -> the steps it holds."""
    module_name, _, attribute = spec.partition(":")
    # The working directory is importable for this import only, and last: a file there
    # named like an installed module (sqlite_utils.py) must never run instead (issue 21).
    here = os.getcwd()
    sys.path.append(here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import migrations module {module_name!r}: {exc}") from exc
    finally:
        del sys.path[len(sys.path) - 1 - sys.path[::-1].index(here)]  # the one we added
    found = getattr(module, attribute or "MIGRATIONS", None)
    if not isinstance(found, Mapping):
        raise UsageError(f"{module_name} has no {attribute or 'MIGRATIONS'} dict "
                         "({version: fn(document) -> document})")
    return dict(found)  # steps above --to are ignored, as at start (check_migrations)


class _ProgressBar:
    """``[#####.....] 2/3 verifying the copy (12.0 MB)`` on stderr, redrawn on a terminal."""

    def __init__(self, out: TextIO, size: int | None) -> None:
        self.out, self.size = out, size
        self.tty = out.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        width = 24
        filled = width * done // total
        amount = f" ({_human_bytes(self.size)})" if self.size is not None else ""
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what}{amount}"
        if self.tty:
            self.out.write("\r" + line.ljust(72) + ("\n" if done == total else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


def _kind(adapter: object) -> str:
    return Capabilities.of(adapter).kind


def cmd_backups(args: argparse.Namespace) -> int:
    adapter = open_store(args.target, existing=True)
    try:
        if not isinstance(adapter, BackupStore):
            note = f"the {_kind(adapter)} backend keeps no backup files"
            if args.json:
                _print_json({"target": redacted(args.target), "backups": [],
                             "note": note}, sys.stdout)
            else:
                print(note)
            return 0
        rows = []
        for info in adapter.list_backups():
            row = info.to_dict()
            try:
                adapter.read_backup(info.index)
                row["readable"], row["problem"] = True, None
            except PersistenceError as exc:
                row["readable"], row["problem"] = False, str(exc)
            rows.append(row)
    finally:
        adapter.close()
    if args.json:
        _print_json({"target": redacted(args.target), "backups": rows}, sys.stdout)
    elif not rows:
        print(f"no backups next to {args.target}")
    else:
        for row in rows:
            status = "ok" if row["readable"] else "UNREADABLE"
            print(f"[{row['index']}] {row['path']}  {row['size']:,} bytes  "
                  f"{row['modified']}  {status}")
    return 0


def cmd_restore_backup(args: argparse.Namespace) -> int:
    adapter = open_store(args.target, existing=True)
    try:
        if not isinstance(adapter, BackupStore):
            raise _CommandError(args.target, f"the {_kind(adapter)} backend keeps no "
                                             "backups; only JSON files do")
        found = {b.index: b for b in adapter.list_backups()}
        if args.n not in found:
            have = ", ".join(str(i) for i in sorted(found)) or "none"
            raise _CommandError(args.target, f"no backup {args.n} (available: {have})")
        path = Path(found[args.n].path)
        try:
            restored = adapter.read_backup(args.n)  # never through a link or a FIFO
        except PersistenceError as exc:
            raise _CommandError(args.target, f"backup {args.n} ({path}) is unreadable: "
                                             f"{exc}") from None
        with _lock_note(args.command, args.target), sync.transaction(adapter) as state:
            state.clear()  # locked; the current file rotates to .bak
            state.update(restored)
    finally:
        adapter.close()
    if args.json:
        _print_json({"target": redacted(args.target), "restored": args.n,
                     "from": str(path)}, sys.stdout)
    else:
        print(f"restored backup {args.n} ({path.name}) into {args.target}; the state it "
              "replaced is now the newest backup")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    adapter = open_store(args.target, existing=True)
    try:
        checks, state = _verify_medium(adapter)
    finally:
        adapter.close()
    if state is not None:
        _verify_shape(state, checks)
    if not state and _kind(adapter) == "sqlite":
        checks.append(Check("copied without its -wal?", False, WAL_NOTE))
    problems = [c for c in checks if not c.ok]
    if args.json:
        _print_json({"target": redacted(args.target), "ok": not problems,
                     "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail}
                                for c in checks]}, sys.stdout)
    else:
        for name, ok, detail in checks:
            print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
        count = len(problems)
        print(f"{redacted(args.target)}: "
              + (f"{count} problem{'s' if count != 1 else ''}" if problems
                 else "no problems found"))
    return 1 if problems else 0


def _verify_medium(adapter: SyncStore) -> tuple[list[Check], dict[str, Any] | None]:
    """The adapter's own checks of the stored bytes (no fallback to a backup)."""
    if isinstance(adapter, DescribedStore):
        return adapter.check()
    try:
        return [Check("state decodes", True)], adapter.load()
    except StateCorruptedError as exc:
        return [Check("state decodes", False, str(exc))], None


def _verify_shape(state: dict[str, Any], checks: list[Check]) -> None:
    """Check what the store will accept on restore, and the exact round trip."""
    checks.append(Check("state present", bool(state),
                        "" if state else "nothing stored (the state is empty)"))
    extra = sorted(str(k) for k in state if k not in _WRITABLE_SLICES)
    checks.append(Check("top-level slices", True,
                        "ignored on restore: " + ", ".join(extra) if extra else ""))
    for name in _WRITABLE_SLICES:
        value = state.get(name, {})
        checks.append(Check(f"{name} is a dict", isinstance(value, dict),
                            "" if isinstance(value, dict) else f"it is {_a(value)}"))
    views = state.get("persistent_views", {})
    if isinstance(views, dict):
        bad = [f"{format_path([k])} ({problem})" for k, v in views.items()
               if (problem := entry_problem(v)) is not None]
        checks.append(Check("persistent view entries", not bad,
                            _count(len(views), "entry", "entries") if not bad else
                            "would not restore: " + ", ".join(bad[:10])
                            + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")))
    serializer = StateSerializer()
    try:
        same = serializer.deserialize(serializer.serialize(state)) == state
        checks.append(Check("serializer round trip", same, "" if same else "values change"))
    except (TypeError, ValueError) as exc:
        checks.append(Check("serializer round trip", False, str(exc)))


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def cmd_doctor(args: argparse.Namespace) -> int:
    from cascadeui._doctor import check_panels

    findings = check_panels(args.target, modules=args.module or ())
    if args.json:
        _print_json({"target": redacted(args.target) if args.target else None,
                     "ok": not findings, "findings": findings}, sys.stdout)
    else:
        for line in findings:
            print(line)
        print(f"{_count(len(findings), 'finding', 'findings')}" if findings
              else "no findings")
    return 1 if findings else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cascadeui.demo import main as demo_main

    if args.json:
        raise UsageError("demo has no machine-readable output; run it without --json")
    demo_main(["--dir", str(args.dir)] if args.dir is not None else [])
    return 0


# -- plumbing ----------------------------------------------------------------------------


class _CommandError(Exception):
    """A failure the command detected itself; exit code 1 with this message."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(message)
        self.target = target


def _parser() -> argparse.ArgumentParser:
    debug_only = argparse.ArgumentParser(add_help=False)
    debug_only.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show tracebacks and debug logging")
    common = argparse.ArgumentParser(add_help=False, parents=[debug_only])
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    parser = argparse.ArgumentParser(
        prog="cascadeui", parents=[common],
        description="Inspect, edit, migrate and check cascadeui state. TARGET is a path or "
                    "URL: state.json, cascadeui.db, sqlite:///x.db, redis://host/0?key=k, "
                    "postgresql://user@host/db?table=t")
    parser.add_argument("--version", action="version", version=f"cascadeui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], text: str,
            *arguments: tuple[str, dict[str, Any]],
            json_output: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common if json_output else debug_only],
                           help=text, description=text)
        p.set_defaults(usage=p.print_usage)
        for flag, options in arguments:
            p.add_argument(flag, **options)
        p.set_defaults(func=fn)
        return p

    target = ("target", {"metavar": "TARGET"})
    path = ("path", {"metavar": "PATH",
                     "help": 'dotted key path, e.g. application.scores.123 or '
                             'application."key.with.dots"'})
    add("inspect", cmd_inspect, "summarise the stored state", target)
    add("get", cmd_get, "print the value at PATH as JSON", target, path)
    add("set", cmd_set, "set PATH to a JSON VALUE (locked read-modify-write)", target, path,
        ("value", {"metavar": "VALUE", "help": "JSON; serializer tags such as "
                                               '{"$set": [1]} are honoured'}))
    add("delete", cmd_delete, "remove the key at PATH (locked read-modify-write)", target,
        path)
    dump = add("dump", cmd_dump, "print the whole state as JSON", target)
    dump.add_argument("--compact", action="store_true", help="one line, no indentation")
    migrate = add("migrate", cmd_migrate, "copy the state to another backend and verify it",
                  ("source", {"metavar": "SOURCE"}), target)
    migrate.add_argument("--force", action="store_true",
                         help="replace a target that already holds state")
    migrate.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                         help="progress bar on stderr (auto: a terminal and >= 1 MB)")
    add("backup", cmd_backup, "copy TARGET's state to a new DEST safely while bots run (a "
                              "SQLite database whole, with its -wal, by the online backup "
                              "API)", target, ("dest", {"metavar": "DEST"}))
    add("backups", cmd_backups, "list the backup generations of a JSON state file", target)
    add("restore-backup", cmd_restore_backup,
        "make backup N (0 = the newest) the current state; the current one becomes backup 0",
        target, ("n", {"metavar": "N", "type": int, "nargs": "?", "default": 0,
                       "help": "which backup: 0 (the default) is the newest, 1 the one "
                               "before it...; `cascadeui backups TARGET` lists them"}))
    add("verify", cmd_verify, "check the stored state's integrity (exit 1 on problems)",
        target)
    schema = add("migrate-schema", cmd_migrate_schema,
                 "upgrade the stored state to schema version N with your migrations (under "
                 "the write lock, keeping a backup)", target)
    schema.add_argument("--to", type=int, required=True, metavar="N",
                        help="the schema version to reach")
    schema.add_argument("--migrations", required=True, metavar="MODULE[:ATTR]",
                        help="importable module holding {version: fn} (default attribute "
                             "MIGRATIONS)")
    schema.add_argument("--dry-run", action="store_true",
                        help="show what would change and write nothing")
    doctor = add("doctor", cmd_doctor, "find what would break panels after a restart: "
                 "classes (with --module) and TARGET's stored panels; exit 1 on findings",
                 ("target", {"metavar": "TARGET", "nargs": "?", "default": None}))
    doctor.add_argument("--module", action="append", metavar="MODULE",
                        help="import MODULE first (where panel classes are defined); "
                             "repeatable")
    demo = add("demo", cmd_demo, "run the README walkthrough in a scratch directory (no "
                                 "existing state is touched)", json_output=False)
    demo.add_argument("--dir", metavar="DIR", type=Path, default=None,
                      help="run in DIR instead (kept; refused when it holds a state)")
    return parser


def _target_of(args: argparse.Namespace) -> str:
    return str(getattr(args, "target", None) or getattr(args, "source", None) or "")


def _error_line(args: argparse.Namespace, exc: BaseException, target: str) -> str:
    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    else:
        message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.strerror \
            and exc.strerror not in message:
        message = f"{message} ({exc.strerror})"
    for candidate in (target, _target_of(args)):
        password = urlsplit(candidate).password if "://" in candidate else None
        if password:
            message = message.replace(password, "***")
    where = redacted(target) if target else ""
    location = exc.location if isinstance(exc, PersistenceError) else None
    if location and location.startswith(where.split("?", 1)[0]):
        where = location  # more precise: the Redis key, the absolute path
    # Adapters start their messages with the location: do not print it twice.
    prefixes = [p for p in (location, where, target and str(Path(target).absolute())) if p]
    for prefix in prefixes:
        if message.startswith(f"{prefix}: "):
            message = message[len(prefix) + 2:]
            break
    return f"cascadeui {args.command}{' ' + where if where else ''}: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Flags may come before or after the command; absent everywhere means off.
    args.debug = getattr(args, "debug", False)
    args.json = getattr(args, "json", False)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="cascadeui: %(levelname)s: %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _refuse_directories(args)
        return func(args)
    except KeyboardInterrupt:
        print("cascadeui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cascadeui dump x.db | head`: the reader left; say nothing more, fail quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        target = _target_of(args)
        if isinstance(exc, _BlamedError):  # an error of another argument (the SOURCE, DEST)
            target, exc = exc.target, exc.error
        elif isinstance(exc, _CommandError):
            target = exc.target
        if args.debug:
            traceback.print_exception(exc)
        code = 2 if isinstance(exc, (UsageError, ConfigurationError)) else 1
        if code == 2:
            getattr(args, "usage", parser.print_usage)(sys.stderr)
        line = _error_line(args, exc, target)
        if args.json:  # a script parses stdout: the error is JSON there too
            _print_json({"ok": False, "command": args.command, "exit_code": code,
                         "target": redacted(target) if target else None,
                         "error": type(exc).__name__.lstrip("_"),
                         "message": line.split(": ", 1)[1] if ": " in line else line},
                        sys.stdout)
        print(line, file=sys.stderr)
        return code


class _BlamedError(Exception):
    """Internal: ``error`` belongs to argument ``target``, not to the command's TARGET."""

    def __init__(self, target: str, error: Exception) -> None:
        super().__init__(str(error))
        self.target, self.error = target, error


@contextlib.contextmanager
def _blaming(target: str) -> Iterator[None]:
    """Errors raised inside name ``target`` (e.g. ``migrate``'s SOURCE)."""
    try:
        yield
    except (_BlamedError, _CommandError):
        raise
    except Exception as exc:
        raise _BlamedError(target, exc) from exc


def _refuse_directories(args: argparse.Namespace) -> None:
    """A directory given where a state file belongs is a usage error (exit 2) for every
    command and file kind alike (issue 23: ``x.db`` and ``x.json`` exited differently)."""
    for given in (getattr(args, "target", None), getattr(args, "source", None),
                  getattr(args, "dest", None)):
        if not isinstance(given, str) or "://" in given or not os.path.isdir(given):
            continue
        raise _BlamedError(given, UsageError(
            f"{Path(given).absolute()} is a directory; name a state file or database "
            f"inside it, e.g. {Path(given) / 'cascadeui.db'}"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
