"""A PostgreSQL to test against: a scratch database on a given server, or a private server.

One implementation for the suite's session database, the benchmarks and the campaigns.
Stdlib only until a database is actually created (psycopg is imported then).

    with scratch_database("postgresql://postgres@127.0.0.1:5432/postgres") as url:
        store = PostgresStore(url)          # a database cascadeui_test_<pid>_<random>

    with PostgresServer() as server:        # initdb + postgres on a free port, a temp dir
        url = server.url                    # trust auth, user "postgres", database "postgres"

A scratch database is created with a random name and dropped (``WITH (FORCE)``) at the
end; no other database on the server is touched. The private server listens on
``127.0.0.1`` and a socket in its own temp dir, never on the machine's 5432.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .reaper import die_with_parent, owned_tempdir, stale_database
from .redis_server import _StartedProcesses

__all__ = [
    "PostgresServer",
    "any_database",
    "PostgresServerError",
    "find_binaries",
    "pgserver_binaries",
    "reachable",
    "scratch_database",
]

HOST = "127.0.0.1"
#: Where the project's machines run PostgreSQL for tests (trust auth).
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class PostgresServerError(RuntimeError):
    """Raised by :meth:`PostgresServer.start` when the server does not come up."""


def find_binaries() -> str | None:
    """The directory holding ``initdb`` and ``postgres``: on PATH, in Debian's
    ``/usr/lib/postgresql/<version>/bin``, or bundled by the ``pgserver`` package (in the
    ``dev`` extra for Python 3.10-3.12, the versions it has wheels for).

    :returns: a directory, or None when there is none.
    """
    found = shutil.which("initdb")
    if found and os.access(Path(found).with_name("postgres"), os.X_OK):
        return str(Path(found).parent)
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(cand, "initdb"), os.X_OK):
            return cand
    return pgserver_binaries()


def pgserver_binaries() -> str | None:
    """The ``bin`` directory of the PostgreSQL the ``pgserver`` package bundles (found
    without importing it), or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for path in Path(root).rglob("initdb"):
            if os.access(path, os.X_OK) and os.access(path.with_name("postgres"), os.X_OK):
                return str(path.parent)
    return None


