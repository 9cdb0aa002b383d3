"""Persistent panels: ``discord.ui.View`` and ``LayoutView`` panels that survive restarts.

:class:`PersistentPanel` holds everything a persistent panel does (the registry entry,
``state_key``, data, owner checks, send/detach, restore hooks) once;
:class:`PersistentView` adds it to a classic ``discord.ui.View`` and
:class:`PersistentLayoutView` to a Components V2 ``discord.ui.LayoutView``.

Every concrete subclass registers itself under its class name when it is defined, in the
one panel registry every kind shares (:mod:`cascadeui._kinds`; this module's kind rebuilds
one view per registry entry). The registry is the only way a stored entry becomes a view
again: a class name read from storage selects among registered subclasses and nothing else
(no import by name, no eval).
A class whose components declared in its body lack an explicit ``custom_id`` is refused
right there (``TypeError`` naming them), not first at ``send()``.

Re-defining a class with the same module and qualified name (a module reload, a class
built in a function called twice) replaces the registered class; a *different* class with a
name already taken raises :class:`TypeError` at definition time, because a restart could
not tell the two apart. Pass ``register=False`` in the class statement for an abstract
base that is never sent itself.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import discord
from discord.ui.view import BaseView

from . import _lifecycle
from ._kinds import KindMember, PanelKind, RegistryView, is_registered, lookup, unregister
from ._panel_data import PANELS_KEY, PanelData
from .actions import PERSISTENT_VIEW_REGISTERED, PERSISTENT_VIEW_UNREGISTERED
from .errors import UnregisteredPanelError

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["EXPIRES_FIELD", "PANELS_KEY", "PersistentLayoutView", "PersistentPanel",
           "PersistentView", "get_view_class", "registered_views", "unregister_view_class"]

log: logging.Logger = logging.getLogger(__name__)

# (id(store), state_key) -> the live view sent or restored in this process
_LIVE: weakref.WeakValueDictionary[tuple[int, str], PersistentPanel] = (
    weakref.WeakValueDictionary())

V = TypeVar("V", bound="PersistentPanel")


class _ViewKind(PanelKind):
    """The message-bound kind: one ``View``/``LayoutView`` per registry entry, rebuilt
    with ``from_registry`` and routed with ``bot.add_view(view, message_id=...)``."""

    name = "view"
    data_root = PANELS_KEY
    message_bound = True

    def definition_problems(self, cls: type) -> Iterator[str]:
        missing = list(_declared_without_custom_id(cls))
        if missing:
            yield (f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no "
                   "explicit custom_id; after a restart Discord would route its clicks "
                   "nowhere. Give each one custom_id=\"...\" (or pass register=False for a "
                   "base class that is never sent).")

    def build(self, cls: type, state_key: str, entry: Mapping[str, Any],
              ids: Mapping[str, Any], store: Any, upgrades: dict[str, dict[str, Any]],
              ) -> PersistentPanel:
        assert issubclass(cls, PersistentPanel)
        entry = _upgraded(cls, state_key, entry, upgrades)
        args = entry.get("args")
        if args is None:
            view = cls.from_registry(state_key, **ids)
        elif isinstance(args, dict):
            view = cls.from_registry(state_key, args=args, **ids)
        else:
            raise ValueError(f"stored args is a {type(args).__name__}, not a dict")
        if not isinstance(view, cls):
            raise TypeError(f"{cls.__name__}.from_registry returned {type(view).__name__}")
        if view.state_key != state_key:
            raise ValueError(f"{cls.__name__}.from_registry built state_key "
                             f"{view.state_key!r} for {state_key!r}")
        view._bind(store=store, **ids)
        view.check_persistent()
        return view

    def route(self, bot: Any, panel: Any, message_id: int) -> None:
        super().route(bot, panel, message_id)
        panel._mark_live()  # a later send() under its key stops this copy

    async def disable(self, bot: Any, store: Any, state_key: str, message_id: int) -> None:
        view = _LIVE.get((id(store), state_key))
        if view is None or view.message_id != message_id or view.channel_id is None:
            return
        for item in view.walk_children():
            if isinstance(item, (discord.ui.Button, discord.ui.Select)):
                item.disabled = True
        channel = bot.get_partial_messageable(view.channel_id, guild_id=view.guild_id)
        await channel.get_partial_message(message_id).edit(view=view)

    def unroute(self, bot: Any, store: Any, state_key: str, message_id: int) -> None:
        view = _LIVE.get((id(store), state_key))
        if view is not None and view.message_id == message_id:
            view.stop()  # discord.py's public way out of its view store
            del _LIVE[(id(store), state_key)]


_VIEW_KIND = _ViewKind()


def registered_views() -> Mapping[str, type[PersistentPanel]]:
    """A read-only view of the registry: class name -> panel class (either kind)."""
    return RegistryView(_ViewKind)


def get_view_class(name: object) -> type[PersistentPanel] | None:
    """The registered panel class called ``name``, or None (also for a non-string name)."""
    return lookup(name, _ViewKind)


def unregister_view_class(name: str) -> None:
    """Forget a registered class (an unloaded extension, a test); unknown names are ignored."""
    unregister(name, _ViewKind)


def _upgraded(cls: type[PersistentPanel], state_key: str, entry: Mapping[str, Any],
              upgrades: dict[str, dict[str, Any]]) -> Mapping[str, Any]:
    """The entry at the class's :attr:`~PersistentPanel.version`, through its
    ``migrate_entry`` when stored older (recorded in ``upgrades`` to be stored back).

    :raises ValueError: the entry was stored by a newer version of the class, or the
        migration returned something unusable.
    """
    stored = entry.get("version", 0)
    if not isinstance(stored, int) or isinstance(stored, bool) or stored < 0:
        raise ValueError(f"version {stored!r} is not a version number")
    if stored == cls.version:
        return entry
    if stored > cls.version:
        raise ValueError(f"stored by version {stored} of {cls.__name__}, newer than this "
                         f"code's version {cls.version}")
    new = cls.migrate_entry(copy.deepcopy(dict(entry)), stored)
    if not isinstance(new, dict) or new.get("class_name") != entry["class_name"]:
        raise ValueError(f"{cls.__name__}.migrate_entry must return the entry dict with "
                         "its class_name")
    new["version"] = cls.version
    upgrades[state_key] = new
    return new


def _declared_without_custom_id(cls: type[BaseView]) -> Iterator[str]:
    """Components declared in the class body (decorated callbacks, item attributes, and
    their nested children) that are interactive but have no explicit ``custom_id``."""
    for name, member in getattr(cls, "__view_children_items__", {}).items():
        if isinstance(member, discord.ui.Item):
            nested = member.walk_children() if member._has_children() else ()  # type: ignore[attr-defined]
            for item in (member, *nested):
                if not item.is_persistent():
                    yield _describe(item, name)
            continue
        kwargs = getattr(member, "__discord_ui_model_kwargs__", None)
        # a decorated button defaults custom_id to None, a decorated select to MISSING
        if isinstance(kwargs, Mapping) and "custom_id" in kwargs and (
                kwargs["custom_id"] is None or kwargs["custom_id"] is discord.utils.MISSING
        ) and kwargs.get("url") is None:
            label = kwargs.get("label") or kwargs.get("placeholder")
            yield f"{name}{f' ({label!r})' if label else ''}"


def _describe(item: discord.ui.Item[Any], where: str | None = None) -> str:
    label = getattr(item, "label", None) or getattr(item, "placeholder", None)
    text = f"{type(item).__name__}{f' {label!r}' if label else ''}"
    return f"{text} in {where}" if where else text


def _id(value: int | str | None) -> int | None:
    return None if value is None else int(value)


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


class PersistentPanel(KindMember, PanelData, BaseView, register=False):
    """What every persistent panel has, whatever its discord.py view class.

    Not used directly: subclass :class:`PersistentView` (a classic ``discord.ui.View``) or
    :class:`PersistentLayoutView` (a Components V2 ``discord.ui.LayoutView``). Give every
    interactive component an explicit ``custom_id``, send the panel with :meth:`send` or
    :meth:`respond`, and it is recorded under ``state["persistent_views"][state_key]``.

    :param state_key: the panel's unique key in the registry (a non-empty string).
    :param user_id: the user the panel belongs to; with ``owner_only = True`` only that
        user may use it, before and after a restart.
    :param store: the :class:`~cascadeui.store.StateStore` to record into; the
        process-wide store by default.
    :raises ValueError: ``state_key`` is missing or empty, or a timeout was asked for.
    """

    #: Refuse clicks from anyone but :attr:`user_id` (when it is known).
    owner_only: ClassVar[bool] = False
    #: What a refused user is told (ephemerally); None: refuse silently.
    not_owner_message: ClassVar[str | None] = "This panel belongs to someone else."
    #: The version of this class's stored arguments (see :meth:`migrate_entry`).
    version: ClassVar[int] = 0
    #: How long a sent panel lives (None: until removed otherwise); ``send(ttl=...)``
    #: overrides it per panel. An expired panel is disabled on its message and removed.
    ttl: ClassVar[timedelta | None] = None

    panel_kind: ClassVar[PanelKind] = _VIEW_KIND

    def __init__(self, *, state_key: str | None = None, user_id: int | str | None = None,
                 store: StateStore | None = None, timeout: float | None = None) -> None:
        if not isinstance(state_key, str) or not state_key:
            raise ValueError(f"{type(self).__name__} needs state_key=<a non-empty string>, "
                             f"the panel's key in the registry; got {state_key!r}")
        if timeout is not None:
            raise ValueError(f"{type(self).__name__} is persistent and never times out; "
                             "drop timeout=")
        super().__init__(timeout=None)
        self.state_key: str = state_key
        self.user_id: int | None = _id(user_id)
        self.message_id: int | None = None
        self.channel_id: int | None = None
        self.guild_id: int | None = None
        #: The exception ``on_restore`` raised after the last restart, if any.
        self.restore_error: BaseException | None = None
        self._store = store

    def _data_path(self) -> list[str]:
        return [self.panel_kind.data_root, self.state_key]

    # -- sending -------------------------------------------------------------------------

    def check_persistent(self) -> None:
        """Raise unless every component can be routed after a restart.

        Walks nested items too (containers, sections, action rows).

        :raises ValueError: an interactive component has no explicit ``custom_id`` (it is
            named), or the view is already finished.
        """
        for item in self.walk_children():
            if not item.is_persistent():
                row = getattr(item, "row", None)
                raise ValueError(
                    f"{type(self).__name__}: component {_describe(item)}"
                    f"{f' (row {row})' if row is not None else ''} has no explicit "
                    "custom_id; Discord would route its clicks nowhere after a restart")
        if self.is_finished():
            raise ValueError(f"{type(self).__name__} {self.state_key!r} is finished (exit() or "
                             "stop() was called); build a new one to send")

    def _check_send(self, content: str | None, kwargs: Mapping[str, Any]) -> None:
        """Refuse what could never be restored, before any request is made."""
        if kwargs.get("ephemeral"):
            raise ValueError(
                f"a {type(self).__name__} cannot be sent ephemerally: an ephemeral message "
                "cannot be fetched or edited after its interaction token expires (15 "
                "minutes), so it could never be restored, and discord.py gives its view a "
                "15-minute timeout")
        self.check_persistent()
        if not is_registered(type(self)):
            raise UnregisteredPanelError(type(self).__name__)

    async def send(self, destination: discord.abc.Messageable, content: str | None = None,
                   *, durable: bool = True, ttl: timedelta | float | None = None,
                   **kwargs: Any) -> discord.Message:
        """Send this panel to a channel (any Messageable) and record it in the registry.

        :param destination: a channel, thread, user, ``PartialMessageable`` ...
        :param durable: return once the registry entry is stored (see :meth:`set_data`).
        :param ttl: this panel's life (a ``timedelta`` or seconds; default the class's
            :attr:`ttl`): once over, its components are disabled and it is removed.
        :param kwargs: passed to ``destination.send`` (embed, files, ...).
        :raises ValueError: a component lacks a ``custom_id``, or ``ephemeral`` was asked.
        :raises UnregisteredPanelError: the class was defined with ``register=False``.
        """
        self._check_send(content, kwargs)
        expires = _expiry(type(self), ttl)
        message = await destination.send(content, view=self, **kwargs)  # type: ignore[call-overload]
        await self._record(message, guild_id=_guild_of(message), durable=durable,
                           expires=expires)
        return message  # type: ignore[no-any-return]

    async def respond(self, interaction: discord.Interaction[Any], content: str | None = None,
                      *, durable: bool = True, ttl: timedelta | float | None = None,
                      **kwargs: Any) -> discord.Message:
        """Send this panel as the answer to ``interaction`` (a follow-up if already answered).

        The panel belongs to ``interaction.user`` unless ``user_id`` was given.

        :param durable: return once the registry entry is stored (see :meth:`set_data`).
        :param ttl: this panel's life (see :meth:`send`).

        :raises ValueError: a component lacks a ``custom_id``, or ``ephemeral`` was asked.
        :raises UnregisteredPanelError: the class was defined with ``register=False``.
        """
        self._check_send(content, kwargs)
        expires = _expiry(type(self), ttl)
        if content is not None:
            kwargs["content"] = content
        message: discord.Message
        if interaction.response.is_done():
            message = await interaction.followup.send(
                view=self, wait=True, **kwargs)  # type: ignore[call-overload]
        else:
            answer = await interaction.response.send_message(
                view=self, **kwargs)  # type: ignore[call-overload]
            resource = answer.resource if answer is not None else None
            if isinstance(resource, discord.Message):
                message = resource
            else:
                message = await interaction.original_response()
        if self.user_id is None:
            self.user_id = interaction.user.id
        await self._record(message, guild_id=interaction.guild_id, durable=durable,
                           expires=expires)
        return message

    async def _record(self, message: discord.Message, *, guild_id: int | None,
                      durable: bool, expires: str | None = None) -> None:
        store = self.store
        previous = store.state["persistent_views"].get(self.state_key)
        self.message_id, self.channel_id, self.guild_id = (
            message.id, message.channel.id, guild_id)
        entry: dict[str, Any] = {"state_key": self.state_key, "class_name": type(self).__name__,
                 "message_id": _text(self.message_id), "channel_id": _text(self.channel_id),
                 "guild_id": _text(self.guild_id), "user_id": _text(self.user_id)}
        if type(self).version:
            entry["version"] = type(self).version
        if expires is not None:
            entry[EXPIRES_FIELD] = expires
        args = self.registry_args()
        if args:
            entry["args"] = dict(args)
        await store.dispatch(PERSISTENT_VIEW_REGISTERED, entry)
        old_view = _LIVE.get((id(store), self.state_key))
        self._mark_live()
        if old_view is not None and old_view is not self:
            old_view.stop()
        if isinstance(previous, Mapping):
            await _detach(message, previous, self.message_id)
        if durable:  # after the bookkeeping: a timeout must not leave the panel half-live
            await store.wait_durable()

    def _bind(self, *, store: StateStore, message_id: int, channel_id: int,
              guild_id: int | None, user_id: int | None) -> None:
        """Give a rebuilt view its identity (used by ``setup_persistence``)."""
        self._store = store
        self.message_id, self.channel_id = message_id, channel_id
        self.guild_id, self.user_id = guild_id, user_id

    def _mark_live(self) -> None:
        """Remember this panel as the live one for its key (a re-send stops the old one)."""
        _LIVE[(id(self.store), self.state_key)] = self

    async def exit(self, *, durable: bool = True) -> None:
        """Stop listening and remove this panel from the registry (its message stays);
        a ``cascadeui_panel_removed`` event says so (reason ``"deleted"``).

        Only the entry that still points at this panel's message is removed, so exiting
        an old copy never unregisters the panel that replaced it.

        :param durable: return once the removal is stored (see :meth:`set_data`).
        """
        store = self.store
        entry = store.state["persistent_views"].get(self.state_key)
        mine = (isinstance(entry, Mapping)
                and (self.message_id is None or entry.get("message_id") == _text(self.message_id)))
        self.stop()
        if _LIVE.get((id(store), self.state_key)) is self:
            del _LIVE[(id(store), self.state_key)]
        if mine:
            await store.dispatch(PERSISTENT_VIEW_UNREGISTERED, {"state_key": self.state_key},
                                 durable=durable)
            await _lifecycle.emit(_lifecycle.bot_of(store), store, [_lifecycle.panel_event(
                _lifecycle.PANEL_REMOVED, self.state_key, entry, "deleted")])

    # -- restoring -----------------------------------------------------------------------

    def registry_args(self) -> dict[str, Any]:
        """Constructor arguments to store with the registry entry (``entry["args"]``).

        Override it to rebuild a panel whose ``__init__`` needs more than ``state_key``:
        the dict (JSON values) is recorded on send and handed back to
        :meth:`from_registry` as ``args=`` after a restart. Default: nothing stored.
        """
        return {}

    @classmethod
    def from_registry(cls: type[V], state_key: str, *, message_id: int, channel_id: int,
                      guild_id: int | None, user_id: int | None,
                      args: Mapping[str, Any] | None = None) -> V:
        """Rebuild the panel for ``state_key`` after a restart.

        The default calls ``cls(state_key=state_key, **args)``; override it when
        ``__init__`` needs more. ``args`` is passed only when the entry stored some (see
        :meth:`registry_args`). The identity fields (message, channel, guild, user) are set
        on the result afterwards either way.
        """
        return cls(state_key=state_key, **(args or {}))

    @classmethod
    def migrate_entry(cls, entry: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Upgrade a stored registry entry written by an older :attr:`version` of the class.

        Runs at restore for every entry whose stored ``version`` (0 when absent) is below
        the class's :attr:`version`, before :meth:`from_registry`; the upgraded entry is
        stored back. The default returns ``entry`` unchanged.

        :param entry: a copy of the stored entry (ids as decimal strings, plus any fields
            the class stored); return the entry to keep.
        :param from_version: the version the entry was stored with.
        """
        return entry

    async def on_restore(self, bot: discord.Client) -> None:
        """Post-restart hook: runs once the bot is ready (caches filled), never during
        ``setup_hook``. An exception here is logged and kept in :attr:`restore_error`.
        """

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """With ``owner_only``, refuse everyone but :attr:`user_id` (also after a restart)."""
        if not self.owner_only or self.user_id is None or interaction.user.id == self.user_id:
            return True
        if self.not_owner_message and not interaction.response.is_done():
            await interaction.response.send_message(self.not_owner_message, ephemeral=True)
        return False

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} state_key={self.state_key!r} "
                f"message_id={self.message_id} user_id={self.user_id}>")


