"""Planted findings (issue 25 item 8): a test makes a campaign's checker see one more loss,
unexpected WARNING or failed durable call, to prove the campaign's exit status says so."""

from __future__ import annotations

import os

__all__ = ["planted"]


def planted(what: str) -> int:
    """1 when ``CASCADEUI_PLANT`` (comma-separated) names ``what``, else 0: a checker adds
    it to its count of ``what`` (``loss``, ``warning``, ``failure``)."""
    return int(what in os.environ.get("CASCADEUI_PLANT", "").split(","))
