"""A local Discord REST API double that the real discord.py client talks to.

:class:`DiscordDouble` is an aiohttp server on loopback. While it runs, discord.py's
``Route.BASE`` points at it, so an unmodified ``commands.Bot`` logs in, sends, fetches and
edits messages and answers interactions against it, with no token and no network. It
keeps channels and messages in memory, counts every request, and can add latency, inject
404/403/5xx answers per channel or message, and enforce Discord's global rate limit the way
Discord does it (HTTP 429, a JSON body with ``retry_after`` and ``global``, a ``Via``
header, which discord.py requires before it honours a 429).

Only one double can be the target of ``Route.BASE`` at a time in a process (it is a class
attribute of discord.py); :meth:`DiscordDouble.start` sets it and :meth:`close` restores it.
Interactions have no gateway here: :meth:`DiscordDouble.click` builds a component
interaction and hands it to the bot's connection state, then waits for the callback;
:meth:`DiscordDouble.deliver_message` does the same for a user's message (MESSAGE_CREATE),
so prefix commands run.

Components V2 messages are checked as Discord checks them: with the ``IS_COMPONENTS_V2``
flag (``1 << 15``) a message may carry no ``content`` or embeds and its top-level
components may be layout components (containers, sections, text displays, ...); without
it only action rows are allowed. A refused body gets Discord's 400 "Invalid Form Body"
(code 50035). Every component without an ``id`` is numbered as Discord numbers them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import discord
import discord.http
from aiohttp import web
from discord.ext import commands

__all__ = ["DiscordDouble", "Failure", "logged_in_bot", "mark_ready"]

log: logging.Logger = logging.getLogger(__name__)

#: Discord's JSON error codes the double answers with.
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
MISSING_ACCESS = 50001
INVALID_FORM_BODY = 50035
#: Message flag of a Components V2 message.
IS_COMPONENTS_V2 = 1 << 15
#: Component types allowed at the top level of a Components V2 message: action row,
#: section, text display, thumbnail, media gallery, file, separator, container.
_V2_TOP_LEVEL = frozenset({1, 9, 10, 11, 12, 13, 14, 17})

_JSON = "application/json"  # discord.py only decodes this exact content type (no charset)
_EPOCH = 1_300_000_000_000_000_000  # ids above 2**53, so a float or JS number would break them
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Failure:
    """An injected answer for every request that touches one channel or message."""

    status: int
    code: int = 0
    message: str = "injected failure"
    remaining: int | None = None  # None: forever; n: only the next n requests


@dataclass
class _Channel:
    id: int
    guild_id: int | None
    name: str
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    parent_id: int | None = None  # a thread's channel


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class DiscordDouble:
    """The in-memory Discord: start it, build a bot with :func:`logged_in_bot`, click.

    :param latency: seconds added to every request (the issue's benchmark uses 0.025).
    :param global_rate_limit: requests per second allowed across all routes; above it the
        double answers 429 with ``global: true`` like Discord. None disables the limit.
    :param host: loopback address to bind.
    """

    def __init__(self, *, latency: float = 0.0, global_rate_limit: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.latency = latency
        self.global_rate_limit = global_rate_limit
        self.host = host
        self.requests: Counter[str] = Counter()
        #: ``GET`` requests per message id (a sharded restore must fetch each message once).
        self.message_fetches: Counter[int] = Counter()
        self.rate_limited: int = 0
        #: Requests being served right now, and the most ever served at once.
        self.in_flight: int = 0
        self.max_in_flight: int = 0
        self.callbacks: list[dict[str, Any]] = []
        self.channels: dict[int, _Channel] = {}
        self.bot_user: dict[str, Any] = self._user(_EPOCH + 1, "cascadeui-double", bot=True)
        self.application_id = _EPOCH + 2
        self._ids = itertools.count(_EPOCH + 1000)
        self._failures: dict[tuple[str, int], Failure] = {}
        self._delays: dict[tuple[str, int], float] = {}
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._origins: dict[str, tuple[int, int]] = {}  # interaction token -> (channel, message)
        self._window: tuple[float, int] = (0.0, 0)
        self._runner: web.AppRunner | None = None
        self._saved_base: str | None = None
        self.base_url: str = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        """Bind a free loopback port, point ``discord.http.Route.BASE`` here; return it."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/api/v10/{tail:.*}", self._dispatch)
        # Handlers still sleeping on an injected delay must not hold up close() for long.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = int(self._runner.addresses[0][1])
        self.base_url = f"http://{self.host}:{port}/api/v10"
        self._saved_base = discord.http.Route.BASE
        discord.http.Route.BASE = self.base_url
        return self.base_url

    async def close(self) -> None:
        """Stop the server and restore ``Route.BASE``; idempotent."""
        if self._saved_base is not None:
            discord.http.Route.BASE = self._saved_base
            self._saved_base = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for fut in self._waiters.values():
            fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> DiscordDouble:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- the world -------------------------------------------------------------------------

    def new_id(self) -> int:
        """A fresh 64-bit snowflake."""
        return next(self._ids)

    def add_channel(self, channel_id: int | None = None, *, guild_id: int | None = None,
                    name: str = "panels", parent_id: int | None = None) -> int:
        """Create a text channel (in ``guild_id`` when given, else a DM), or a thread of
        channel ``parent_id``; return its id."""
        cid = channel_id if channel_id is not None else self.new_id()
        self.channels[cid] = _Channel(cid, guild_id, name, parent_id=parent_id)
        return cid

    def add_message(self, channel_id: int, *, content: str = "",
                    components: list[Any] | None = None) -> dict[str, Any]:
        """Put a message (from anyone) into a channel, as if it had been sent earlier."""
        return self._create(self.channels[channel_id], {"content": content,
                                                        "components": components or []})

    def message(self, message_id: int) -> dict[str, Any] | None:
        """The stored payload of a message, or None when it does not exist."""
        for ch in self.channels.values():
            if message_id in ch.messages:
                return ch.messages[message_id]
        return None

    def delete_message(self, message_id: int) -> None:
        """Delete a message: later requests for it get 404 Unknown Message (10008)."""
        for ch in self.channels.values():
            ch.messages.pop(message_id, None)

    def delete_channel(self, channel_id: int) -> None:
        """Delete a channel: later requests get 404 Unknown Channel (10003)."""
        self.channels.pop(channel_id, None)

    def fail(self, kind: str, resource_id: int, status: int, *, code: int | None = None,
             times: int | None = None) -> None:
        """Answer every request on ``("channel" | "message", id)`` with ``status``.

        :param code: Discord's JSON error code; a sensible default per status.
        :param times: only the next ``times`` requests fail (None: until :meth:`heal`).
        """
        if kind not in ("channel", "message"):
            raise ValueError(f"kind must be 'channel' or 'message', not {kind!r}")
        default = {404: UNKNOWN_MESSAGE if kind == "message" else UNKNOWN_CHANNEL,
                   403: MISSING_ACCESS}.get(status, 0)
        self._failures[(kind, resource_id)] = Failure(
            status, default if code is None else code, remaining=times)

    def delay(self, kind: str, resource_id: int, seconds: float) -> None:
        """Add ``seconds`` of latency to requests on one channel or message (timeouts)."""
        self._delays[(kind, resource_id)] = seconds

    def heal(self) -> None:
        """Remove every injected failure and per-resource delay."""
        self._failures.clear()
        self._delays.clear()

    @property
    def total_requests(self) -> int:
        """Requests served since start (including 429 answers)."""
        return sum(self.requests.values())

    def dump(self) -> dict[str, Any]:
        """The world (channels, messages, injected failures) as JSON-ready data.

        Discord outlives a bot: a restart test dumps the world after bot 1 and
        :meth:`load` s it into the double that bot 2 talks to, in another process.
        """
        return {
            "next_id": self.new_id(),
            "channels": [{"id": ch.id, "guild_id": ch.guild_id, "name": ch.name,
                          "parent_id": ch.parent_id, "messages": list(ch.messages.values())}
                         for ch in self.channels.values()],
            "failures": [[kind, rid, f.status, f.code, f.remaining]
                         for (kind, rid), f in self._failures.items()],
            "delays": [[kind, rid, sec] for (kind, rid), sec in self._delays.items()],
        }

    def load(self, world: dict[str, Any]) -> None:
        """Replace the world with one produced by :meth:`dump`."""
        self._ids = itertools.count(int(world["next_id"]))
        self.channels = {}
        for ch in world["channels"]:
            channel = _Channel(int(ch["id"]), ch["guild_id"], ch["name"],
                               parent_id=ch.get("parent_id"))
            channel.messages = {int(m["id"]): m for m in ch["messages"]}
            self.channels[channel.id] = channel
        self._failures = {(kind, rid): Failure(status, code, remaining=left)
                          for kind, rid, status, code, left in world["failures"]}
        self._delays = {(kind, rid): sec for kind, rid, sec in world["delays"]}

    # -- interactions ----------------------------------------------------------------------

    async def click(self, bot: discord.Client, message_id: int, custom_id: str, *,
                    user_id: int, component_type: int | None = None,
                    values: list[str] | None = None,
                    timeout: float = 5.0) -> dict[str, Any] | None:
        """Deliver a component interaction to ``bot`` and wait for its callback body.

        :param component_type: the clicked component's type; by default the type of the
            component with ``custom_id`` on the message, however deeply nested (a button,
            2, when the message has none).
        :returns: the JSON the bot POSTed to ``/interactions/{id}/{token}/callback``, or
            None when nothing answered within ``timeout`` (e.g. no view routes it).
        :raises LookupError: the message does not exist in the double.
        """
        msg = self.message(message_id)
        if msg is None:
            raise LookupError(f"no message {message_id} in the double")
        if component_type is None:
            found = next((c for c in _walk(msg.get("components") or [])
                          if c.get("custom_id") == custom_id), None)
            component_type = int(found["type"]) if found is not None else 2
        channel = self.channels[int(msg["channel_id"])]
        iid = self.new_id()
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        user = self._user(user_id, f"user{user_id}")
        payload: dict[str, Any] = {
            "id": str(iid), "application_id": str(self.application_id), "type": 3,
            "token": f"tok{iid}", "version": 1, "data": data,
            "channel_id": str(channel.id), "channel": self._channel_payload(channel),
            "message": msg, "locale": "en-US", "app_permissions": "0",
            "attachment_size_limit": 8 * 1024 * 1024, "entitlements": [],
            "authorizing_integration_owners": {},
        }
        if channel.guild_id is not None:
            payload["guild_id"] = str(channel.guild_id)
            payload["member"] = {"user": user, "roles": [], "joined_at": _now(), "deaf": False,
                                 "mute": False, "flags": 0, "permissions": "0"}
        else:
            payload["user"] = user
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[iid] = fut
        self._origins[f"tok{iid}"] = (channel.id, message_id)
        bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiters.pop(iid, None)

    async def deliver_message(self, bot: discord.Client, channel_id: int, content: str, *,
                              author_id: int, author_name: str | None = None,
                              command: bool = False, timeout: float = 10.0
                              ) -> dict[str, Any]:
        """A user posts ``content`` in a channel: store it and hand the bot MESSAGE_CREATE.

        The bot's ``on_message`` runs (a ``commands.Bot`` processes prefix commands; the
        message carries its content, as with the message content intent).

        :param command: wait until the ``commands.Bot`` has finished the command this
            message invokes (its ``command_completion``), so whatever it sent is in the
            double *and* registered in the bot (a panel's view routes clicks). Without
            it the command runs in a task: poll with :meth:`wait_for_message`.
        :returns: the stored message payload (its ``"id"`` orders later messages).
        :raises LookupError: the channel does not exist in the double.
        :raises commands.CommandError: with ``command=True``, the command failed.
        :raises TimeoutError: with ``command=True``, it did not finish within ``timeout``.
        """
        channel = self.channels.get(channel_id)
        if channel is None:
            raise LookupError(f"no channel {channel_id} in the double")
        msg = self._create(channel, {"content": content})
        msg["author"] = self._user(author_id, author_name or f"user{author_id}")
        payload = dict(msg)
        if channel.guild_id is not None:
            payload["member"] = {"roles": [], "joined_at": _now(), "deaf": False,
                                 "mute": False, "flags": 0}
        done: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future())

        def mine(ctx: commands.Context[Any], *_: Any) -> bool:
            return ctx.message.id == int(msg["id"])

        async def finished(ctx: commands.Context[Any]) -> None:
            if mine(ctx) and not done.done():
                done.set_result(None)

        async def failed(ctx: commands.Context[Any], error: BaseException) -> None:
            if mine(ctx) and not done.done():
                done.set_result(error)

        if command:
            if not isinstance(bot, commands.Bot):
                raise TypeError("command=True needs a commands.Bot")
            bot.add_listener(finished, "on_command_completion")
            bot.add_listener(failed, "on_command_error")
        try:
            bot._connection.parse_message_create(payload)  # type: ignore[arg-type]
            if command:
                error = await asyncio.wait_for(done, timeout)
                if error is not None:
                    raise error
        finally:
            if command and isinstance(bot, commands.Bot):
                bot.remove_listener(finished, "on_command_completion")
                bot.remove_listener(failed, "on_command_error")
        return msg

    # -- gateway events ----------------------------------------------------------------------
    # What Discord's gateway would send the bot when the world changes: each method changes
    # the world and hands the event to the bot's connection state, so discord.py parses it
    # and dispatches its own events (``on_raw_message_delete``, ``on_guild_remove``, ...).

    def deliver_guild(self, bot: discord.Client, guild_id: int) -> None:
        """GUILD_CREATE for ``guild_id`` with its channels: the guild enters the bot's cache,
        as at connect (channel, thread and guild events need it there)."""
        channels = [self._channel_payload(ch) for ch in self.channels.values()
                    if ch.guild_id == guild_id]
        bot._connection.parse_guild_create({  # pyright: ignore[reportArgumentType]
            "id": str(guild_id), "name": f"guild{guild_id}", "owner_id": str(self.new_id()),
            "channels": [c for c in channels if c["type"] != 11],
            "threads": [c for c in channels if c["type"] == 11],
            "roles": [], "emojis": [], "stickers": [], "features": [], "members": [],
            "member_count": 1, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "premium_tier": 0, "preferred_locale": "en-US", "large": False})

    def deliver_message_delete(self, bot: discord.Client, *message_ids: int) -> None:
        """Delete messages of one channel: MESSAGE_DELETE for one, MESSAGE_DELETE_BULK for
        several (``on_raw_message_delete`` / ``on_raw_bulk_message_delete``).

        :raises LookupError: a message does not exist in the double.
        """
        found = [self.message(mid) for mid in message_ids]
        if not found or any(m is None for m in found):
            raise LookupError(f"not every message of {message_ids} is in the double")
        channel = self.channels[int(found[0]["channel_id"])]  # type: ignore[index]
        for mid in message_ids:
            channel.messages.pop(mid, None)
        where: dict[str, Any] = {"channel_id": str(channel.id)}
        if channel.guild_id is not None:
            where["guild_id"] = str(channel.guild_id)
        state: Any = bot._connection  # the payloads are plain dicts, as off the gateway
        if len(message_ids) == 1:
            state.parse_message_delete({"id": str(message_ids[0]), **where})
        else:
            state.parse_message_delete_bulk({"ids": [str(m) for m in message_ids], **where})

    def deliver_channel_delete(self, bot: discord.Client, channel_id: int) -> None:
        """Delete a guild channel or thread: CHANNEL_DELETE (``on_guild_channel_delete``)
        or THREAD_DELETE (``on_raw_thread_delete``). The guild must be cached
        (:meth:`deliver_guild`), as on a real gateway."""
        channel = self.channels.pop(channel_id)
        payload = self._channel_payload(channel)
        if payload["type"] == 11:
            bot._connection.parse_thread_delete(
                {"id": str(channel_id), "guild_id": str(channel.guild_id),
                 "parent_id": payload["parent_id"], "type": 11})
        else:
            bot._connection.parse_channel_delete(payload)  # pyright: ignore[reportArgumentType]

    def deliver_guild_remove(self, bot: discord.Client, guild_id: int, *,
                             unavailable: bool = False) -> None:
        """GUILD_DELETE: the bot left or was removed (``on_guild_remove``), or with
        ``unavailable`` an outage (``on_guild_unavailable``; the guild keeps its channels)."""
        if not unavailable:
            for cid in [c.id for c in self.channels.values() if c.guild_id == guild_id]:
                del self.channels[cid]
        payload: dict[str, Any] = {"id": str(guild_id)}
        if unavailable:
            payload["unavailable"] = True
        bot._connection.parse_guild_delete(payload)  # type: ignore[arg-type]

    async def wait_for_message(self, channel_id: int, *, after: int | str,
                               timeout: float = 10.0) -> dict[str, Any]:
        """The first message in a channel with an id above ``after`` (polled; the bot's
        reply to :meth:`deliver_message`).

        :raises TimeoutError: none appeared within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            channel = self.channels.get(channel_id)
            later = sorted(mid for mid in (channel.messages if channel else ())
                           if mid > int(after))
            if later and channel is not None:
                return channel.messages[later[0]]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no message in channel {channel_id} after {after} "
                                   f"within {timeout}s")
            await asyncio.sleep(0.01)

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            limited = self._check_global_limit()
            if limited is not None:
                self.requests[f"{request.method} 429"] += 1
                return limited
            return await handler(request)
        finally:
            self.in_flight -= 1

    def _check_global_limit(self) -> web.Response | None:
        limit = self.global_rate_limit
        if limit is None:
            return None
        now = time.monotonic()
        start, used = self._window
        if now - start >= 1.0:
            start, used = now, 0
        if used >= limit:
            self._window = (start, used)
            self.rate_limited += 1
            retry = max(0.001, 1.0 - (now - start))
            body = {"message": "You are being rate limited.", "retry_after": round(retry, 3),
                    "global": True, "code": 0}
            return web.Response(status=429, body=json.dumps(body).encode(), headers={
                "Content-Type": _JSON, "Retry-After": str(max(1, round(retry))),
                "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global",
                "Via": "1.1 google"})
        self._window = (start, used + 1)
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = request.match_info["tail"].strip("/").split("/")
        method = request.method
        body: Any = None
        if request.can_read_body and request.content_type == _JSON:
            body = await request.json()
        route, handler = self._route(method, parts)
        self.requests[f"{method} {route}"] += 1
        if handler is None:
            return _error(404, 0, f"404: Not Found ({method} /{'/'.join(parts)})")
        response: web.StreamResponse = await handler(parts, body, request)
        return response

    def _route(self, method: str, p: list[str]) -> tuple[str, Any]:
        n = len(p)
        table: dict[tuple[str, str], Any] = {
            ("GET", "users/@me"): self._get_me,
            ("GET", "oauth2/applications/@me"): self._get_app,
            ("GET", "channels/{channel_id}"): self._get_channel,
            ("POST", "channels/{channel_id}/messages"): self._send,
            ("GET", "channels/{channel_id}/messages/{message_id}"): self._get_message,
            ("PATCH", "channels/{channel_id}/messages/{message_id}"): self._edit,
            ("DELETE", "channels/{channel_id}/messages/{message_id}"): self._delete,
            ("POST", "interactions/{id}/{token}/callback"): self._callback,
            ("POST", "webhooks/{app}/{token}"): self._followup,
            ("GET", "webhooks/{app}/{token}/messages/{message_id}"): self._hook_get,
            ("PATCH", "webhooks/{app}/{token}/messages/{message_id}"): self._hook_edit,
        }
        if p[:1] == ["channels"]:
            key = {2: "channels/{channel_id}", 3: "channels/{channel_id}/messages",
                   4: "channels/{channel_id}/messages/{message_id}"}.get(n, "")
            if n > 2 and p[2] != "messages":
                key = ""
        elif p[:1] == ["interactions"] and n == 4:
            key = "interactions/{id}/{token}/callback"
        elif p[:1] == ["webhooks"]:
            key = {3: "webhooks/{app}/{token}",
                   5: "webhooks/{app}/{token}/messages/{message_id}"}.get(n, "")
        else:
            key = "/".join(p)
        return key or "/".join(p), table.get((method, key))

    # handlers: (path parts, JSON body, request) -> response

    async def _get_me(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        return _ok(self.bot_user)

    async def _get_app(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        return _ok({"id": str(self.application_id), "name": "cascadeui-double",
                    "description": "", "icon": None, "bot_public": False,
                    "bot_require_code_grant": False, "owner": self.bot_user,
                    "verify_key": "0" * 64, "flags": 0})

    async def _get_channel(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        ch, err = await self._lookup(int(p[1]), None)
        return err or _ok(self._channel_payload(ch))  # type: ignore[arg-type]

    async def _send(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        ch, err = await self._lookup(int(p[1]), None)
        err = err or _invalid_body(body or {})
        return err or _ok(self._create(ch, body or {}))  # type: ignore[arg-type]

    async def _get_message(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        self.message_fetches[int(p[3])] += 1
        ch, err = await self._lookup(int(p[1]), int(p[3]))
        return err or _ok(ch.messages[int(p[3])])  # type: ignore[union-attr]

    async def _edit(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        ch, err = await self._lookup(int(p[1]), int(p[3]))
        if err:
            return err
        msg = ch.messages[int(p[3])]  # type: ignore[union-attr]
        return _invalid_body(body or {}, msg) or _ok(self._update(msg, body or {}))

    async def _delete(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        ch, err = await self._lookup(int(p[1]), int(p[3]))
        if err:
            return err
        ch.messages.pop(int(p[3]), None)  # type: ignore[union-attr]
        return web.Response(status=204)

    async def _callback(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        iid, kind, data = int(p[1]), int(body["type"]), body.get("data") or {}
        origin = self._origins.get(p[2])
        if kind in (4, 7):
            before = self.message(origin[1]) if kind == 7 and origin is not None else None
            invalid = _invalid_body(data, before)
            if invalid is not None:
                return invalid
        record = {"interaction_id": iid, "type": kind, "data": data}
        self.callbacks.append(record)
        waiter = self._waiters.get(iid)
        message: dict[str, Any] | None = None
        if kind == 4 and origin is not None:  # CHANNEL_MESSAGE_WITH_SOURCE: a new message
            channel = self.channels.get(origin[0])
            if channel is not None:
                message = self._create(channel, data, interaction_token=p[2])
        elif kind == 7 and origin is not None:  # UPDATE_MESSAGE: edit the clicked message
            message = self._update_by_id(origin[1], data)
        if waiter is not None and not waiter.done():
            waiter.set_result(record)
        out: dict[str, Any] = {"interaction": {
            "id": str(iid), "type": 3, "response_message_id": message and message["id"],
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(int(data.get("flags") or 0) & 64)}}
        if message is not None:
            out["resource"] = {"type": kind, "message": message}
        return _ok(out)

    async def _followup(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        origin = self._token_channel(p[2])
        if origin is None:
            return _error(404, 10015, "Unknown Webhook")
        invalid = _invalid_body(body or {})
        if invalid is not None:
            return invalid
        msg = self._create(origin, body or {}, interaction_token=p[2])
        return _ok(msg) if req.query.get("wait") in ("true", "1", "True") else _no_content()

    async def _hook_get(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        msg = self._hook_message(p[2], p[4])
        return _ok(msg) if msg else _error(404, UNKNOWN_MESSAGE, "Unknown Message")

    async def _hook_edit(self, p: list[str], body: Any, req: web.Request) -> web.Response:
        msg = self._hook_message(p[2], p[4])
        if msg is None:
            return _error(404, UNKNOWN_MESSAGE, "Unknown Message")
        return _invalid_body(body or {}, msg) or _ok(self._update(msg, body or {}))

    # -- internals -------------------------------------------------------------------------

    async def _lookup(self, channel_id: int,
                      message_id: int | None) -> tuple[_Channel | None, web.Response | None]:
        """Resolve a channel (and message), applying injected delays and failures."""
        for key in (("channel", channel_id), ("message", message_id or -1)):
            if key in self._delays:
                await asyncio.sleep(self._delays[key])
            failure = self._failures.get(key)
            if failure is not None:
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        del self._failures[key]
                return None, _error(failure.status, failure.code, failure.message)
        ch = self.channels.get(channel_id)
        if ch is None:
            return None, _error(404, UNKNOWN_CHANNEL, "Unknown Channel")
        if message_id is not None and message_id not in ch.messages:
            return None, _error(404, UNKNOWN_MESSAGE, "Unknown Message")
        return ch, None

    def _create(self, ch: _Channel, body: dict[str, Any], *,
                interaction_token: str | None = None) -> dict[str, Any]:
        mid = self.new_id()
        msg: dict[str, Any] = {
            "id": str(mid), "channel_id": str(ch.id), "type": 0, "author": self.bot_user,
            "content": body.get("content") or "", "timestamp": _now(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": body.get("embeds") or [], "pinned": False,
            "flags": int(body.get("flags") or 0),
            "components": _numbered(body.get("components") or []),
        }
        if ch.guild_id is not None:
            msg["guild_id"] = str(ch.guild_id)
        if interaction_token is not None:
            msg["webhook_id"] = str(self.application_id)
            msg["_token"] = interaction_token
        ch.messages[mid] = msg
        return msg

    @staticmethod
    def _update(msg: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        v2 = int(msg.get("flags") or 0) & IS_COMPONENTS_V2
        for key in ("content", "embeds", "components", "flags"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ([] if key != "content"
                                                                     else "")
        msg["components"] = _numbered(msg["components"])
        msg["flags"] = int(msg["flags"] or 0) | v2  # Discord never drops this flag
        msg["edited_timestamp"] = _now()
        return msg

    def _update_by_id(self, message_id: int, body: dict[str, Any]) -> dict[str, Any] | None:
        msg = self.message(message_id)
        return None if msg is None else self._update(msg, body)

    def _token_channel(self, token: str) -> _Channel | None:
        origin = self._origins.get(token)
        return None if origin is None else self.channels.get(origin[0])

    def _hook_message(self, token: str, message_id: str) -> dict[str, Any] | None:
        for ch in self.channels.values():
            for msg in ch.messages.values():
                if msg.get("_token") == token and (message_id == "@original"
                                                   or msg["id"] == message_id):
                    return msg
        origin = self._origins.get(token)  # @original of a component click: the clicked one
        if message_id == "@original" and origin is not None:
            return self.message(origin[1])
        return None

    def _channel_payload(self, ch: _Channel) -> dict[str, Any]:
        if ch.guild_id is None:
            return {"id": str(ch.id), "type": 1, "recipients": [], "last_message_id": None}
        if ch.parent_id is not None:
            return {"id": str(ch.id), "type": 11, "guild_id": str(ch.guild_id),
                    "name": ch.name, "parent_id": str(ch.parent_id),
                    "owner_id": str(self.bot_user["id"]), "message_count": len(ch.messages),
                    "member_count": 1, "thread_metadata": {
                        "archived": False, "auto_archive_duration": 1440,
                        "archive_timestamp": _now(), "locked": False}}
        return {"id": str(ch.id), "type": 0, "guild_id": str(ch.guild_id), "name": ch.name,
                "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None}

    @staticmethod
    def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
        return {"id": str(user_id), "username": name, "discriminator": "0",
                "global_name": None, "avatar": None, "bot": bot}


def _walk(components: list[Any]) -> Iterator[dict[str, Any]]:
    """Every component, depth first (children, a section's accessory, nested rows)."""
    for comp in components:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _walk(comp.get("components") or [])
        accessory = comp.get("accessory")
        if isinstance(accessory, dict):
            yield from _walk([accessory])


def _numbered(components: list[Any]) -> list[Any]:
    """Give every component without an ``id`` the next free number, as Discord does."""
    used = {c["id"] for c in _walk(components) if isinstance(c.get("id"), int)}
    counter = itertools.count(1)
    for comp in _walk(components):
        if not isinstance(comp.get("id"), int):
            comp["id"] = next(n for n in counter if n not in used)
    return components


def _invalid_body(body: dict[str, Any], before: dict[str, Any] | None = None
                  ) -> web.Response | None:
    """Discord's 400 for a message body breaking the Components V2 rules, else None."""
    flags = int(body.get("flags") or 0) | int((before or {}).get("flags") or 0)
    components = body.get("components") or []
    top = [c.get("type") for c in components if isinstance(c, dict)]
    if flags & IS_COMPONENTS_V2:
        if body.get("content") or body.get("embeds") or body.get("poll"):
            return _error(400, INVALID_FORM_BODY, "Invalid Form Body: content, embeds and "
                          "polls cannot be used with the IS_COMPONENTS_V2 flag")
        if "components" in body and not components:
            return _error(400, 50006, "Cannot send an empty message")
        bad = [t for t in top if t not in _V2_TOP_LEVEL]
    else:
        bad = [t for t in top if t != 1]
    if bad:
        return _error(400, INVALID_FORM_BODY, f"Invalid Form Body: component type {bad[0]} "
                      f"is not allowed at the top level"
                      f"{'' if flags & IS_COMPONENTS_V2 else ' without IS_COMPONENTS_V2'}")
    return None


def _ok(data: Any) -> web.Response:
    if isinstance(data, dict) and "_token" in data:
        data = {k: v for k, v in data.items() if k != "_token"}
    return web.Response(body=json.dumps(data).encode(), headers={"Content-Type": _JSON})


def _no_content() -> web.Response:
    return web.Response(status=204)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"message": message, "code": code}).encode(),
                        headers={"Content-Type": _JSON})