class PersistentView(PersistentPanel, discord.ui.View, register=False):
    """A classic ``discord.ui.View`` panel that never times out and survives restarts.

    Everything is documented on :class:`PersistentPanel`.
    """


class PersistentLayoutView(PersistentPanel, discord.ui.LayoutView, register=False):
    """A Components V2 ``discord.ui.LayoutView`` panel that survives restarts.

    Build it like any ``LayoutView`` (containers, sections, text displays, action rows);
    every interactive item, however deeply nested, needs an explicit ``custom_id``. Its
    text lives in ``TextDisplay`` items: Discord refuses ``content`` and embeds on a
    Components V2 message, so :meth:`send` refuses them before any request.
    Everything else is documented on :class:`PersistentPanel`.
    """

    def _check_send(self, content: str | None, kwargs: Mapping[str, Any]) -> None:
        super()._check_send(content, kwargs)
        if content is not None or kwargs.get("content") or kwargs.get("embed") or (
                kwargs.get("embeds")):
            raise ValueError(
                f"{type(self).__name__} is a Components V2 layout: Discord refuses content "
                "and embeds on such a message; put the text in a discord.ui.TextDisplay")


#: The registry entry field holding when a panel expires (ISO 8601, UTC).
EXPIRES_FIELD = "expires_at"


