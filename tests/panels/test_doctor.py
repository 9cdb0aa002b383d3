"""The doctor (issue 22 item 7): every misuse it names is caught on a fixture of bad
panels, with no false positive on the project's own panels; exit status 1 / 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _panels import CounterPanel
from _spawn import REPO, TESTS, module, run

from cascadeui import check_panels, sync
from cascadeui.views import get_view_class

CLASS_FINDINGS = {
    "TimedPanel": "timeout",
    "LongIdPanel": "characters; Discord allows 100",
    "ClashPanel": "also matched by the template of UnboundedTicket",
    "UnboundedTicket": "can match a custom_id over 100",
    "TwinB": "same template as TwinA",
}


def doctor(*args: str) -> tuple[int, list[str]]:
    done = run(module("cascadeui", "doctor", *args, "--json"),
               env={"PYTHONPATH": f"{TESTS}:{REPO / 'examples'}", "PATH": "/usr/bin:/bin"})
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)["findings"]


def test_every_misuse_of_the_fixture_is_one_finding_with_its_fix(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    sync.save_state(str(state), {"application": {"dynamic_panels": {"GoneItem": {"1": {}}}},
                                 "persistent_views": {
        "ok": {"class_name": "TimedPanel", "message_id": "1", "channel_id": "2"},
        "malformed": {"class_name": "TimedPanel", "message_id": "x1", "channel_id": "2"},
        "unknown": {"class_name": "NeverDefined", "message_id": "3", "channel_id": "2"},
        "routed": {"class_name": "TwinA", "message_id": "4", "channel_id": "2"}}})
    code, findings = doctor(str(state), "--module", "_bad_panels")
    assert code == 1
    for name, text in CLASS_FINDINGS.items():
        assert any(f.startswith(f"{name}:") and text in f for f in findings), (name, findings)
    assert any("'malformed'" in f and "cascadeui delete" in f for f in findings)
    assert any("'NeverDefined' is not registered" in f for f in findings)
    assert any("'GoneItem' is not registered" in f for f in findings)  # dynamic data too
    assert any("'routed'" in f and "never routes" in f for f in findings)
    assert not any("'ok'" in f for f in findings)
    assert len(findings) == len(CLASS_FINDINGS) + 4


@pytest.mark.parametrize("where", ["_panels", "bot", "cascadeui.demo"])
def test_no_false_positive_on_the_projects_own_panels(where: str) -> None:
    assert doctor("--module", where) == (0, [])


def test_check_panels_in_process_reads_a_target(tmp_path: Path) -> None:
    assert get_view_class("CounterPanel") is CounterPanel  # the suite's panels, imported
    target = str(tmp_path / "s.db")
    sync.save_state(target, {"application": {}, "persistent_views": {
        "c": {"class_name": "CounterPanel", "message_id": "1", "channel_id": "2"}}})
    # Only the stored findings: other suites of this session register classes of their own.
    assert stored(check_panels(target)) == []
    sync.save_state(target, {"application": {}, "persistent_views": {
        "c": {"class_name": "Renamed", "message_id": "1", "channel_id": "2"}}})
    assert [f.split(":")[0] for f in stored(check_panels(target))] == [
        "class 'Renamed' is not registered"]


def stored(findings: list[str]) -> list[str]:
    return [f for f in findings if f.startswith(("entry ", "class '"))]