def reachable(url: str, timeout: float = 2.0) -> bool:
    """True when a TCP connection to ``url``'s host and port opens (no login tried)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if host.startswith("/"):
        return os.path.exists(host)
    try:
        with socket.create_connection((host, parts.port or 5432), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def with_database(url: str, dbname: str) -> str:
    """``url`` naming database ``dbname`` instead (query and credentials kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextlib.contextmanager
def scratch_database(admin_url: str, *, prefix: str = "cascadeui_test_") -> Iterator[str]:
    """Create a database with a random name on ``admin_url``'s server; yield its URL;
    drop it (closing any session still in it) at the end.

    :param admin_url: a URL whose role may ``CREATE DATABASE``.
    """
    import psycopg
    from psycopg import sql

    # The creator's pid in the name: a later run drops the databases of runs that are gone.
    name = f"{prefix}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                             (f"{prefix}%",)).fetchall()
        for (stale,) in rows:
            if stale_database(stale, prefix):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(stale)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@contextlib.contextmanager
def any_database() -> Iterator[str]:
    """A scratch database on ``CASCADEUI_TEST_POSTGRES_URL``'s server (default 127.0.0.1:5432),
    or on a private server when that one does not answer (the benchmarks' choice)."""
    admin = os.environ.get("CASCADEUI_TEST_POSTGRES_URL", DEFAULT_URL)
    with contextlib.ExitStack() as stack:
        if not reachable(admin) and find_binaries() is not None:
            admin = stack.enter_context(PostgresServer()).url
        yield stack.enter_context(scratch_database(admin))


class PostgresServer(_StartedProcesses):
    """A postgres process of our own on ``127.0.0.1``, which may be stopped and restarted.

    ``initdb`` runs once (trust auth, user ``postgres``, fsync on); the port and the data
    directory are fixed for the object's life, so :meth:`start` after :meth:`stop` or
    :meth:`kill` brings the same cluster back where clients expect it. As a context
    manager it starts on entry and, on exit, stops the server and removes its temp dir.

    :param bindir: the directory of ``initdb``/``postgres`` (default: :func:`find_binaries`).
    :param port: a fixed port (default: a free one).
    :param timeout: seconds :meth:`start` waits for the server to accept connections.
    :raises FileNotFoundError: no ``bindir`` given and none found.
    """

    def __init__(self, bindir: str | None = None, *, port: int | None = None,
                 timeout: float = 30.0) -> None:
        found = bindir or find_binaries()
        if found is None:
            raise FileNotFoundError(
                "no PostgreSQL binaries (install postgresql, or pip install pgserver)")
        self.bindir: Path = Path(found)
        self.port: int = port or _free_port()
        self.timeout = timeout
        self.workdir: Path = owned_tempdir("pg")
        self.datadir: Path = self.workdir / "data"
        #: PostgreSQL refuses to run as root: as root, run it as an unprivileged account.
        self.user: str | None = _unprivileged_user() if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.workdir, user=self.user)
            self.bindir = self._reachable_bindir()
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<PostgresServer {self.url} running={self.running}>"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _reachable_bindir(self) -> Path:
        """``bindir``, or a copy of its installation in our work dir when :attr:`user` cannot
        run it (a virtualenv under a directory that account cannot enter: ``mktemp -d``,
        root's home)."""
        try:
            subprocess.run([str(self.bindir / "initdb"), "--version"], user=self.user,
                           capture_output=True, check=True, timeout=30)
            return self.bindir
        except (PermissionError, subprocess.CalledProcessError):
            # <site>/pgserver/pginstall/bin finds its libraries in <site>/pgserver.libs
            # (rpath $ORIGIN/../../../pgserver.libs): copy both, keeping their layout.
            install = self.bindir.parent
            package, copy = install.parent, self.workdir / "binaries"
            shutil.copytree(install, copy / package.name / install.name, symlinks=True)
            for libs in package.parent.glob(f"{package.name}.libs"):
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            return copy / package.name / install.name / self.bindir.name

    def _initdb(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-locale"],
            capture_output=True, check=False, user=self.user, cwd=self.workdir)
        if result.returncode != 0:
            raise PostgresServerError(
                f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections (a no-op when it runs).

        :raises PostgresServerError: initdb failed, the server exited, or it did not come
            up within ``timeout`` seconds; no process is left behind either way.
        """
        if self.running:
            return
        self._initdb()
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - the child holds it
        try:
            self._proc = proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-h", HOST, "-k", str(self.workdir), "-c", "max_connections=100",
                 "-c", "shared_buffers=32MB"],
                stdout=log, stderr=log, start_new_session=True, user=self.user,
                cwd=self.workdir, preexec_fn=die_with_parent())
        finally:
            log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                log_tail = (self.workdir / "postgres.log").read_text(errors="replace")[-1500:]
                raise PostgresServerError(  # the log goes with the work dir: quote it
                    f"private postgres on port {self.port} exited with {proc.returncode}; "
                    f"postgres.log ends:\n{log_tail}")
            if self._accepts():
                return
            time.sleep(0.05)
        self.kill()
        raise PostgresServerError(
            f"private postgres on port {self.port} did not start within {self.timeout}s")

    def _accepts(self) -> bool:
        """True once a login works (not merely the port: recovery refuses logins)."""
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, data is flushed) and reap; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children (a crash: recovery runs on the next
        start) and reap; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: children too
        proc.wait()
        pid_file = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + 30  # a loaded machine schedules the children late
        while pid_file.exists() and time.monotonic() < deadline:
            # Children exit once they notice; a restart before that finds the shared
            # memory still attached and refuses to start.
            if not any(_alive(pid) for pid in _children_of(proc.pid)):
                break
            time.sleep(0.05)

    def close(self) -> None:
        """:meth:`stop`, then remove the temp dir."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)



def _unprivileged_user() -> str:
    """An account to run PostgreSQL as when we are root: ``postgres``, else ``nobody``."""
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresServerError("running as root and no postgres or nobody account to run "
                              "PostgreSQL as")


def _children_of(pid: int) -> list[int]:
    """Processes whose process group is ``pid`` (the postmaster's session), Linux only."""
    found = []
    for entry in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(entry).read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid:  # pgrp
                found.append(int(entry.split("/")[2]))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True
