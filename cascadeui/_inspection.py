"""State snapshots for Jupyter and terminals: ``cascadeui.inspect(target)``.

A :class:`Snapshot` holds the state read once from a backend plus what the medium says
about it (size, last modified, version, backups). It renders as HTML in Jupyter (a table
of persistent views, the ``application`` slice as a collapsible tree) and as text in a
terminal. Rendering is capped (:data:`MAX_CHILDREN` per container, :data:`MAX_NODES` in
all, :data:`MAX_VIEW_ROWS` views) so a 10 MB state still displays at once.

Also the PATH syntax shared with the CLI (:func:`parse_path`, :func:`format_path`):
dot-separated keys from the top of the state, ``application.scores.123``. A bare segment
of digits addresses an int key (or a list index) and falls back to the string key; a
double-quoted segment is always a string key and may hold dots: ``application."a.b"."7"``.
"""

from __future__ import annotations

import html
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from cascadeui._backends import location_of
from cascadeui._targets import redacted, resolve
from cascadeui.actions import SCHEMA_KEY
from cascadeui.adapters import BackupInfo, DescribedStore
from cascadeui.errors import ConfigurationError
from cascadeui.serializer import format_path

__all__ = [
    "MAX_CHILDREN",
    "MAX_NODES",
    "MAX_VIEW_ROWS",
    "BackupInfo",
    "Snapshot",
    "StateDiff",
    "format_path",
    "get_path",
    "inspect",
    "parse_path",
    "set_path",
]

#: Children shown per container in a rendered tree; the rest are summarised.
MAX_CHILDREN = 50
#: Nodes rendered in one tree in all; beyond it the tree says where to look instead.
MAX_NODES = 1500
#: Persistent-view rows rendered; the rest are counted.
MAX_VIEW_ROWS = 100

_VIEW_COLUMNS = ("key", "class", "guild", "channel", "message", "user")
_VIEW_FIELDS = {  # column -> keys that may hold it (the store writes the first one)
    "class": ("class_name", "class", "view_class"),
    "guild": ("guild_id",),
    "channel": ("channel_id",),
    "message": ("message_id",),
    "user": ("user_id", "owner_id"),
}


# -- PATH syntax --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Seg:
    text: str
    quoted: bool

    def as_int(self) -> int | None:
        if self.quoted or not re.fullmatch(r"-?\d+", self.text):
            return None
        return int(self.text)


def parse_path(text: str) -> list[_Seg]:
    """Split a PATH such as ``application.scores.123`` or ``application."a.b"`` into segments.

    :raises ConfigurationError: an empty segment or an unterminated quote.
    """
    segs: list[_Seg] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            buf, i = [], i + 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise ConfigurationError(f"PATH {text!r}: unterminated quote")
            segs.append(_Seg("".join(buf), True))
            i += 1
        else:
            j = i
            while j < n and text[j] not in '."':
                j += 1
            if j == i:
                raise ConfigurationError(
                    f"PATH {text!r}: empty segment at {i} (write keys with dots in quotes)")
            segs.append(_Seg(text[i:j], False))
            i = j
        if i == n:
            return segs
        if text[i] != ".":
            raise ConfigurationError(f"PATH {text!r}: expected '.' at {i}")
        i += 1


def _lookup(container: Any, seg: _Seg) -> tuple[bool, Any]:
    """(found, key-or-index) for one segment in one container."""
    number = seg.as_int()
    if isinstance(container, Mapping):
        if number is not None and number in container:
            return True, number
        return (seg.text in container), seg.text
    if isinstance(container, (list, tuple)) and number is not None:
        return -len(container) <= number < len(container), number
    return False, seg.text


def get_path(state: Mapping[str, Any], path: str) -> Any:
    """Return the value at PATH in ``state``.

    :raises KeyError: nothing there (the message names the first missing segment).
    """
    segs = parse_path(path)
    node: Any = state
    for depth, seg in enumerate(segs):
        found, key = _lookup(node, seg)
        if not found:
            where = format_path([s.text for s in segs[:depth]]) or "the top"
            raise KeyError(f"{path}: no {seg.text!r} under {where} "
                           f"({_article(node)})")
        node = node[key]
    return node


