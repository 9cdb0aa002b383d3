"""Dynamic-item panels: ``discord.ui.DynamicItem`` templates whose data lives in the store.

A :class:`DynamicPanel` item carries its identity in its ``custom_id`` (``vote:1234:yes``)
and discord.py routes every click whose ``custom_id`` matches the class's ``template``,
on any message, with no per-message registration. So after a restart nothing has to be
rebuilt or checked: :func:`~cascadeui.setup_persistence` only calls
``bot.add_dynamic_items`` with every registered class, which costs no Discord request,
however many messages carry them. The item's data lives in the store under the ids its
template captures: ``state["application"]["dynamic_panels"][class_name][data_key]``.

Choose a :class:`~cascadeui.views.PersistentView` / ``PersistentLayoutView`` for a panel
per message that needs ``on_restore``, an owner, detaching on re-send or a purge when its
message is deleted; choose a dynamic item for a template stamped on thousands of messages
(a vote button on every announcement), where restoring one view per message would cost a
message check each (see ``docs/panels.md``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from ._panel_data import DYNAMIC_KEY, PanelData

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["DynamicPanel", "get_dynamic_class", "registered_dynamic_items",
           "unregister_dynamic_class"]


_DYNAMIC: dict[str, type[DynamicPanel]] = {}


def registered_dynamic_items() -> Mapping[str, type[DynamicPanel]]:
    """A read-only view of the dynamic registry: class name -> DynamicPanel class."""
    return MappingProxyType(_DYNAMIC)


def get_dynamic_class(name: object) -> type[DynamicPanel] | None:
    """The registered dynamic panel class called ``name``, or None."""
    return _DYNAMIC.get(name) if isinstance(name, str) else None


def unregister_dynamic_class(name: str) -> None:
    """Forget a registered dynamic class (an unloaded extension, a test)."""
    _DYNAMIC.pop(name, None)


class DynamicPanel(PanelData):
    """Mixin for a ``discord.ui.DynamicItem`` whose data persists in the store.

    Put it first among the bases and pass the template as discord.py expects::

        class VoteButton(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button],
                         template=r"vote:(?P<poll>[0-9]+):(?P<choice>yes|no)"):
            key_groups = ("poll",)          # the data is per poll, not per choice

    The class registers itself by name when defined (``register=False`` for a base);
    ``setup_persistence(bot, ...)`` adds every registered class with
    ``bot.add_dynamic_items`` and binds it to its store.

    :attr:`data_key` is the template's captured groups (only :attr:`key_groups`, when
    set) joined with ``":"``; :attr:`data` and :meth:`set_data` read and write
    ``state["application"]["dynamic_panels"][class_name][data_key]``.
    """

    #: Names (or 1-based numbers) of the template groups that make up :attr:`data_key`;
    #: None: every group, in order.
    key_groups: ClassVar[tuple[str | int, ...] | None] = None
    #: The store a class records into; set by ``setup_persistence`` (else the
    #: process-wide store).
    _class_store: ClassVar[StateStore | None] = None
    if TYPE_CHECKING:  # set by discord.ui.DynamicItem from template=
        __discord_ui_compiled_template__: ClassVar[re.Pattern[str]]

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not register:
            return
        pattern = getattr(cls, "__discord_ui_compiled_template__", None)
        if not isinstance(pattern, re.Pattern):
            raise TypeError(f"{cls.__qualname__}: a DynamicPanel must also subclass "
                            "discord.ui.DynamicItem with template=...")
        for group in cls.key_groups or ():
            if (isinstance(group, str) and group not in pattern.groupindex) or (
                    isinstance(group, int) and not 0 < group <= pattern.groups):
                raise TypeError(f"{cls.__qualname__}.key_groups names {group!r}, which the "
                                f"template {pattern.pattern!r} does not capture")
        known = _DYNAMIC.get(cls.__name__)
        if known is not None and known is not cls and (
                (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__)):
            raise TypeError(f"a DynamicPanel named {cls.__name__!r} is already registered by "
                            f"{known.__module__}.{known.__qualname__}; their stored data "
                            "would mix. Rename one of them.")
        _DYNAMIC[cls.__name__] = cls

    @property
    def store(self) -> StateStore:
        """The store bound by ``setup_persistence`` (else the process-wide store)."""
        if self._store is None and type(self)._class_store is not None:
            return type(self)._class_store  # type: ignore[return-value]
        return super().store

    @classmethod
    def bind_store(cls, store: StateStore | None) -> None:
        """Make every item of this class record into ``store`` (None: the process-wide one)."""
        cls._class_store = store

    @property
    def data_key(self) -> str:
        """The ids this item's ``custom_id`` captures, joined with ``":"``.

        :raises ValueError: the ``custom_id`` does not match the class's template.
        """
        pattern: re.Pattern[str] = type(self).__discord_ui_compiled_template__
        custom_id = str(getattr(self, "custom_id", ""))
        match = pattern.fullmatch(custom_id)
        if match is None:
            raise ValueError(f"{type(self).__name__}: custom_id {custom_id!r} does not match "
                             f"the template {pattern.pattern!r}")
        groups = self.key_groups
        values = match.groups() if groups is None else tuple(match.group(g) for g in groups)
        return ":".join("" if v is None else str(v) for v in values)

    def _data_path(self) -> list[str]:
        return [DYNAMIC_KEY, type(self).__name__, self.data_key]
