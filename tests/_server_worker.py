"""A process that starts private servers and waits to be killed (tests/adapters/test_reaper.py).

Run with ``scripts/`` on ``PYTHONPATH`` (``kit.spawn.script_env``): ``python _server_worker.py
redis|pg``; prints the server's pid and work dir, then sleeps.
"""

from __future__ import annotations

import sys
import time

from kit.postgres_server import PostgresServer
from kit.redis_server import RedisServer


def main() -> None:
    server = RedisServer() if sys.argv[1] == "redis" else PostgresServer()
    server.start()
    assert server._proc is not None
    print(server._proc.pid, server.workdir, flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
