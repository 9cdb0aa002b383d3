"""Redis beyond one server, on loopback ports: a Redis Cluster and a Sentinel setup.

For tests and campaigns of :class:`~cascadeui.adapters.RedisStore` with a client the user
built (``RedisCluster(...)``, ``Sentinel(...).master_for(...)``). Each node is a
:class:`~kit.redis_server.RedisServer` (a private process on a free port);
the cluster is formed with ``CLUSTER MEET``/``CLUSTER ADDSLOTSRANGE`` through redis-py, so
``redis-cli`` is not needed::

    with RedisClusterServers(masters=3) as cluster:
        client = redis.cluster.RedisCluster(host=cluster.host, port=cluster.ports[0])

    with SentinelServers() as ha:              # one master, one replica, three sentinels
        sentinel = redis.sentinel.Sentinel(ha.sentinel_hosts)
        client = sentinel.master_for(ha.master_name)
        ha.kill_master()                       # SIGKILL; returns once a replica is promoted
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from .redis_server import HOST, RedisServer, _StartedProcesses, free_port

__all__ = ["RedisClusterServers", "SentinelServers"]

_SLOTS = 16384


def _client(port: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True)


def _info(port: int, *command: str) -> dict[str, Any]:
    """An INFO-style reply as a dict (redis-py parses some of them, not all)."""
    reply = _client(port).execute_command(*command)
    if isinstance(reply, dict):
        return reply
    return dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # a node still starting or failing over: try again
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.05)


class RedisClusterServers(_StartedProcesses):
    """``masters`` cluster-mode servers sharing the 16,384 slots evenly (no replicas).

    :param masters: how many nodes (3 is the smallest cluster redis-cli would make).
    :param node_timeout_ms: ``cluster-node-timeout``.
    :param timeout: seconds to wait for the cluster to report ``cluster_state:ok``.
    """

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 2000,
                 timeout: float = 20.0) -> None:
        self.host = HOST
        self.timeout = timeout
        # The bus port is chosen too: its default, port + 10000, may be taken or above 65535.
        self.bus_ports: list[int] = [free_port() for _ in range(masters)]
        self.nodes: list[RedisServer]
        self.nodes = [RedisServer(args=("--cluster-enabled", "yes", "--cluster-config-file",
                                        "nodes.conf", "--cluster-node-timeout",
                                        str(node_timeout_ms), "--cluster-port", str(bus)))
                      for bus in self.bus_ports]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> None:
        """Start every node, join them, assign the slots, wait for ``cluster_state:ok``."""
        for node in self.nodes:
            node.start()
        first = _client(self.nodes[0].port)
        per = _SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = _SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * per - 1
            _client(node.port).execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
            if i:
                first.execute_command("CLUSTER MEET", HOST, node.port, self.bus_ports[i])
        for node in self.nodes:
            _wait("the cluster did not report cluster_state:ok",
                  lambda port=node.port: _info(port, "CLUSTER INFO").get("cluster_state")
                  == "ok", self.timeout)

    def close(self) -> None:
        for node in self.nodes:
            node.close()



class SentinelServers(_StartedProcesses):
    """One master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2) on loopback.

    :param replicas: replicas of the master (one is promoted when it dies).
    :param sentinels: sentinel processes; the quorum is a majority of them.
    :param down_after_ms: ``down-after-milliseconds``: how long a dead master goes unnoticed.
    :param appendonly: run the data nodes with ``appendonly yes`` (``appendfsync always``).
    """

    master_name = "cascadeui"

    def __init__(self, *, replicas: int = 1, sentinels: int = 3, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000, appendonly: bool = False,
                 timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.master: RedisServer = RedisServer(appendonly=appendonly, fsync_always=appendonly)
        self.replicas: list[RedisServer]
        self.replicas = [RedisServer(appendonly=appendonly, fsync_always=appendonly,
                                     args=("--replicaof", HOST, str(self.master.port)))
                         for _ in range(replicas)]
        self._dirs = [Path(tempfile.mkdtemp(prefix="cascadeui-sentinel-"))
                      for _ in range(sentinels)]
        self.sentinels: list[RedisServer] = []
        quorum = sentinels // 2 + 1
        for workdir in self._dirs:
            port = free_port()
            conf = workdir / "sentinel.conf"  # sentinel rewrites its config: a file of its own
            conf.write_text(
                f"port {port}\nbind {HOST}\n"
                f"sentinel monitor {self.master_name} {HOST} {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.master_name} {down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.master_name} 1\n")
            self.sentinels.append(RedisServer(port=port, workdir=workdir,
                                              args=(str(conf), "--sentinel")))

    @property
    def sentinel_hosts(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels]

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def master_port(self) -> int:
        """The master's port as the sentinels report it now."""
        addr = _client(self.sentinels[0].port).execute_command(
            "SENTINEL", "get-master-addr-by-name", self.master_name)
        return int(addr[1])

    def start(self) -> None:
        """Start the master, the replicas (waiting for their link), then the sentinels."""
        self.master.start()
        for replica in self.replicas:
            replica.start()
            _wait("a replica did not sync with the master",
                  lambda r=replica: _info(r.port, "INFO", "replication").get(
                      "master_link_status") == "up", self.timeout)
        for sentinel in self.sentinels:
            sentinel.start()
        _wait("the sentinels did not see each other",
              lambda: all(_client(s.port).sentinel_master(self.master_name)[
                  "num-other-sentinels"] == len(self.sentinels) - 1
                  for s in self.sentinels), self.timeout)

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; return the server the sentinels promoted.

        :raises TimeoutError: no replica was promoted within ``timeout`` seconds.
        """
        old = self.master_port()
        dead = next(node for node in self.data_nodes if node.port == old)
        dead.kill()
        new = _wait("no replica was promoted", lambda: (p := self.master_port()) != old and p,
                    self.timeout)
        promoted = next(node for node in self.data_nodes if node.port == new)
        _wait("the promoted replica did not take writes",
              lambda: _info(new, "INFO", "replication").get("role") == "master", self.timeout)
        return promoted

    def close(self) -> None:
        for server in [*self.sentinels, *self.data_nodes]:
            server.close()
        import shutil

        for workdir in self._dirs:
            shutil.rmtree(workdir, ignore_errors=True)


