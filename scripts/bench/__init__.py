"""The benchmarks: run each as a module from ``scripts/`` (``python -m bench.run --help``).

The ``w_*.py`` workers and ``worker.py`` also run by path inside the peer's virtualenv
(pycascadeui 2.1.0), where only their own directory is on ``sys.path``.
"""