def set_path(state: dict[str, Any], path: str, value: Any) -> None:
    """Set the value at PATH in ``state`` in place, creating missing dicts on the way.

    A new bare-digits key is created as an int (Discord ids), a quoted one as a string.

    :raises KeyError: a list index out of range.
    :raises TypeError: a value on the way is not a container.
    """
    segs = parse_path(path)
    node: Any = state
    for depth, seg in enumerate(segs):
        last = depth == len(segs) - 1
        found, key = _lookup(node, seg)
        if isinstance(node, dict):
            if not found:
                number = seg.as_int()
                key = number if number is not None else seg.text
                if not last:
                    node[key] = {}
        elif isinstance(node, list):
            if not found:
                raise KeyError(f"{path}: index {seg.text} is out of range")
        else:
            where = format_path([s.text for s in segs[:depth]])
            raise TypeError(f"{path}: {where} holds {_article(node)}, not a container")
        # Any again: node is a dict or a list here, and key is what _lookup found in it.
        container: Any = node
        if last:
            container[key] = value
        else:
            node = container[key]


# -- the snapshot ------------------------------------------------------------------------


class Snapshot:
    """The state of one backend at one moment, for reading, displaying and diffing.

    ``state`` is the whole loaded state; ``to_dict()`` a JSON-friendly summary;
    ``diff(other)`` what changed since another snapshot.
    """

    def __init__(self, state: Mapping[str, Any], *, backend: str, location: str,
                 size: int | None = None, modified: datetime | None = None,
                 version: int | None = None, backups: list[BackupInfo] | None = None,
                 taken_at: datetime | None = None, journal_size: int | None = None,
                 read_from: str | None = None) -> None:
        self.state: dict[str, Any] = dict(state)
        #: Bytes of the change journal, included in ``size`` (None: the medium has none).
        self.journal_size = journal_size
        #: The copy the state was read from when it was not the main one (a backup).
        self.read_from = read_from
        self.backend = backend
        self.location = location
        self.size = size
        self.modified = modified
        self.version = version
        self.backups: list[BackupInfo] = list(backups or [])
        self.taken_at: datetime = taken_at or datetime.now(timezone.utc)

    @property
    def application(self) -> Any:
        """The ``application`` slice (``{}`` when absent), without the schema version."""
        app = self.state.get("application", {})
        if isinstance(app, Mapping) and SCHEMA_KEY in app:
            return {k: v for k, v in app.items() if k != SCHEMA_KEY}
        return app

    @property
    def schema_version(self) -> Any:
        """The stored schema version (0: unversioned); bookkeeping, not application data."""
        app = self.state.get("application", {})
        return app.get(SCHEMA_KEY, 0) if isinstance(app, Mapping) else 0

    @property
    def persistent_views(self) -> Any:
        """The persistent-view registry (``{}`` when absent)."""
        return self.state.get("persistent_views", {})

    def view_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Registry rows of key, class, guild, channel, message and user (first ``limit``)."""
        views = self.persistent_views
        if not isinstance(views, Mapping):
            return []
        rows = []
        for key, entry in itertools.islice(views.items(), limit):
            row: dict[str, Any] = {"key": key}
            for column, names in _VIEW_FIELDS.items():
                row[column] = next((entry[n] for n in names
                                    if isinstance(entry, Mapping) and n in entry), None)
            rows.append(row)
        return rows

    # -- outputs ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (not the whole state: use ``state`` or ``dump``)."""
        app = self.application
        summary: dict[str, Any] = {"type": type(app).__name__, "size": _size(app)}
        if isinstance(app, Mapping):
            summary["keys"] = {format_path([k]): {"type": type(v).__name__, "size": _size(v)}
                               for k, v in itertools.islice(app.items(), 1000)}
        views = self.persistent_views
        return {
            "backend": self.backend,
            "location": self.location,
            "size": self.size,
            "modified": self.modified.isoformat() if self.modified else None,
            "version": self.version,
            "schema_version": _jsonable(self.schema_version),
            "taken_at": self.taken_at.isoformat(),
            "persistent_views": {
                "count": len(views) if isinstance(views, Mapping) else 0,
                "rows": [{k: _jsonable(v) for k, v in row.items()}
                         for row in self.view_rows(1000)],
            },
            "application": summary,
            "backups": [b.to_dict() for b in self.backups],
            "journal_size": self.journal_size,
            "read_from": self.read_from,
        }

    def diff(self, other: Snapshot | Mapping[str, Any]) -> StateDiff:
        """What changed from this snapshot to ``other`` (a newer snapshot or a state)."""
        new = other.state if isinstance(other, Snapshot) else dict(other)
        result = StateDiff()
        _diff(self.state, new, (), result)
        return result

    def _header(self) -> list[tuple[str, str]]:
        size = _human_bytes(self.size)
        if self.journal_size and self.size is not None:
            size += (f" (snapshot {_human_bytes(self.size - self.journal_size)} + change "
                     f"journal {_human_bytes(self.journal_size)})")
        read = [("read from", f"{self.read_from} (the main copy is missing or unreadable; "
                              "the size and times below are the main copy's)")
                ] if self.read_from else []
        return [
            ("backend", self.backend),
            ("location", self.location),
            *read,
            ("size", size),
            ("last modified", _when(self.modified)),
            ("version", "n/a" if self.version is None else str(self.version)),
            ("schema version", str(self.schema_version)),
            ("snapshot taken", _when(self.taken_at)),
        ]

    def __repr__(self) -> str:
        lines = [f"<cascadeui Snapshot of {self.backend} {self.location}>"]
        lines += [f"  {name}: {value}" for name, value in self._header()[2:]]
        views = self.persistent_views
        count = len(views) if isinstance(views, Mapping) else 0
        lines.append(f"  persistent views: {count}")
        for row in self.view_rows(20):
            # The key in full (it is what `cascadeui get` needs), the other columns cut.
            # A panel without an owner shows no user= column (anyone may click it).
            lines.append("    " + "  ".join(
                f"{c}={row[c] if c == 'key' else _short(row[c], 40)}" for c in _VIEW_COLUMNS
                if c != "user" or row[c] is not None))
        if count > 20:
            lines.append(f"    ... {count - 20} more")
        app = self.application
        lines.append(f"  application: {_type_size(app)}")
        if isinstance(app, Mapping):
            for key, value in itertools.islice(app.items(), 30):
                lines.append(f"    {format_path([key])}: {_type_size(value)}"
                             + ("" if _is_container(value) else f" = {_short(value, 60)}"))
            if len(app) > 30:
                lines.append(f"    ... {_count(len(app) - 30, 'more key')}")
        if self.backups:
            lines.append("  backups:")
            lines += [f"    [{b.index}] {b.path} ({_human_bytes(b.size)}, {_when(b.modified)})"
                      for b in self.backups]
        else:
            lines.append("  backups: none")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        out = ['<div class="cascadeui-snapshot">',
               f"<h4>cascadeui snapshot: {e(self.backend)}</h4>",
               '<table class="cascadeui-meta">']
        out += [f"<tr><th style='text-align:left'>{e(k)}</th><td>{e(v)}</td></tr>"
                for k, v in self._header()]
        out.append("</table>")
        views = self.persistent_views
        count = len(views) if isinstance(views, Mapping) else 0
        out.append(f"<h5>persistent views ({count})</h5>")
        if count:
            out.append('<table class="cascadeui-views"><tr>'
                       + "".join(f"<th>{c}</th>" for c in _VIEW_COLUMNS) + "</tr>")
            for row in self.view_rows(MAX_VIEW_ROWS):
                out.append("<tr>" + "".join(
                    f"<td>{e(str(row[c]) if c == 'key' else _short(row[c], 60))}</td>"
                                            for c in _VIEW_COLUMNS) + "</tr>")
            out.append("</table>")
            if count > MAX_VIEW_ROWS:
                out.append(f"<p>... {count - MAX_VIEW_ROWS} more views "
                           "(see <code>snapshot.persistent_views</code>)</p>")
        out.append("<h5>application</h5>")
        budget = [MAX_NODES]
        out.append('<ul class="cascadeui-tree" style="list-style:none;padding-left:0">')
        _tree_html("application", self.application, 0, budget, out)
        out.append("</ul>")
        if budget[0] <= 0:
            out.append("<p>display limit reached: read <code>snapshot.state</code> or "
                       "<code>cascadeui get TARGET PATH</code> for the rest</p>")
        out.append("<h5>backups</h5>")
        if self.backups:
            out.append("<table class='cascadeui-backups'><tr><th>N</th><th>file</th>"
                       "<th>size</th><th>modified</th></tr>")
            out += [f"<tr><td>{b.index}</td><td>{e(b.path)}</td><td>{_human_bytes(b.size)}"
                    f"</td><td>{e(_when(b.modified))}</td></tr>" for b in self.backups]
            out.append("</table>")
        else:
            note = "" if self.backend == "file" else f" (the {self.backend} backend keeps none)"
            out.append(f"<p>none{e(note)}</p>")
        out.append("</div>")
        return "\n".join(out)


