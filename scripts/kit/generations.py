"""The documents the power-cut campaigns write: generation ``g`` of a state, and back.

Shared by ``campaigns.powercut`` and ``campaigns.redis_aof``: every field derives from the
generation, so a state mixed from two generations is recognised as none of them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BIG_BYTES", "big_every", "expected", "generation", "set_big_every"]

#: The padding of a big generation: about 2.4 MB, past the 1 MiB where a write may take
#: another path (a temp-file fsync skipped only above 1 MiB is a bug the campaign must see).
BIG_BYTES = 2_400_000
_big_every = 0


def set_big_every(n: int) -> None:
    """Make every ``n``-th generation big (0: none); the writer and the checker agree."""
    global _big_every
    _big_every = n


def big_every() -> int:
    """Every how many generations one is big (0: none)."""
    return _big_every


def expected(g: int) -> dict[str, Any]:
    """Generation ``g``: every field derives from ``g``, so a mixed state cannot pass."""
    if g == 0:
        return {}
    big = _big_every and g % _big_every == 0
    app: dict[str, Any] = {"gen": g, "pad": f"{g // 4:04d}" * (BIG_BYTES // 4 if big else 80)}
    for k in range(5):  # slot k holds the last generation <= g that is k mod 5
        last = g - ((g - k) % 5)
        if last > 0:
            app[f"slot{k}"] = last
    if g % 3 == 0:
        app["every_third"] = {"g": g, "set": {g, g + 1}}
    return {"application": app}


def generation(state: dict[str, Any]) -> int | None:
    """The generation ``state`` is exactly, or None when it is none of them."""
    if state == {}:
        return 0
    try:
        g = state["application"]["gen"]
    except (KeyError, TypeError):
        return None
    return g if isinstance(g, int) and state == expected(g) else None
