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
import json
import logging
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from cascadeui import sync
from cascadeui.adapters import FileStore, RedisStore, SQLiteStore, SyncStore
from cascadeui.errors import ConfigurationError, PersistenceError, StateCorruptedError
from cascadeui.inspection import (
    _human_bytes,
    _medium,
    file_backups,
    format_path,
    get_path,
    inspect,
    open_existing,
    parse_path,
    redacted,
    set_path,
    sqlite_readonly,
)
from cascadeui.serializer import StateSerializer

__all__ = ["main"]

log: logging.Logger = logging.getLogger(__name__)

_WRITABLE_SLICES = ("application", "persistent_views")
#: ``migrate`` shows its progress bar on a terminal from this source size up.
PROGRESS_THRESHOLD = 1 << 20


class UsageError(Exception):
    """A bad argument found after parsing (bad PATH, bad JSON value): exit code 2."""


def _encoded(value: Any) -> Any:
    """``value`` as the JSON the serializer would store (tags for sets, int keys, ...)."""
    return json.loads(StateSerializer().serialize({"v": value}))["v"]


def _decoded(text: str) -> Any:
    """Parse a JSON value, honouring the serializer's tags (``{"$set": [1, 2]}``)."""
    try:
        json.loads(text)  # one whole JSON value, nothing smuggled after it
    except ValueError as exc:
        raise UsageError(f"VALUE is not JSON ({exc}); quote strings: '\"text\"'") from None
    return StateSerializer().deserialize('{"v": ' + text + "}")["v"]


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
    adapter = open_existing(args.target)
    try:
        state = adapter.load()
    finally:
        adapter.close()
    _print_json(_encoded(get_path(state, args.path)), sys.stdout)
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    segs = parse_path(args.path)
    if segs[0].quoted or segs[0].text not in _WRITABLE_SLICES or len(segs) < 2:
        raise UsageError(f"PATH {args.path!r} must start with application. or "
                         "persistent_views. and name a key (other keys are not persisted)")
    value = _decoded(args.value)
    adapter = sync.open_adapter(args.target)
    try:
        with sync.transaction(adapter) as state:
            state.setdefault(segs[0].text, {})
            set_path(state, args.path, value)
    finally:
        adapter.close()
    if args.json:
        _print_json({"target": redacted(args.target), "path": args.path,
                     "value": _encoded(value)}, sys.stdout)
    else:
        print(f"set {args.path} in {redacted(args.target)}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    adapter = open_existing(args.target)
    try:
        document = adapter.load()
    finally:
        adapter.close()
    _print_json(_encoded(document), sys.stdout, None if args.compact else 2)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    source = open_existing(args.source)
    target: SyncStore | None = None
    try:
        target = sync.open_adapter(args.target)
        if not args.force and target.load():
            raise _CommandError(args.target, "the target already holds state; pass --force to "
                                        "replace it")
        size = _medium(source).size
        show = args.progress == "always" or (
            args.progress == "auto" and sys.stderr.isatty()
            and (size or 0) >= PROGRESS_THRESHOLD)
        bar = _ProgressBar(sys.stderr, size) if show else None
        started = time.perf_counter()
        copied = sync._copy(source, target, bar, strict=True)
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


def cmd_backups(args: argparse.Namespace) -> int:
    adapter = open_existing(args.target)
    try:
        if not isinstance(adapter, FileStore):
            note = f"the {type(adapter).__name__} backend keeps no backup files"
            if args.json:
                _print_json({"target": redacted(args.target), "backups": [],
                             "note": note}, sys.stdout)
            else:
                print(note)
            return 0
        rows = []
        for info in file_backups(adapter.path):
            row = info.to_dict()
            row["readable"] = _readable(Path(info.path))
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


def _readable(path: Path) -> bool:
    try:
        StateSerializer().deserialize(path.read_bytes())
    except (OSError, StateCorruptedError):
        return False
    return True


def cmd_restore_backup(args: argparse.Namespace) -> int:
    adapter = open_existing(args.target)
    try:
        if not isinstance(adapter, FileStore):
            raise _CommandError(args.target, f"the {type(adapter).__name__} backend keeps no "
                                        "backups; only JSON files do")
        found = {b.index: b for b in file_backups(adapter.path)}
        if args.n not in found:
            have = ", ".join(str(i) for i in sorted(found)) or "none"
            raise _CommandError(args.target, f"no backup {args.n} (available: {have})")
        path = Path(found[args.n].path)
        try:
            restored = StateSerializer().deserialize(path.read_bytes())
        except StateCorruptedError as exc:
            raise _CommandError(args.target, f"backup {args.n} ({path}) is unreadable: {exc}") \
                from None
        with adapter.transaction() as state:  # locked; the current file rotates to .bak
            state.clear()
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
    checks: list[tuple[str, bool, str]] = []
    adapter = open_existing(args.target)
    try:
        state = _verify_medium(adapter, checks)
    finally:
        adapter.close()
    if state is not None:
        _verify_shape(state, checks)
    problems = [c for c in checks if not c[1]]
    if args.json:
        _print_json({"target": redacted(args.target), "ok": not problems,
                     "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks]},
                    sys.stdout)
    else:
        for name, ok, detail in checks:
            print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
        print(f"{redacted(args.target)}: "
              + (f"{len(problems)} problem(s)" if problems else "no problems found"))
    return 1 if problems else 0


def _verify_medium(adapter: SyncStore, checks: list[tuple[str, bool, str]]
                   ) -> dict[str, Any] | None:
    """Check the stored bytes themselves (no fallback to a backup); return the state."""
    serializer = StateSerializer()
    state: dict[str, Any] | None = None
    if isinstance(adapter, FileStore):
        if adapter.path.exists():
            try:
                state = serializer.deserialize(adapter.path.read_bytes())
                checks.append(("main file decodes", True, str(adapter.path)))
            except StateCorruptedError as exc:
                checks.append(("main file decodes", False, str(exc)))
        else:
            checks.append(("main file exists", False, f"{adapter.path} is missing"))
        for info in file_backups(adapter.path):
            ok = _readable(Path(info.path))
            checks.append((f"backup {info.index} decodes", ok,
                           info.path if ok else f"{info.path} is unreadable"))
        if state is not None:
            with contextlib.suppress(StateCorruptedError):  # "change journal applies" says it
                mismatch = adapter.journal_mismatch()
                checks.append(("change journal belongs to the snapshot", mismatch is None,
                               mismatch or ""))
        return _verify_journal(adapter, state, checks)
    if isinstance(adapter, SQLiteStore):
        conn = sqlite_readonly(adapter.path)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            checks.append(("sqlite integrity_check", result == "ok", str(result)))
            row = conn.execute(f"SELECT data, version FROM {adapter.table} WHERE id = 1"
                               ).fetchone()
        except sqlite3.DatabaseError as exc:
            checks.append(("sqlite readable", False, str(exc)))
            return None
        finally:
            conn.close()
        if row is None:
            checks.append(("state row present", False, "the table holds no state"))
            return None
        try:
            state = serializer.deserialize(row[0])
            checks.append(("state row decodes", True, f"version {row[1]}"))
        except StateCorruptedError as exc:
            checks.append(("state row decodes", False, str(exc)))
        return _verify_journal(adapter, state, checks)
    try:
        state = adapter.load()
        checks.append(("state decodes", True, ""))
    except StateCorruptedError as exc:
        checks.append(("state decodes", False, str(exc)))
        return None
    if isinstance(adapter, RedisStore):
        try:
            adapter.version()
            checks.append(("version counter", True, ""))
        except (StateCorruptedError, ValueError) as exc:
            checks.append(("version counter", False, str(exc)))
    if not state:
        checks.append(("state present", False, "nothing stored"))
    return state


def _verify_journal(adapter: SyncStore, snapshot: dict[str, Any] | None,
                    checks: list[tuple[str, bool, str]]) -> dict[str, Any] | None:
    """Apply the change journal to a snapshot that decoded; the state a load returns."""
    if snapshot is None:
        return None
    try:
        state = adapter.load()
    except StateCorruptedError as exc:
        checks.append(("change journal applies", False, str(exc)))
        return None
    checks.append(("change journal applies", True,
                   "" if state == snapshot else "the journal holds changes after the snapshot"))
    return state


def _verify_shape(state: dict[str, Any], checks: list[tuple[str, bool, str]]) -> None:
    """Check what the store will accept on restore, and the exact round trip."""
    extra = sorted(str(k) for k in state if k not in _WRITABLE_SLICES)
    checks.append(("top-level slices", True,
                   "ignored on restore: " + ", ".join(extra) if extra else ""))
    for name in _WRITABLE_SLICES:
        value = state.get(name, {})
        checks.append((f"{name} is a dict", isinstance(value, dict),
                       "" if isinstance(value, dict) else f"it is a {type(value).__name__}"))
    views = state.get("persistent_views", {})
    if isinstance(views, dict):
        bad = [format_path([k]) for k, v in views.items() if not _view_ok(v)]
        checks.append(("persistent view entries", not bad,
                       f"{len(views)} entries" if not bad else
                       "malformed: " + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")))
    serializer = StateSerializer()
    try:
        same = serializer.deserialize(serializer.serialize(state)) == state
        checks.append(("serializer round trip", same, "" if same else "values change"))
    except (TypeError, ValueError) as exc:
        checks.append(("serializer round trip", False, str(exc)))


def _view_ok(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        return False
    for field in ("message_id", "channel_id", "guild_id", "user_id"):
        value = entry.get(field)
        if value is not None and not (isinstance(value, str) and value.isdigit()) and not (
                isinstance(value, int) and not isinstance(value, bool)):
            return False
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    from cascadeui.demo import main as demo_main

    demo_main()
    return 0


# -- plumbing ----------------------------------------------------------------------------


class _CommandError(Exception):
    """A failure the command detected itself; exit code 1 with this message."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(message)
        self.target = target


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logging")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    parser = argparse.ArgumentParser(
        prog="cascadeui", parents=[common],
        description="Inspect, edit, migrate and check cascadeui state. TARGET is a path or "
                    "URL: state.json, cascadeui.db, sqlite:///x.db, redis://host/0?key=k, "
                    "postgresql://user@host/db?table=t")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], text: str,
            *arguments: tuple[str, dict[str, Any]]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
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
    dump = add("dump", cmd_dump, "print the whole state as JSON", target)
    dump.add_argument("--compact", action="store_true", help="one line, no indentation")
    migrate = add("migrate", cmd_migrate, "copy the state to another backend and verify it",
                  ("source", {"metavar": "SOURCE"}), target)
    migrate.add_argument("--force", action="store_true",
                         help="replace a target that already holds state")
    migrate.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                         help="progress bar on stderr (auto: a terminal and >= 1 MB)")
    add("backups", cmd_backups, "list the backup generations of a JSON state file", target)
    add("restore-backup", cmd_restore_backup,
        "make backup N (0 = newest .bak) the current state; the current one becomes .bak",
        target, ("n", {"metavar": "N", "type": int, "nargs": "?", "default": 0}))
    add("verify", cmd_verify, "check the stored state's integrity (exit 1 on problems)",
        target)
    add("demo", cmd_demo, "run the README walkthrough in the current directory")
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
        return func(args)
    except (UsageError, ConfigurationError) as exc:
        if args.debug:
            traceback.print_exc()
        parser.print_usage(sys.stderr)
        print(_error_line(args, exc, _target_of(args)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cascadeui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cascadeui dump x.db | head`: the reader left; say nothing more, fail quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        target = exc.target if isinstance(exc, _CommandError) else _target_of(args)
        print(_error_line(args, exc, target), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
