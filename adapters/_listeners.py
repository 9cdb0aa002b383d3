"""Changes pushed to a running store: one listener thread per store, polling as the net.

Every commit announces its new version (adapters): PostgreSQL with ``pg_notify`` inside
the commit's transaction, Redis with ``PUBLISH`` from inside its commit and append
scripts; each adapter builds the listener for its medium (``listener(notify)``, the
Redis and PostgreSQL ones live with their adapter). A JSON file or a SQLite database is
watched on disk instead: a cheap ``stat``
of its files every :data:`STAT_INTERVAL` seconds (no dependency, works on any file
system). The listener calls ``notify(version)`` from its thread; the engine then checks
the version and catches up from the journal at once (the engine's poll).

Pub/sub and NOTIFY drop messages while a listener is away, so a lost connection is
reconnected with capped, jittered backoff, and every (re)connection calls
``notify(None)``: "something may have been missed, check now". The engine keeps polling
at ``poll_interval`` whatever happens here, so a listener that fails for good costs
latency, never a change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["STAT_INTERVAL", "TICK", "Listener", "Notify", "StatListener", "announced_version",
           "listener_for"]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds between two ``stat`` checks of a JSON file or SQLite database.
STAT_INTERVAL = 0.02
#: Reconnection backoff of a lost listener: first delay and cap, in seconds.
BACKOFF_MIN, BACKOFF_MAX = 0.05, 5.0
#: How long a listener blocks in one wait before checking whether it was stopped.
TICK = 0.25

Notify = Callable[[int | None], None]


class Listener:
    """A daemon thread that calls ``notify`` when the store's medium announces a commit.

    Subclasses implement :meth:`_session`: connect, subscribe, call :meth:`_connected`,
    then deliver announcements until :attr:`stopping` or an error (which reconnects).
    """

    def __init__(self, notify: Notify, name: str) -> None:
        self.notify = notify
        self.name = name
        self._stop = threading.Event()
        self._delay = BACKOFF_MIN
        self._failing = False
        self._on_exit: Callable[[], object] | None = None
        self._thread = threading.Thread(target=self._main, name=f"cascadeui-watch {name}",
                                        daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def signal_stop(self, on_exit: Callable[[], object] | None = None) -> None:
        """Ask the thread to end (it does within about a quarter of a second).

        :param on_exit: called from the thread as it ends (not if it already had).
        """
        if on_exit is not None:
            self._on_exit = on_exit
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it (blocking: call it from a worker thread)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self._loop()
        finally:
            if self._on_exit is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._on_exit()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except Exception as exc:  # a lost connection, an unreachable server
                if self._stop.is_set():
                    return
                if not self._failing:  # once per outage; polling covers it meanwhile
                    log.warning("change listener for %s lost its connection (%s: %s); "
                                "reconnecting, polling meanwhile", self.name,
                                type(exc).__name__, exc)
                self._failing = True
            else:
                return  # stopped
            self._stop.wait(self._delay * random.uniform(1.0, 1.25))
            self._delay = min(self._delay * 2, BACKOFF_MAX)

    def _connected(self) -> None:
        """Subscribed (again): reset the backoff and have the store check what it missed."""
        if self._failing:
            log.info("change listener for %s reconnected", self.name)
        self._failing = False
        self._delay = BACKOFF_MIN
        self.notify(None)

    def _session(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class StatListener(Listener):
    """Watches files by ``stat`` signature (inode, size, mtime) every ``interval`` seconds.

    :param paths: the files whose change means a commit (the JSON file and its journal;
        the SQLite database and its ``-wal``). A missing file is part of the signature.
    """

    def __init__(self, notify: Notify, name: str, paths: list[Path],
                 interval: float = STAT_INTERVAL) -> None:
        super().__init__(notify, name)
        self.paths = paths
        self.interval = interval

    def _signature(self) -> tuple[Any, ...]:
        sig: list[Any] = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                sig.append(None)
            else:
                sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def _session(self) -> None:
        last = self._signature()
        settle = False
        while not self._stop.wait(self.interval):
            now = self._signature()
            if now != last:
                last, settle = now, True
                self.notify(None)
            elif settle:
                # A commit is several writes (WAL frames, then the commit frame): the
                # change may have been seen mid-commit, before the version moved. One
                # more check once the files are still catches that commit now.
                settle = False
                self.notify(None)


def announced_version(payload: Any) -> int | None:
    """The version an announcement carries (None when it carries none we can read)."""
    try:
        return int(payload)
    except (TypeError, ValueError):
        return None


def listener_for(adapter: Any, notify: Notify) -> Listener | None:
    """The listener an adapter offers for its medium (not started), None when it has none.

    Each adapter knows how its medium announces commits (``listener(notify)``): files are
    watched by :class:`StatListener`, Redis and PostgreSQL subscribe to their channel.

    :param notify: called from the listener's thread with the announced version, or None
        for "check now" (a file changed, a reconnection); must be thread-safe.
    """
    make: Callable[[Callable[[int | None], None]], Listener | None] | None = getattr(
        adapter, "listener", None)
    return make(notify) if callable(make) else None
