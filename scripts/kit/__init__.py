"""The project's test and campaign machinery, shared by ``tests/`` and ``scripts/``, not shipped.

Private servers (:mod:`kit.redis_server`, :mod:`kit.postgres_server`, the Redis cluster and
Sentinel groups of :mod:`kit.redis_topologies`), the TCP proxy for partitions
(:mod:`kit.tcp_proxy`), the strace-based power-cut simulator (:mod:`kit.powercut`) and how
a script starts another script (:mod:`kit.spawn`). Found on ``sys.path`` as the top-level
package ``kit``: by pytest through ``pythonpath = ["scripts"]``, by the scripts because they
run as modules from ``scripts/`` (``cd scripts && python -m campaigns.crash``). Never the
repository root: its ``cascadeui/`` would shadow the installed package.
"""
