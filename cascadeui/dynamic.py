"""Dynamic-item panels: ``discord.ui.DynamicItem`` templates whose data lives in the store.

A :class:`DynamicPanel` item carries its identity in its ``custom_id`` (``vote:1234:yes``)
and discord.py routes every click whose ``custom_id`` matches the class's ``template``,
on any message, with no per-message registration. So after a restart nothing has to be
rebuilt or checked: :func:`~cascadeui.setup_persistence` only calls
``bot.add_dynamic_items`` with every registered class, which costs no Discord request,
however many messages carry them. The item's data lives in the store under the ids its
template captures: ``state["application"]["dynamic_panels"][class_name][data_key]``
(several ids are escaped and joined: see ``docs/panels.md``).

Choose a :class:`~cascadeui.views.PersistentView` / ``PersistentLayoutView`` for a panel
per message that needs ``on_restore``, an owner, detaching on re-send or a purge when its
message is deleted; choose a dynamic item for a template stamped on thousands of messages
(a vote button on every announcement), where restoring one view per message would cost a
message check each (see ``docs/panels.md``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ._kinds import KindMember, PanelKind, RegistryView, lookup, unregister
from ._panel_data import DYNAMIC_KEY, PanelData

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["DynamicPanel", "get_dynamic_class", "registered_dynamic_items",
           "unregister_dynamic_class"]


class _DynamicKind(PanelKind):
    """Routed per class by ``custom_id`` template: no registry entries, no request."""

    name = "dynamic"
    data_root = DYNAMIC_KEY

    def definition_problems(self, cls: type) -> Iterator[str]:
        pattern = getattr(cls, "__discord_ui_compiled_template__", None)
        if not isinstance(pattern, re.Pattern):
            yield "a DynamicPanel must also subclass discord.ui.DynamicItem with template=..."
            return
        for group in getattr(cls, "key_groups", None) or ():
            if (isinstance(group, str) and group not in pattern.groupindex) or (
                    isinstance(group, int) and not 0 < group <= pattern.groups):
                yield (f"key_groups names {group!r}, which the template "
                       f"{pattern.pattern!r} does not capture")

    def class_data_path(self, name: str) -> list[str] | None:
        return [self.data_root, name]

    def stored_classes(self, application: Mapping[str, Any]) -> Iterable[str]:
        stored = application.get(self.data_root)
        return list(stored) if isinstance(stored, Mapping) else []

    def route_class(self, bot: Any, cls: type, store: Any) -> bool:
        assert issubclass(cls, DynamicPanel)
        cls.bind_store(store)
        bot.add_dynamic_items(cls)
        return True


_DYNAMIC_KIND = _DynamicKind()


def registered_dynamic_items() -> Mapping[str, type[DynamicPanel]]:
    """A read-only view of the dynamic registry: class name -> DynamicPanel class."""
    return RegistryView(_DynamicKind)


def get_dynamic_class(name: object) -> type[DynamicPanel] | None:
    """The registered dynamic panel class called ``name``, or None."""
    return lookup(name, _DynamicKind)


def unregister_dynamic_class(name: str) -> None:
    """Forget a registered dynamic class (an unloaded extension, a test)."""
    unregister(name, _DynamicKind)


def _encode_data_key(values: tuple[str | None, ...]) -> str:
    """The data key of an item's captured ``values``: one-to-one, so two items share data
    only when they capture the same ids.

    One value is the key as it is (``None``: ``""``). Several are joined with ``":"``
    after escaping each: ``\\`` for a backslash, ``\\:`` for a colon, and ``\\N`` for
    a group that did not participate. Values without ``:`` or ``\\`` give the same key
    as the plain ``":"`` join used before, so such stored data keeps its key.
    """
    if len(values) == 1:
        return values[0] or ""
    return ":".join("\\N" if v is None else v.replace("\\", "\\\\").replace(":", "\\:")
                    for v in values)


class DynamicPanel(KindMember, PanelData, register=False):
    """Mixin for a ``discord.ui.DynamicItem`` whose data persists in the store.

    Put it first among the bases and pass the template as discord.py expects::

        class VoteButton(DynamicPanel, discord.ui.DynamicItem[discord.ui.Button],
                         template=r"vote:(?P<poll>[0-9]+):(?P<choice>yes|no)"):
            key_groups = ("poll",)          # the data is per poll, not per choice

    The class registers itself by name when defined (``register=False`` for a base);
    ``setup_persistence(bot, ...)`` adds every registered class with
    ``bot.add_dynamic_items`` and binds it to its store.

    :attr:`data_key` encodes the template's captured groups (only :attr:`key_groups`,
    when set; escaped and joined, see ``docs/panels.md``); :attr:`data` and
    :meth:`set_data` read and write
    ``state["application"]["dynamic_panels"][class_name][data_key]``.
    """

    panel_kind: ClassVar[PanelKind] = _DYNAMIC_KIND
    #: Names (or 1-based numbers) of the template groups that make up :attr:`data_key`;
    #: None: every group, in order.
    key_groups: ClassVar[tuple[str | int, ...] | None] = None
    #: The store a class records into; set by ``setup_persistence`` (else the
    #: process-wide store).
    _class_store: ClassVar[StateStore | None] = None
    if TYPE_CHECKING:  # set by discord.ui.DynamicItem from template=
        __discord_ui_compiled_template__: ClassVar[re.Pattern[str]]

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
        """The ids this item's ``custom_id`` captures, one-to-one (see ``docs/panels.md``).

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
        return _encode_data_key(values)

    def _data_path(self) -> list[str]:
        return [self.panel_kind.data_root, type(self).__name__, self.data_key]
