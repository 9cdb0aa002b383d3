"""The panel doctor: what would break a panel after a restart, found before deploying.

:func:`check_panels` (and ``cascadeui doctor [TARGET] [--module M ...]``) looks at every
registered panel class, and with a target at the stored registry and data, and returns
one line per finding, each with its fix:

- a component without an explicit ``custom_id`` (buttons and selects, nested too);
- a static ``custom_id`` over 100 characters, or a ``DynamicPanel`` template that can
  match more than 100 (an unbounded repetition of text; a run of digits counts as an id);
- a ``custom_id`` shared without message binding: two dynamic templates alike, or a
  view's ``custom_id`` a dynamic template also matches;
- a timeout on a persistent panel class;
- stored entries that are malformed, name an unknown class, or can never be restored.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import discord
from discord.ui.view import BaseView

from ._entries import entry_problem
from ._kinds import class_and_kind, registered
from ._late import unknown_classes

__all__ = ["MAX_CUSTOM_ID", "check_panels"]

#: Discord's limit on a ``custom_id``.
MAX_CUSTOM_ID = 100
# An unbounded repetition of text (``.``, ``\w``, ``\S``, a negated class, a class with
# letters); a run of digits (``[0-9]+``, ``\d+``) is an id: a snowflake has at most 20.
_UNBOUNDED = re.compile(r"(?:(?<!\\)\.|\\[wWsSD]|\[\^[^\]]*\]|\[[^\]]*[A-Za-z][^\]]*\])"
                        r"(?:[*+]|\{\d*,\})")


def check_panels(target: Any = None, *, modules: Iterable[str] = ()) -> list[str]:
    """Every finding about the registered panel classes (and ``target``'s stored panels),
    one line each with its fix; an empty list when nothing is wrong.

    :param target: a path, URL, backend or adapter whose stored state is checked too.
    :param modules: modules to import first (where the panel classes are defined).
    """
    for name in modules:
        importlib.import_module(name)
    findings = list(_class_findings())
    if target is not None:
        from .sync import load_state

        findings.extend(_stored_findings(load_state(target)))
    return findings


def _class_findings() -> Iterator[str]:
    classes = registered()
    templates: dict[str, str] = {}
    for cls, kind in classes:
        for problem in kind.definition_problems(cls):
            yield f"{cls.__name__}: {problem}"
        pattern = getattr(cls, "__discord_ui_compiled_template__", None)
        if isinstance(pattern, re.Pattern):
            if _UNBOUNDED.search(pattern.pattern):
                yield (f"{cls.__name__}: template {pattern.pattern!r} can match a custom_id "
                       f"over {MAX_CUSTOM_ID} characters, which Discord refuses; bound its "
                       "repetitions (e.g. [a-z]{1,32} instead of .+)")
            other = templates.setdefault(pattern.pattern, cls.__name__)
            if other != cls.__name__:
                yield (f"{cls.__name__}: same template as {other}, so a click is routed "
                       "to either; change one template")
        if isinstance(cls, type) and issubclass(cls, BaseView):
            yield from _view_findings(cls, classes)


def _view_findings(cls: type[BaseView], classes: list[tuple[type, Any]]) -> Iterator[str]:
    for base in cls.__mro__:
        if base in (discord.ui.View, discord.ui.LayoutView, BaseView):
            break
        value = base.__dict__.get("timeout")
        if value is not None and not isinstance(value, property):
            yield (f"{cls.__name__}: timeout = {value!r}; a persistent panel must never time "
                   "out (discord.py stops routing it); remove the timeout")
            break
    for custom_id in _custom_ids(cls):
        if len(custom_id) > MAX_CUSTOM_ID:
            yield (f"{cls.__name__}: custom_id {custom_id[:30]!r}... has {len(custom_id)} "
                   f"characters; Discord allows {MAX_CUSTOM_ID}: shorten it")
        for other, _ in classes:
            pattern = getattr(other, "__discord_ui_compiled_template__", None)
            if isinstance(pattern, re.Pattern) and pattern.fullmatch(custom_id):
                yield (f"{cls.__name__}: custom_id {custom_id!r} is also matched by the "
                       f"template of {other.__name__}, so its clicks can reach either; "
                       "change the custom_id or the template")


def _custom_ids(cls: type[BaseView]) -> Iterator[str]:
    """The explicit ``custom_id`` of every component declared in the class body."""
    for member in getattr(cls, "__view_children_items__", {}).values():
        if isinstance(member, discord.ui.Item):
            walk: Any = getattr(member, "walk_children", None)  # containers (Components V2)
            for item in (member, *walk()) if walk is not None else (member,):
                custom_id = getattr(item, "custom_id", None)
                if isinstance(custom_id, str):
                    yield custom_id
            continue
        kwargs = getattr(member, "__discord_ui_model_kwargs__", None)
        custom_id = kwargs.get("custom_id") if isinstance(kwargs, Mapping) else None
        if isinstance(custom_id, str):
            yield custom_id


def _stored_findings(state: Mapping[str, Any]) -> Iterator[str]:
    views = state.get("persistent_views")
    for key, entry in (views.items() if isinstance(views, Mapping) else ()):
        problem = entry_problem(entry)
        if problem is not None:
            yield (f"entry {key!r}: malformed ({problem}), so it is never restored; fix it "
                   f"or remove it (`cascadeui delete TARGET persistent_views.{key}`)")
            continue
        found = class_and_kind(entry["class_name"])
        if found is not None and not found[1].message_bound:
            yield (f"entry {key!r}: class {entry['class_name']} is a {found[1].name} panel, "
                   "routed by class with no entries, so this entry never routes; remove it")
    for name, what in sorted(unknown_classes(state, None).items()):
        yield (f"class {name!r} is not registered: {len(what)} stored panels can never be "
               f"restored; import the module defining it (--module), or name {name!r} in "
               "aliases= of the class it was renamed to")
