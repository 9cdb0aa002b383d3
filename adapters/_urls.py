"""Passwords out of store URLs: what every adapter with a URL (Redis, PostgreSQL) and every
reader (reprs, logs, errors, the CLI) shows instead of the URL it was given."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["redact_secret", "redact_url", "url_secrets"]

#: Query parameters whose value is a secret (redis-py and libpq accept a password there).
_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "auth", "token"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for reprs, logs, errors).

    Covers the userinfo (``redis://user:pw@host``) and secret query parameters
    (``?password=pw``, which redis-py also accepts); anything unparsable is hidden whole.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _pw = userinfo.partition(":")
            netloc = f"{user}:***@{hostport}" if sep else f"{userinfo}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
                query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v)
                                   for k, v in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparsable Redis URL>"


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets a URL carries (password raw and unquoted, secret query values), longest
    first, so :func:`redact_secret` never leaves the tail of one behind."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
    except ValueError:
        return ()
    found += [unquote(f) for f in found]
    return tuple(sorted({f for f in found if f}, key=len, reverse=True))


def redact_secret(text: str, secrets_: tuple[str, ...]) -> str:
    """Return ``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets_:
        text = text.replace(secret, "***")
    return text
