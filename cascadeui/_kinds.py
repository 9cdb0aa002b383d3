"""Panel kinds and the one class registry every persistent panel class is recorded in.

A *kind* (a :class:`PanelKind`) says what a family of panel classes needs: the check a
class passes when it is defined, where its panels keep their data, and how
``setup_persistence`` routes them again after a restart, either per class (a
``DynamicPanel`` template: ``bot.add_dynamic_items``) or per registry entry
(``state["persistent_views"]``: one view rebuilt per message and ``bot.add_view``-ed).

Every concrete panel class, of every kind, registers here under its class name when it is
defined (through :class:`KindMember`), so a class name read from storage selects one
class and nothing else (no import by name, no eval), and two kinds can never claim the
same stored name. Adding a kind of panel is one module: a :class:`PanelKind` subclass and
a base class that names it in ``panel_kind``. No discord.py import here, so a reader
without a bot may import it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Protocol

__all__ = ["EntryPanel", "KindMember", "PanelKind", "RegistryView", "aliases_of", "all_kinds",
           "class_and_kind", "is_registered", "kind_of", "lookup", "on_register",
           "register_class", "registered", "unregister"]

log: logging.Logger = logging.getLogger(__name__)


class EntryPanel(Protocol):
    """What restore needs of a panel rebuilt from a registry entry (message-bound kinds)."""

    state_key: str
    message_id: int | None
    channel_id: int | None
    restore_error: BaseException | None

    @property
    def store(self) -> Any: ...

    def stop(self) -> None: ...

    def is_finished(self) -> bool: ...

    async def on_restore(self, bot: Any) -> None: ...


class PanelKind:
    """What one kind of persistent panel does; subclass it once per kind.

    The defaults describe a kind routed per class with no registry entries. A kind whose
    panels each have an entry in ``state["persistent_views"]`` sets ``message_bound`` and
    overrides :meth:`build` (and :meth:`route` if ``bot.add_view`` is not the way).
    """

    #: A short name for messages and the restore summary (``"view"``, ``"dynamic"``).
    name: ClassVar[str] = "panel"
    #: The key of ``state["application"]`` under which this kind's panels keep their data.
    data_root: ClassVar[str] = "panels"
    #: True when each panel has a registry entry that restore rebuilds it from.
    message_bound: ClassVar[bool] = False

    def __init__(self) -> None:
        _KINDS.append(self)  # every kind, even one with no class registered yet

    def definition_problems(self, cls: type) -> Iterator[str]:
        """What makes ``cls`` unusable after a restart (each a full sentence); nothing by
        default. Registration refuses a class with any, with a ``TypeError``."""
        return iter(())

    def route_class(self, bot: Any, cls: type, store: Any) -> bool:
        """Route every panel of ``cls`` at restore (no Discord request); True if it did."""
        return False

    def build(self, cls: type, state_key: str, entry: Mapping[str, Any],
              ids: Mapping[str, Any], store: Any, upgrades: dict[str, dict[str, Any]],
              ) -> EntryPanel:
        """Rebuild one panel from its checked registry entry (message-bound kinds only).

        :param ids: the entry's checked ids (``message_id``, ``channel_id``, ...).
        :param upgrades: receives ``{state_key: entry}`` for an entry to store back.
        """
        raise TypeError(f"{cls.__name__} is a {self.name} panel, which has no registry "
                        "entries: it is routed by class, not per message")

    def route(self, bot: Any, panel: EntryPanel, message_id: int) -> None:
        """Make a rebuilt panel answer clicks on its message."""
        bot.add_view(panel, message_id=message_id)

    def class_data_path(self, name: str) -> list[str] | None:
        """Where every panel of the class called ``name`` keeps its data, for a kind whose
        data is per class (moved to the new name when the class is renamed with
        ``aliases=``); None (the default) when the data is per registry entry."""
        return None

    def stored_classes(self, application: Mapping[str, Any]) -> Iterable[str]:
        """The class names this kind keeps per-class data for in ``application`` (so a
        start can name those not registered); none by default."""
        return ()

    async def disable(self, bot: Any, store: Any, state_key: str, message_id: int) -> None:
        """Disable the components of an expired panel on its message (one edit); nothing
        by default or when no panel routes in this process.

        :raises discord.HTTPException: the edit failed (the panel is removed anyway).
        """

    def unroute(self, bot: Any, store: Any, state_key: str, message_id: int) -> None:
        """Stop the live panel of ``state_key`` on ``message_id`` answering clicks (its
        message, channel or guild is gone); nothing when none routes in this process."""


# every PanelKind instance, in creation order
_KINDS: list[PanelKind] = []
# class name -> (class, its kind): the one registry, whatever the kind
_REGISTRY: dict[str, tuple[type, PanelKind]] = {}
# a former name of a class (``aliases=``) -> its class name now
_ALIASES: dict[str, str] = {}


class KindMember:
    """Base of every panel class: registers each concrete subclass with its kind.

    Pass ``register=False`` in the class statement for a base that is never sent itself.
    """

    #: The kind of this class's panels (set by the kind's base class).
    panel_kind: ClassVar[PanelKind]
    #: False on a class defined with ``register=False`` (set on each class, not inherited).
    __cascadeui_registered__: ClassVar[bool]

    def __init_subclass__(cls, *, register: bool = True, aliases: Iterable[str] = (),
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__cascadeui_registered__ = register
        if register:
            register_class(cls, cls.panel_kind, aliases=aliases)
        elif aliases:
            raise TypeError(f"{cls.__qualname__}: aliases= names stored panels to restore "
                            "as this class, which register=False never does")


def _same_class(a: type, b: type) -> bool:
    """The same class, or its re-definition (same module and qualified name: a reload)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_class(cls: type, kind: PanelKind, *, aliases: Iterable[str] = ()) -> None:
    """Record ``cls`` under its class name (and its former names), after its kind's
    definition check.

    A class re-defined with the same module and qualified name (a module reload) replaces
    the old one; a different class with a taken name, of any kind, is refused, and so is
    an alias that is another class's name or alias.

    :param aliases: former names (``"OldPoll"``, ``"polls.Poll"``) whose stored panels
        restore as ``cls`` and are rewritten to its name.
    :raises TypeError: a name is taken, or the kind found problems (all named).
    """
    name = cls.__name__
    known = _REGISTRY.get(name)
    if known is not None and not _same_class(known[0], cls):
        raise TypeError(
            f"a persistent panel named {name!r} is already registered by "
            f"{known[0].__module__}.{known[0].__qualname__}; {cls.__module__}."
            f"{cls.__qualname__} would make stored panels and their data ambiguous after a "
            "restart. Rename one of them, or pass register=False for a base class that is "
            "never sent.")
    former = _checked_aliases(cls, aliases)
    problems = list(kind.definition_problems(cls))
    if problems:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__}: {'; '.join(problems)}")
    if known is not None and known[0] is not cls:
        log.debug("panel class %s re-defined in %s; the new class replaces it",
                  name, cls.__module__)
    for alias in [a for a, owner in _ALIASES.items() if owner == name]:
        del _ALIASES[alias]  # a re-definition states its aliases anew
    _REGISTRY[name] = (cls, kind)
    _ALIASES.update(dict.fromkeys(former, name))
    for callback in list(_ON_REGISTER):
        callback(cls, kind)