async def logged_in_bot(double: DiscordDouble, *, bot: commands.Bot | None = None,
                        setup_hook: Callable[[commands.Bot], Awaitable[None]] | None = None,
                        ) -> commands.Bot:
    """Log a ``commands.Bot`` in against ``double`` (``GET /users/@me`` and
    ``/oauth2/applications/@me``, then ``setup_hook``) without opening a gateway.

    :param bot: an existing bot to log in; a default ``commands.Bot`` otherwise.
    :param setup_hook: awaited as the bot's ``setup_hook`` (where ``setup_persistence``
        belongs).
    :raises RuntimeError: the double is not started.
    """
    if not double.base_url:
        raise RuntimeError("start the DiscordDouble before logging a bot in")
    if bot is None:
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.none(),
                           help_command=None)
    if setup_hook is not None:
        target = bot

        async def hook() -> None:
            await setup_hook(target)

        bot.setup_hook = hook  # type: ignore[method-assign]
    try:
        await bot.login("double-token")
    except BaseException:
        await bot.close()
        raise
    return bot


def mark_ready(bot: discord.Client) -> None:
    """Do what the gateway's READY would: ``wait_until_ready()`` returns, ``on_ready`` fires.

    There is no gateway here, so the caches stay empty; this only flips readiness.
    """
    bot._handle_ready()
    bot.dispatch("ready")
