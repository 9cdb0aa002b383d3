"""The persistence API of the seed: backends, ``migrate_storage``, the serializer, errors.

``from cascadeui.persistence import SQLiteBackend, migrate_storage`` is the public path;
the names live in small modules (:mod:`cascadeui.backends`, :mod:`cascadeui.errors`,
:mod:`cascadeui.serializer`) and are re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .adapters import redact_url
from .backends import (
    AsyncBackend,
    FileStorageBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteBackend,
    StorageBackend,
    as_backend,
)
from .errors import (
    ConfigurationError,
    DurabilityTimeoutError,
    LockTimeoutError,
    PersistenceError,
    SerializationError,
    StateCorruptedError,
    StorageUnavailableError,
    StoreClosedError,
)
from .serializer import StateSerializer

__all__ = [
    "AsyncBackend",
    "ConfigurationError",
    "DurabilityTimeoutError",
    "FileStorageBackend",
    "LockTimeoutError",
    "PersistenceError",
    "PostgresBackend",
    "RedisBackend",
    "SQLiteBackend",
    "SerializationError",
    "StateCorruptedError",
    "StateSerializer",
    "StorageBackend",
    "StorageUnavailableError",
    "StoreClosedError",
    "as_backend",
    "backend_from_url",
    "migrate_storage",
]

log: logging.Logger = logging.getLogger(__name__)

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


async def migrate_storage(source: object, target: object) -> bool:
    """Copy the state from ``source`` to ``target`` (any backends or sync adapters).

    Reads the target back and compares before returning True; never modifies the source.

    :returns: False when the source holds nothing or the target did not take the copy.
    :raises PersistenceError: the source cannot be read.
    """
    src, dst = as_backend(source), as_backend(target)
    state = await src.load_state()
    if not state:
        log.info("migrate_storage: %r holds no state; nothing copied", src)
        return False
    if not await dst.save_state(state):
        return False
    copied = await dst.load_state()
    if copied != state:
        log.error("migrate_storage: %r read back different state than was written", dst)
        return False
    return True


def backend_from_url(url: str | os.PathLike[str]) -> AsyncBackend[Any]:
    """Build a backend from a path or URL.

    ``state.json`` or ``file:///abs/state.json``: :class:`FileStorageBackend`;
    ``sqlite:///relative.db``, ``sqlite:////abs.db`` or a ``.db``/``.sqlite`` path:
    :class:`SQLiteBackend`; ``redis://[:password@]host[:port][/db]?key=...&ttl=...``
    (also ``rediss://``, ``unix://``): :class:`RedisBackend`;
    ``postgresql://user@host:port/dbname?table=...`` (also ``postgres://``):
    :class:`PostgresBackend`.

    :raises ConfigurationError: anything else (the message lists what is accepted).
    """
    text = os.fspath(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("redis", "rediss", "unix"):
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
    if scheme in ("postgresql", "postgres"):
        pg = urlsplit(text)
        pairs = parse_qsl(pg.query, keep_blank_values=True)
        tables = [v for k, v in pairs if k == "table"]
        rest = urlencode([(k, v) for k, v in pairs if k != "table"])
        return PostgresBackend(urlunsplit(pg._replace(query=rest)),
                               table=tables[-1] if tables else "cascadeui_state")
    if scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(f"{text!r}: write sqlite:///relative.db or sqlite:////abs.db")
        return SQLiteBackend(unquote(path))
    if scheme == "file":
        return FileStorageBackend(unquote(urlsplit(text).path))
    if scheme:
        raise ConfigurationError(
            f"unsupported URL scheme {scheme!r} in {redact_url(text)}: use a .json path, "
            "file://, sqlite:///, a .db/.sqlite path, redis://, rediss:// or postgresql://")
    suffix = Path(text).suffix.lower()
    if suffix == ".json":
        return FileStorageBackend(text)
    if suffix in _SQLITE_SUFFIXES:
        return SQLiteBackend(text)
    raise ConfigurationError(
        f"cannot tell the backend of {text!r}: name a .json or .db/.sqlite file, "
        "or use a file://, sqlite:/// or redis:// URL")