def _tree_html(label: Any, value: Any, depth: int, budget: list[int], out: list[str]) -> None:
    e = html.escape
    budget[0] -= 1
    name = e(format_path([label]) if depth else str(label))
    kind = f"<i>{e(type(value).__name__)}</i>"
    if not _is_container(value):
        out.append(f"<li><code>{name}</code>: {e(_short(value, 80))} {kind}</li>")
        return
    count = len(value)
    unit = "key" if isinstance(value, Mapping) else "item"
    opened = " open" if depth == 0 else ""
    out.append(f"<li><details{opened}><summary><code>{name}</code> {kind} "
               f"&middot; {_count(count, unit)}</summary>"
               '<ul style="list-style:none;padding-left:1.2em">')
    if isinstance(value, (set, frozenset)):  # members have no index: no labels
        members = sorted(value, key=repr)[:MAX_CHILDREN]
        for member in members:
            budget[0] -= 1
            out.append(f"<li>{e(_short(member, 80))} <i>{e(type(member).__name__)}</i></li>")
        shown = len(members)
    else:
        items: Iterator[tuple[Any, Any]] = (
            iter(value.items()) if isinstance(value, Mapping) else enumerate(value))
        shown = 0
        for key, child in itertools.islice(items, MAX_CHILDREN):
            if budget[0] <= 0:
                break
            _tree_html(key, child, depth + 1, budget, out)
            shown += 1
    if shown < count:
        out.append(f"<li>... {count - shown:,} more {unit}s</li>")
    out.append("</ul></details></li>")


