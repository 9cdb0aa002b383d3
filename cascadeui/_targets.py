"""From a target to the store that serves it: the one registry of URL schemes.

A *target* is what a user hands to ``backend_from_url``, :mod:`cascadeui.sync`,
``cascadeui.inspect`` or the CLI: a path or URL string, a backend, or a synchronous
adapter. :func:`resolve` decides which it is, once, for all of them; :data:`SCHEMES` and
:data:`SUFFIXES` say which backend a string names. This module and ``adapters/`` are the
only places that name concrete adapters: everything else talks to the
:class:`~cascadeui.adapters.SyncStore` / :class:`~cascadeui.adapters.DescribedStore`
contract. A new backend is one line in :data:`SCHEMES` (and one in :data:`SUFFIXES` if
it has a file suffix).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._backends import (
    AsyncBackend,
    FileStorageBackend,
    MemoryBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteBackend,
    StorageBackend,
    as_backend,
    is_adapter,
    location_of,
)
from .adapters import DescribedStore, SyncStore, redact_url
from .errors import ConfigurationError, StateNotFoundError

__all__ = [
    "Resolved",
    "SCHEMES",
    "SUFFIXES",
    "backend_for",
    "open_store",
    "redacted",
    "require_state",
    "resolve",
]

#: ``builder(text, tools)``: the backend for a URL or path; ``tools`` is True for scripts
#: and the CLI (a JSON file then keeps every backup generation that already exists).
Builder = Callable[[str, bool], AsyncBackend[Any]]


def _redis(text: str, tools: bool) -> AsyncBackend[Any]:
    parts = urlsplit(text)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    key = query.pop("key", "cascadeui:state")
    ttl_text = query.pop("ttl", None)
    try:
        ttl = int(ttl_text) if ttl_text else None
    except ValueError:
        raise ConfigurationError(
            f"ttl in {redact_url(text)} must be whole seconds, not {ttl_text!r}") from None
    plain = urlunsplit(parts._replace(query=urlencode(query)))
    return RedisBackend(plain, key=key, ttl=ttl)


def _sqlite(text: str, tools: bool) -> AsyncBackend[Any]:
    if "://" not in text:
        return SQLiteBackend(text)
    path = text[len("sqlite:///"):] if text.lower().startswith("sqlite:///") else ""
    if not path:
        raise ConfigurationError(f"{text!r}: write sqlite:///relative.db or sqlite:////abs.db")
    return SQLiteBackend(unquote(path))


def _postgres(text: str, tools: bool) -> AsyncBackend[Any]:
    parts = urlsplit(text)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    tables = [v for k, v in pairs if k == "table"]
    rest = urlencode([(k, v) for k, v in pairs if k != "table"])
    return PostgresBackend(urlunsplit(parts._replace(query=rest)),
                           table=tables[-1] if tables else "cascadeui_state")


def _memory(text: str, tools: bool) -> AsyncBackend[Any]:
    name = unquote(text.split("://", 1)[1])
    if not name:
        raise ConfigurationError("memory:// needs a name: memory://NAME")
    return MemoryBackend(name)


def _file(text: str, tools: bool) -> AsyncBackend[Any]:
    path = unquote(urlsplit(text).path) if "://" in text else text
    return FileStorageBackend(path, backups=None if tools else 1)


#: URL scheme -> backend builder.
SCHEMES: dict[str, Builder] = {
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "sqlite": _sqlite,
    "file": _file,
    "postgresql": _postgres,
    "postgres": _postgres,
    "memory": _memory,
}
#: File suffix of a plain path -> backend builder.
SUFFIXES: dict[str, Builder] = {
    ".json": _file,
    ".db": _sqlite,
    ".sqlite": _sqlite,
    ".sqlite3": _sqlite,
}


def backend_for(url: str | os.PathLike[str], *, tools: bool = False) -> AsyncBackend[Any]:
    """The backend a path or URL names (see :func:`cascadeui.persistence.backend_from_url`).

    :param tools: built for a script or the CLI: a JSON file keeps every backup generation
        that already exists next to it (at least one).
    :raises ConfigurationError: the string names no supported backend.
    """
    text = os.fspath(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        builder = SCHEMES.get(scheme)
        if builder is None:
            raise ConfigurationError(
                f"unsupported URL scheme {scheme!r} in {redact_url(text)}: use "
                + ", ".join(f"{s}://" for s in SCHEMES) + ", or a path ending in "
                + "/".join(SUFFIXES))
        return builder(text, tools)
    builder = SUFFIXES.get(Path(text).suffix.lower())
    if builder is None:
        raise ConfigurationError(
            f"cannot tell the backend of {text!r}: name a file ending in "
            + "/".join(SUFFIXES) + ", or use a URL: " + ", ".join(f"{s}://" for s in SCHEMES))
    return builder(text, tools)


class Resolved(NamedTuple):
    """What a target turned out to be."""

    #: A synchronous adapter to call directly (None for an async-only custom backend).
    adapter: SyncStore | None
    #: The target as an async backend (the adapter wrapped, or the custom backend).
    backend: StorageBackend
    #: Built here from a string: the caller closes it.
    owned: bool


def resolve(target: Any, *, existing: bool = False, tools: bool = True) -> Resolved:
    """Decide what ``target`` is: a path/URL, a backend, a sync adapter, a custom backend.

    :param existing: a string must name a store that already holds a state (read-only
        tools: a typo never creates an empty database).
    :param tools: a string is opened for a script or the CLI (see :func:`backend_for`);
        False for a running bot (``setup_persistence``).
    :raises StateNotFoundError: ``existing`` and nothing is stored there.
    :raises ConfigurationError: a string that names no backend.
    :raises TypeError: anything else.
    """
    if isinstance(target, (str, os.PathLike)):
        backend = backend_for(target, tools=tools)
        adapter: SyncStore = backend.store
        if existing:
            try:
                require_state(adapter)
            except BaseException:
                adapter.close()
                raise
        return Resolved(adapter, backend, True)
    if isinstance(target, AsyncBackend):
        return Resolved(target.store, target, False)
    if is_adapter(target):
        return Resolved(cast(SyncStore, target), as_backend(target), False)
    if isinstance(target, StorageBackend):
        return Resolved(None, target, False)
    raise TypeError(
        f"{type(target).__name__} is not a storage target: pass a path or URL, a backend "
        "(async save_state/load_state) or a sync adapter (load/save)")


def require_state(adapter: object) -> None:
    """Raise :class:`StateNotFoundError` unless ``adapter``'s medium holds a state.

    :raises StateCorruptedError: the medium belongs to something else (a foreign database).
    """
    if isinstance(adapter, DescribedStore) and not adapter.exists():
        where = location_of(adapter)
        raise StateNotFoundError(f"{where}: no state stored here", location=where)


def open_store(target: str | os.PathLike[str], *, existing: bool = False) -> SyncStore:
    """The adapter a path or URL names, built for a script or the CLI (the caller closes it).

    :param existing: it must already hold a state (see :func:`resolve`).
    """
    resolved = resolve(target, existing=existing)
    assert resolved.adapter is not None  # a string always names a built-in adapter
    return resolved.adapter


def redacted(text: str) -> str:
    """``text`` with any URL password hidden; paths and ``sqlite:///`` URLs unchanged.

    ``redact_url`` re-assembles what it parses, which would fold ``sqlite:////abs.db``
    into ``sqlite://abs.db``; only strings that can carry a secret go through it.
    """
    if "://" in text and ("@" in text or "?" in text):
        return redact_url(text)
    return text
