"""Nothing lost when a program ends: the last writes of every store at shutdown.

Three ways a program ends without ``await store.close()``, and what happens to the changes
a store has not written yet:

* **The loop ends** (``asyncio.run()`` returning, Ctrl-C, ``bot.run()`` returning): asyncio
  cancels the writer task; the writer then writes what is pending before it ends
  (see :meth:`~cascadeui._engine.Engine.final_write`).
* **SIGTERM** (``kill``, ``docker stop``, systemd): when nothing else handles SIGTERM, the
  first store started on the main thread's loop installs a handler on that loop that writes
  every store's pending changes, then lets the signal take its default effect (the process
  ends with SIGTERM, as it would have). A second SIGTERM ends it at once. Install your own
  handler before enabling persistence to keep yours; then close the store in it.
* **The interpreter exits** with a store whose loop is stopped, closed, or running in
  another thread (the sync API's private loop, a bot in a thread): an ``atexit`` hook
  writes the pending changes through that loop, or through a fresh one.

Each gets ``durable_timeout`` seconds; where the changes still cannot be written (the
medium is down, SIGKILL leaves no chance at all), a WARNING names how many changes were
not saved and where.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import signal
import threading
import weakref
from typing import Protocol

__all__ = ["Covered", "watch"]

log: logging.Logger = logging.getLogger(__name__)



class Covered(Protocol):
    """What shutdown needs of a store's writer (:class:`cascadeui._engine.Engine`)."""

    loop: asyncio.AbstractEventLoop

    @property
    def current(self) -> bool: ...

    @property
    def durable_timeout(self) -> float: ...

    def needs_write(self) -> bool: ...

    async def drain(self, why: str, *, warn: bool = True) -> None: ...

    def warn_unsaved(self, why: str) -> None: ...

    def save_at_exit(self) -> None: ...


_ENGINES: weakref.WeakSet[Covered] = weakref.WeakSet()
_SIGTERM_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_hooked = False
_hook_lock = threading.Lock()


def watch(engine: Covered) -> None:
    """Cover ``engine`` at interpreter exit and, on the main thread's loop, at SIGTERM."""
    global _hooked
    _ENGINES.add(engine)
    with _hook_lock:
        if not _hooked:
            _register_exit_hook()
            _hooked = True
    _watch_sigterm(engine.loop)


def _register_exit_hook() -> None:
    """Run :func:`_at_exit` while the interpreter can still start threads.

    The final writes go through worker threads, and Python 3.12+ refuses new threads once
    ``atexit`` callbacks run ("can't create new thread at interpreter shutdown"). Hook in
    where ``concurrent.futures`` does, before the threads are joined, where that exists.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_at_exit)
            return
        except RuntimeError:  # the interpreter is already shutting down
            pass
    atexit.register(_at_exit)


def _watch_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    """Handle SIGTERM on ``loop`` if it runs on the main thread and nobody else does."""
    if loop in _SIGTERM_LOOPS or threading.current_thread() is not threading.main_thread():
        return
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or signal.getsignal(sigterm) is not signal.SIG_DFL:
        return  # the application (or a framework) handles SIGTERM: leave it to them
    try:
        loop.add_signal_handler(sigterm, _on_sigterm, loop)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, a non-main thread
        return
    _SIGTERM_LOOPS.add(loop)


def _on_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    # Back to the default at once: a second SIGTERM ends the process without waiting.
    loop.remove_signal_handler(signal.SIGTERM)
    _SIGTERM_LOOPS.discard(loop)
    log.info("SIGTERM: writing pending changes before the process ends")
    loop.create_task(_save_then_terminate(loop), name="cascadeui-sigterm")


async def _save_then_terminate(loop: asyncio.AbstractEventLoop) -> None:
    engines = [engine for engine in list(_ENGINES) if engine.loop is loop and engine.current]
    deadline = loop.time() + max((e.durable_timeout for e in engines), default=0.0)
    # The program keeps running meanwhile (a bot keeps dispatching): drain until one
    # synchronous check finds nothing pending, so no change lands between it and the end.
    while True:
        pending = [engine for engine in engines if engine.needs_write()]
        if not pending or loop.time() >= deadline:
            break
        await asyncio.gather(*(engine.drain("SIGTERM", warn=False) for engine in pending),
                             return_exceptions=True)
    for engine in engines:
        engine.warn_unsaved("SIGTERM")
    signal.raise_signal(signal.SIGTERM)  # the default effect, now that the data is safe


def _at_exit() -> None:
    for engine in list(_ENGINES):
        try:
            engine.save_at_exit()
        except Exception:  # never fail interpreter exit; say what was not saved
            log.exception("writing pending changes at interpreter exit failed")
            engine.warn_unsaved("interpreter exit")
