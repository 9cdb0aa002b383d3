"""Which distribution installs this package, and a warning when upstream's is there too.

This project is published as ``cascadeui-persistence``; the PyPI name ``pycascadeui``
belongs to upstream CascadeUI, whose API differs. Both install the import package
``cascadeui``, so with both installed one's files overwrite the other's. Checked once at
import, cheaply: no files written, no handlers (the WARNING goes to the ``cascadeui`` logger).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

__all__ = ["DISTRIBUTION", "UPSTREAM", "upstream_conflict", "warn_if_upstream_installed"]

#: This project's distribution name (``pip install cascadeui-persistence``).
DISTRIBUTION = "cascadeui-persistence"
#: Upstream CascadeUI's distribution name (also this project's own name before 0.1.0).
UPSTREAM = "pycascadeui"
#: How this project's summary starts, under either name: such a ``pycascadeui`` is ours.
_OUR_SUMMARY = "Summary: Persistence for discord.py bots"


def _metadata_dirs(name: str) -> Iterator[str]:
    """Every ``NAME-VERSION.dist-info`` (or ``.egg-info``) directory on ``sys.path``.

    One directory listing per path entry: importing ``importlib.metadata`` (or even
    ``pathlib``) for this one question would cost more than the rest of ``import cascadeui``.
    """
    prefix = f"{name}-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a missing directory
            continue
        for found in names:
            if found.lower().startswith(prefix) and found.endswith((".dist-info", ".egg-info")):
                yield os.path.join(entry or ".", found)


def _is_ours(where: str) -> bool:
    """Whether the metadata at ``where`` is this project's (under its old name)."""
    metadata = "METADATA" if where.endswith(".dist-info") else "PKG-INFO"
    try:
        with open(os.path.join(where, metadata), encoding="utf-8", errors="replace") as file:
            return _OUR_SUMMARY in file.read()
    except OSError:
        return False


def upstream_conflict() -> str | None:
    """What to do when upstream's ``pycascadeui`` is installed here; else ``None``.

    A ``pycascadeui`` that is this project under its old name is the same code: no advice.
    """
    for where in _metadata_dirs(UPSTREAM):
        if not _is_ours(where):
            version = os.path.basename(where)[len(UPSTREAM) + 1:].rsplit(".", 1)[0]
            return (f"the distribution {UPSTREAM} {version} (upstream CascadeUI, whose API "
                    f"differs) is installed beside {DISTRIBUTION}: both install the import "
                    f"package 'cascadeui', so their files overwrite each other. Run: "
                    f"pip uninstall {UPSTREAM} && pip install --force-reinstall {DISTRIBUTION}")
    return None


def warn_if_upstream_installed() -> None:
    """Log :func:`upstream_conflict`'s advice as a WARNING, if there is any."""
    advice = upstream_conflict()
    if advice is not None:
        import logging

        logging.getLogger("cascadeui").warning("%s", advice)