def _checked_aliases(cls: type, aliases: Iterable[str]) -> list[str]:
    """``aliases`` as a list, each checked against every registered name and alias."""
    if isinstance(aliases, str):
        raise TypeError(f"{cls.__qualname__}: aliases= takes a tuple of names, not one "
                        f"string ({aliases!r},)")
    former = list(aliases)
    name = cls.__name__
    owner = _ALIASES.get(name)
    if owner is not None and owner != name:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__}: {name!r} is an alias of "
                        f"the registered panel class {owner}; stored panels under it "
                        "would be ambiguous. Rename the class or drop the alias.")
    for alias in former:
        if not isinstance(alias, str) or not alias or alias == name:
            raise TypeError(f"{cls.__qualname__}: alias {alias!r} must be a non-empty name "
                            "other than the class's own")
        taken = _REGISTRY.get(alias)
        holder = _ALIASES.get(alias)
        if (taken is not None and not _same_class(taken[0], cls)) or (
                holder is not None and holder != name):
            by = taken[0].__qualname__ if taken is not None else f"an alias of {holder}"
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}: alias {alias!r} is "
                            f"already taken ({by}); stored panels under it would be "
                            "ambiguous. Drop or change one of them.")
    return former


#: Called with ``(cls, kind)`` after every registration (late registration: restore).
_ON_REGISTER: list[Callable[[type, PanelKind], None]] = []


def on_register(callback: Callable[[type, PanelKind], None]) -> None:
    """Call ``callback(cls, kind)`` after each later registration (once per callback)."""
    if callback not in _ON_REGISTER:
        _ON_REGISTER.append(callback)


def aliases_of(name: str) -> list[str]:
    """The former names registered for class ``name``."""
    return [alias for alias, owner in _ALIASES.items() if owner == name]


def unregister(name: str, kind: type[PanelKind] | None = None) -> None:
    """Forget a class (of ``kind`` only, when given); unknown names are ignored."""
    known = _REGISTRY.get(name)
    if known is not None and (kind is None or isinstance(known[1], kind)):
        del _REGISTRY[name]
        for alias in aliases_of(name):
            del _ALIASES[alias]


def lookup(name: object, kind: type[PanelKind] | None = None) -> type | None:
    """The class registered as ``name`` or aliased so (of ``kind``, when given), or None."""
    known = class_and_kind(name)
    if known is None or (kind is not None and not isinstance(known[1], kind)):
        return None
    return known[0]


def class_and_kind(name: object) -> tuple[type, PanelKind] | None:
    """The class registered as ``name`` (or with ``name`` among its aliases) and its kind,
    or None (one lookup, for restore)."""
    if not isinstance(name, str):
        return None
    known = _REGISTRY.get(name)
    if known is None and name in _ALIASES:
        known = _REGISTRY.get(_ALIASES[name])
    return known


def kind_of(cls: type) -> PanelKind | None:
    """The kind ``cls`` is registered with, or None when it is not the registered class."""
    known = _REGISTRY.get(cls.__name__)
    return known[1] if known is not None and known[0] is cls else None


def is_registered(cls: type) -> bool:
    """False for a class defined with ``register=False`` (it can never be restored)."""
    return bool(cls.__dict__.get("__cascadeui_registered__", True))


def all_kinds() -> list[PanelKind]:
    """Every kind of panel created (whether or not a class of it is registered)."""
    return list(_KINDS)


def registered() -> list[tuple[type, PanelKind]]:
    """Every registered class with its kind, in registration order."""
    return list(_REGISTRY.values())


class RegistryView(Mapping[str, Any]):
    """A live, read-only view of the registry: class name -> class, for one kind."""

    def __init__(self, kind: type[PanelKind]) -> None:
        self._kind = kind

    def __getitem__(self, name: str) -> Any:
        found = _REGISTRY.get(name)  # class names only, as iteration lists them
        if found is None or not isinstance(found[1], self._kind):
            raise KeyError(name)
        return found[0]

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, (_, kind) in _REGISTRY.items()
                     if isinstance(kind, self._kind)])

    def __len__(self) -> int:
        return sum(1 for _, kind in _REGISTRY.values() if isinstance(kind, self._kind))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"
