"""The campaigns: crash, durable, fault, partition, power-cut, Redis AOF, clustered restore.

Run each as a module from ``scripts/``: ``python -m campaigns.crash --help``.
"""
