"""Exit statuses mean something (issue 25 item 8): every campaign exits non-zero when it
sees loss, an unexpected WARNING or a durable call that failed where it should not have.

Each campaign runs at a tiny size with ``CASCADEUI_PLANT`` naming what its checker must
count once more (``scripts/kit/plant.py``); a clean run exiting 0 is checked by each
campaign's own smoke test. Real bugs planted in the code: ``test_mutations.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from _helpers import need_strace
from _spawn import script, script_env

pytestmark = pytest.mark.slow

#: campaign module -> a tiny run of it.
TINY = {
    "campaigns.crash": ("--kills", "1", "--backends", "file", "--modes", "adapter",
                        "--size", "4000", "--max-delay", "0.05"),
    "campaigns.durable": ("--kills", "1", "--sizes", "10KB", "--backends", "json",
                          "--modes", "durable", "--max-run", "0.2"),
    "campaigns.fault": ("--outage", "0.5", "--retry-max", "0.2", "--before", "0.2"),
    "campaigns.cluster_restore": ("--panels", "12", "--clusters", "2", "--deleted", "0",
                                  "--latency", "0.001"),
    "campaigns.redis_aof": ("--kills", "1", "--cuts", "0"),
    "campaigns.powercut": ("--cuts", "8", "--gens", "4", "--backend", "file"),
}


def run(module: str, args: tuple[str, ...], plant: str) -> subprocess.CompletedProcess[str]:
    env = script_env()
    env["CASCADEUI_PLANT"] = plant
    return subprocess.run(script(module, *args), capture_output=True, text=True,
                          timeout=300, check=False, env=env)


@pytest.mark.parametrize("module", sorted(TINY))
def test_a_campaign_that_sees_loss_exits_non_zero(module: str) -> None:
    if module == "campaigns.powercut":
        need_strace()
    out = run(module, TINY[module], "loss")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]


def test_the_durable_campaign_fails_on_a_durable_call_that_failed() -> None:
    out = run("campaigns.durable", TINY["campaigns.durable"], "failure")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert '"durable_failed_unexpectedly": 1' in out.stdout, out.stdout[-1000:]


def test_the_power_cut_campaign_fails_on_an_unexpected_warning() -> None:
    need_strace()
    out = run("campaigns.powercut", TINY["campaigns.powercut"], "warning")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].endswith(" 0 lost")  # nothing else wrong


@pytest.mark.skipif((os.geteuid() != 0 or shutil.which("ip") is None)
                    and not os.environ.get("CI"), reason="network namespaces need root")
@pytest.mark.parametrize("plant", ["loss", "failure"])
def test_the_partition_campaign_counts_loss_and_visible_durable_failures(plant: str) -> None:
    out = run("campaigns.partition", ("--hosts", "2", "--users", "2", "--warmup", "1",
                                      "--settle", "2", "--partition", "2", "--backends",
                                      "redis"), plant)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
    if plant == "failure":  # seen, and not a run that broke down for another reason
        assert last.endswith(", 1 failed unexpectedly"), last
    else:
        assert ", 1 lost, " in last, last
