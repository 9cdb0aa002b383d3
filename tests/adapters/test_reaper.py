"""Private servers die with the run that started them, and the next run sweeps what a
crashed one left: temp dirs, server processes, scratch databases (issue 23)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _spawn import run, script_env, worker
from kit.postgres_server import (
    PostgresServer,
    find_binaries,
    pgserver_binaries,
    scratch_database,
)
from kit.reaper import stale_database, sweep_stale_servers


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _dead_pid() -> int:
    proc = run(worker("probe", "pid"), check=True)
    return int(proc.stdout)


@pytest.mark.parametrize("kind", ["redis", "pg"])
def test_a_server_dies_with_its_run_and_the_next_run_sweeps_its_dir(
        kind: str) -> None:
    if kind == "pg" and find_binaries() is None:
        pytest.skip("no PostgreSQL binaries")
    with subprocess.Popen([*worker("server"), kind], env=script_env(),
                          stdout=subprocess.PIPE, text=True) as run:
        assert run.stdout is not None
        pid, workdir = run.stdout.readline().split()
        run.send_signal(signal.SIGKILL)  # a crashed or timed-out test run
        run.wait(timeout=30)
    assert _gone(int(pid), within=10), f"the {kind} server outlived its run"
    # The next run's sweep removes its dir (another test session on this machine, or
    # another xdist worker, may sweep it first: either way it is gone).
    sweep_stale_servers()
    assert not Path(workdir).exists()


def test_servers_of_live_runs_are_never_swept() -> None:
    from kit.redis_server import RedisServer

    with RedisServer() as server:
        assert str(server.workdir) not in sweep_stale_servers()
        assert server.running
        assert server.workdir.exists()


def test_scratch_databases_of_gone_runs_are_dropped(postgres_url: str) -> None:
    import psycopg
    from psycopg import sql

    gone, alive = f"cascadeui_test_{_dead_pid()}_stale", f"cascadeui_test_{os.getpid()}_live"
    assert stale_database(gone)
    assert not stale_database(alive)
    assert not stale_database("cascadeui_test_0123456789ab")  # older names: never guessed
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for name in (gone, alive):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with scratch_database(postgres_url):
            pass
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            names = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
        assert gone not in names
        assert alive in names
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            for name in (gone, alive):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the server drops to another account as root")
def test_pgserver_binaries_in_a_directory_postgres_cannot_enter(tmp_path: Path) -> None:
    """A clone in a ``mktemp -d`` folder (0700, root's): the account PostgreSQL runs as
    cannot reach the pgserver wheel's initdb there, so the server runs a copy."""
    bindir = pgserver_binaries()
    if bindir is None:
        if sys.version_info < (3, 13) and os.environ.get("CI") == "true":
            pytest.fail("pgserver is in the test group for Python < 3.13 (CI=true)")
        pytest.skip("pgserver is not installed (no wheel for this Python)")
    site = Path(bindir).parents[2]
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    for name in ("pgserver", "pgserver.libs"):
        if (site / name).exists():
            shutil.copytree(site / name, hidden / name, symlinks=True)
    with PostgresServer(str(hidden / "pgserver" / "pginstall" / "bin")) as server:
        assert server.running
        assert not str(server.bindir).startswith(str(hidden))