# -- diffs -------------------------------------------------------------------------------


@dataclass
class StateDiff:
    """Changes between two states, as key paths: ``added``, ``removed``, ``changed``."""

    added: list[tuple[tuple[Any, ...], Any]] = field(default_factory=list)
    removed: list[tuple[tuple[Any, ...], Any]] = field(default_factory=list)
    changed: list[tuple[tuple[Any, ...], Any, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def __len__(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)

    def lines(self, limit: int = 200) -> list[str]:
        """``+ path: value``, ``- path: value``, ``~ path: old -> new``; at most ``limit``."""
        out = [f"+ {format_path(p)}: {_short(v, 60)}" for p, v in self.added]
        out += [f"- {format_path(p)}: {_short(v, 60)}" for p, v in self.removed]
        out += [f"~ {format_path(p)}: {_short(a, 40)} -> {_short(b, 40)}"
                for p, a, b in self.changed]
        if len(out) > limit:
            out = [*out[:limit], f"... {len(out) - limit} more changes"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: PATH strings and short value reprs."""
        return {
            "added": {format_path(p): _short(v, 200) for p, v in self.added},
            "removed": {format_path(p): _short(v, 200) for p, v in self.removed},
            "changed": {format_path(p): [_short(a, 200), _short(b, 200)]
                        for p, a, b in self.changed},
        }

    def __repr__(self) -> str:
        if not self:
            return "<StateDiff: no changes>"
        return f"<StateDiff: {len(self)} changes>\n" + "\n".join(self.lines(50))

    def _repr_html_(self) -> str:
        if not self:
            return "<p>no changes</p>"
        rows = "".join(f"<li><code>{html.escape(line)}</code></li>" for line in self.lines())
        return f"<p>{len(self)} changes</p><ul>{rows}</ul>"


def _diff(old: Any, new: Any, path: tuple[Any, ...], out: StateDiff) -> None:
    if old is new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key, value in old.items():
            if key not in new:
                out.removed.append(((*path, key), value))
            else:
                _diff(value, new[key], (*path, key), out)
        out.added.extend(((*path, k), v) for k, v in new.items() if k not in old)
    elif type(old) is not type(new) or old != new:
        out.changed.append((path, old, new))


# -- helpers -----------------------------------------------------------------------------


def _is_container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple, set, frozenset))


def _size(value: Any) -> int | None:
    return len(value) if _is_container(value) or isinstance(value, str) else None


def _count(n: int, unit: str) -> str:
    """``1 key``, ``2 keys``, ``1,000 items``."""
    return f"{n:,} {unit}" + ("" if n == 1 else "s")


def _article(value: Any) -> str:
    """``a dict``, ``an int``: the type of ``value`` with its article."""
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _type_size(value: Any) -> str:
    size = _size(value)
    if size is None:
        return type(value).__name__
    unit = "key" if isinstance(value, Mapping) else "char" if isinstance(value, str) else "item"
    return f"{type(value).__name__}, {_count(size, unit)}"


def _display(value: Any) -> str:
    """How a value reads in a table or tree: dates as ISO 8601, sets without order."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        inner = ", ".join(sorted((_display(v) if isinstance(v, (datetime, date)) else repr(v))
                                 for v in value))
        return "{" + inner + "}" if value else "set()"
    return repr(value)


def _short(value: Any, limit: int) -> str:
    text = "" if value is None else value if isinstance(value, str) else _display(value)
    if _is_container(value) and len(text) > limit:
        return f"<{_type_size(value)}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _human_bytes(size: int | None) -> str:
    if size is None:
        return "n/a"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _when(moment: datetime | None) -> str:
    return "n/a" if moment is None else moment.isoformat(timespec="seconds")


# -- the entry point ---------------------------------------------------------------------


def inspect(target: Any) -> Snapshot:
    """Read ``target`` once and return a :class:`Snapshot` of it.

    :param target: a backend, a sync adapter, a path or URL (which must hold a state:
        inspecting never creates a file), or a plain state dict.
    :raises StateNotFoundError: a path or URL that holds no state (a ``FileNotFoundError``).
    :raises PersistenceError: the state cannot be read (corrupt, server down).
    """
    taken = datetime.now(timezone.utc)
    if isinstance(target, Mapping):
        return Snapshot(target, backend="memory", location="<in memory>", taken_at=taken)
    resolved = resolve(target, existing=True)
    adapter = resolved.adapter
    try:
        if adapter is None:  # a custom async backend: read on cascadeui's private loop
            from cascadeui.sync import load_state

            where = location_of(target)
            return Snapshot(load_state(resolved.backend), backend=type(target).__name__,
                            location=redacted(where), taken_at=taken)
        return _snapshot_of(adapter, adapter.load(), taken)
    finally:
        if resolved.owned and adapter is not None:
            adapter.close()


def _snapshot_of(adapter: Any, state: dict[str, Any], taken: datetime) -> Snapshot:
    """The snapshot of a loaded state, with what the adapter says about its medium."""
    if not isinstance(adapter, DescribedStore):  # a custom sync adapter
        location = location_of(adapter)
        return Snapshot(state, backend=type(adapter).__name__, location=redacted(location),
                        taken_at=taken)
    info = adapter.describe()  # after the load: it says which copy the load read
    return Snapshot(state, backend=info.kind, location=redacted(info.location),
                    size=info.size, modified=info.modified, version=info.version,
                    backups=list(info.backups), taken_at=taken,
                    journal_size=info.journal_size, read_from=info.read_from)
