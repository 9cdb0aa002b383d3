"""The mutation harness (issue 25 item 1): each campaign sees the bugs it exists to catch.

A few known-bad changes, applied to a scratch copy of the package, each run against the
campaign that should see it at the suite's size: every row must be seen (exit status not
0). The whole table: ``python -m campaigns.mutations`` from ``scripts/`` (docs/reliability.md).
"""

from __future__ import annotations

import subprocess

import pytest
from _helpers import need_strace
from _spawn import script, script_env

pytestmark = pytest.mark.slow

SUBSET = ("no fsync of a journal append", "no directory fsync after unlink",
          "SQLite synchronous=NORMAL", "durable waiter woken by an earlier write",
          "journal deleted before the snapshot is replaced")


def test_every_mutation_of_a_subset_is_seen() -> None:
    need_strace()
    out = subprocess.run(script("campaigns.mutations", "--only", ",".join(SUBSET)),
                         capture_output=True, text=True, timeout=600, check=False,
                         env=script_env())
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {line.split(" | ")[0]: line.split(" | ") for line in lines if " | " in line}
    for name in SUBSET:
        assert rows[name][2] == "yes", rows[name]
    assert lines[-1] == f"{len(SUBSET)} mutations, {len(SUBSET)} seen"


def test_every_mutation_still_applies() -> None:
    """A mutation whose text the code no longer holds would silently test nothing."""
    out = subprocess.run(script("campaigns.mutations", "--check"), capture_output=True,
                         text=True, timeout=120, check=False, env=script_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