def _expiry(cls: type[PersistentPanel], ttl: timedelta | float | None) -> str | None:
    """When a panel sent now expires (ISO 8601), from ``ttl`` or the class's; None: never.

    :raises ValueError: the ttl is not a positive duration.
    """
    life = ttl if ttl is not None else cls.ttl
    if life is None:
        return None
    if isinstance(life, (int, float)) and not isinstance(life, bool):
        life = timedelta(seconds=life)
    if not isinstance(life, timedelta) or life <= timedelta(0):
        raise ValueError(f"{cls.__name__}: ttl must be a positive timedelta or seconds, "
                         f"not {life!r}")
    return (datetime.now(timezone.utc) + life).isoformat()


def _guild_of(message: discord.Message) -> int | None:
    if message.guild is not None:
        return message.guild.id
    guild_id = getattr(message.channel, "guild_id", None)
    return guild_id if isinstance(guild_id, int) else None


async def _detach(message: discord.Message, previous: Mapping[str, Any],
                  new_id: int | None) -> None:
    """Stop the message a state_key used before from showing live controls.

    A classic panel's message is edited to carry no view. A Components V2 message is all
    components (removing them would leave an empty message, which Discord refuses), so its
    layout is fetched and re-sent with every interactive item disabled. A message that is
    already gone is fine.
    """
    try:
        old_mid, old_cid = int(previous["message_id"]), int(previous["channel_id"])
    except (KeyError, TypeError, ValueError):
        return
    if old_mid == new_id:
        return
    channel = discord.PartialMessageable(state=message._state, id=old_cid)
    old_class = get_view_class(previous.get("class_name"))
    try:
        if old_class is not None and issubclass(old_class, discord.ui.LayoutView):
            old = await channel.fetch_message(old_mid)
            layout = discord.ui.LayoutView.from_message(old, timeout=None)
            for item in layout.walk_children():
                if isinstance(item, (discord.ui.Button, discord.ui.Select)) and (
                        item.is_dispatchable()):
                    item.disabled = True
            await old.edit(view=layout)
        else:
            await channel.get_partial_message(old_mid).edit(view=None)
    except discord.NotFound:
        log.debug("old panel message %s is gone; nothing to detach", old_mid)
    except discord.HTTPException as exc:
        log.warning("could not detach the view of old panel message %s: %s", old_mid, exc)
