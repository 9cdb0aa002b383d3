"""Griffe extension for the docs site: Sphinx roles in docstrings become cross-references.

The code's docstrings name other objects as ``:class:`Name```, ``:meth:`~Cls.name``` and so
on (Sphinx roles), which Markdown would print raw. Each role is rewritten, before
mkdocstrings renders the docstring, to an optional autorefs link on its target's canonical
path (a link when that object has a page, inline code otherwise), or to inline code when
the name resolves to nothing in the package. mkdocs.yml's Python handler loads it
(``extensions:``); scripts/docs_hooks.py fails the build if a raw role reaches a page.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Alias, Extension, Module, Object

ROLE = re.compile(r":(?:py:)?(class|func|meth|data|attr|mod|exc|obj|const):`([^`]+)`")


def _canonical(collection: Any, path: str) -> str | None:
    """The canonical path of the object at ``path`` (through aliases), or None."""
    try:
        found = collection[path]
    except Exception:  # KeyError, or an alias that resolves outside the loaded packages
        return None
    if isinstance(found, Alias):
        try:
            return str(found.final_target.path)
        except Exception:
            return None
    return str(found.path)


def resolve(obj: Object, target: str) -> str | None:
    """Where a role's ``target`` written in ``obj``'s docstring points: nearest scope first."""
    collection = obj.modules_collection
    scope: Object | None = obj if (obj.is_class or obj.is_module) else obj.parent
    candidates = []
    while scope is not None:
        candidates.append(f"{scope.path}.{target}")
        scope = scope.parent
    candidates += [target, f"{obj.package.path}.{target}"]
    for candidate in candidates:
        path = _canonical(collection, candidate)
        if path is not None:
            return path
    return None


def rewrite(text: str, obj: Object) -> str:
    """``text`` with every Sphinx role replaced by an optional cross-reference or code."""

    def replace(match: re.Match[str]) -> str:
        written = match[2].strip()
        short = written.startswith("~")
        target = written.lstrip("~.").removesuffix("()")
        title = target.rsplit(".", 1)[-1] if short else target
        if match[1] in {"func", "meth"}:
            title += "()"
        path = resolve(obj, target)
        if path is None:
            return f"`{title}`"
        return f'<autoref identifier="{path}" optional>`{title}`</autoref>'

    return ROLE.sub(replace, text)


class SphinxRoles(Extension):
    """Rewrites the roles of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        self._walk(pkg, seen=set())

    def _walk(self, obj: Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value, obj)
        for member in obj.members.values():
            if not isinstance(member, Alias):
                self._walk(member, seen)
