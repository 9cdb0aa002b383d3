"""The one place where a panel reads and writes its own data in the store.

:class:`~cascadeui.views.PersistentView`, :class:`~cascadeui.views.PersistentLayoutView`
and :class:`~cascadeui.dynamic.DynamicPanel` items all keep their data under a key path of
the ``application`` slice; only the path differs (:meth:`PanelData._data_path`). Keeping
``data``/``set_data`` here means a change to how panel data is written (durability, a new
action) is made once for every kind of panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .actions import APPLICATION_DELETE, APPLICATION_SET

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["DYNAMIC_KEY", "PANELS_KEY", "PanelData"]

#: Top-level key of the ``application`` slice under which a view panel's data lives:
#: ``state["application"]["panels"][state_key]``.
PANELS_KEY = "panels"
#: Top-level key under which dynamic-item panels keep their data:
#: ``state["application"]["dynamic_panels"][class_name][data_key]``.
DYNAMIC_KEY = "dynamic_panels"


class PanelData:
    """Mixin: ``store``, read-only ``data`` and ``set_data`` over :meth:`_data_path`."""

    _store: StateStore | None = None

    def _data_path(self) -> list[str]:
        """Key path of this panel's data dict inside ``state["application"]``."""
        raise NotImplementedError

    @property
    def store(self) -> StateStore:
        """The store this panel records into (the process-wide one unless given)."""
        if self._store is None:
            from .store import get_store
            return get_store()
        return self._store

    @property
    def data(self) -> Mapping[str, Any]:
        """This panel's data dict (read-only; change it with :meth:`set_data`)."""
        found: Any = self.store.state["application"]
        for key in self._data_path():
            found = found.get(key, {}) if isinstance(found, Mapping) else {}
        return MappingProxyType(found) if isinstance(found, dict) else MappingProxyType({})

    async def set_data(self, key: str, value: Any, *, durable: bool = True) -> None:
        """Set one field of :attr:`data` through the store; return once it is stored.

        :param durable: wait until the change is durable in the backend (the default, so
            a panel answers its user only after the change is saved); False returns at
            once and the change is written within the store's ``max_delay``.
        :raises DurabilityTimeoutError: not stored within the store's ``durable_timeout``
            (the change stays in memory and is retried): tell the user it was not saved.
        """
        await self.store.dispatch(APPLICATION_SET,
                                  {"path": [*self._data_path(), key], "value": value},
                                  durable=durable)

    async def delete_data(self, *, durable: bool = True) -> None:
        """Remove this panel's whole data dict from the store (see :meth:`set_data`)."""
        await self.store.dispatch(APPLICATION_DELETE, {"path": self._data_path()},
                                  durable=durable)
