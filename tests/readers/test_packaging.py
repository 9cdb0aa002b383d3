"""What installing the project gives (issue 23): the distribution name, its declared lower
bounds, and the warning when upstream CascadeUI's ``pycascadeui`` is installed beside it."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest
from _spawn import run, worker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _requirements() -> dict[str, Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [*cfg["options"]["install_requires"].splitlines(),
             *cfg["options.extras_require"]["all"].splitlines()]
    return {(req := Requirement(line)).name: req for line in lines if line.strip()}


def test_the_distribution_has_a_name_of_its_own() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["name"] == "cascadeui-persistence"
    assert "PostgreSQL" in cfg["metadata"]["description"]
    assert cfg["metadata"]["license_expression"] == "MIT"


@pytest.mark.parametrize(("name", "lowest"), [("discord.py", "2.6"), ("sqlite-utils", "4.0"),
                                             ("psycopg", "3.2.1")])
def test_lower_bounds_are_the_versions_that_work(name: str, lowest: str) -> None:
    """discord.py 2.4/2.5 cannot import cascadeui.views, sqlite-utils 3.x fails the first
    save, psycopg 3.1 has no notifies(timeout=); the `lowest` nox session installs these."""
    assert [s.version for s in _requirements()[name].specifier if s.operator == ">="] == [lowest]


def test_filelock_only_where_fcntl_is_missing() -> None:
    marker = _requirements()["filelock"].marker
    assert marker is not None
    assert not marker.evaluate({"sys_platform": "linux"})
    assert marker.evaluate({"sys_platform": "win32"})


def _import_with(tmp_path: Path, summary: str | None) -> str:
    """stderr of ``import cascadeui`` with a fake ``pycascadeui`` 3.14.2 on the path."""
    if summary is not None:
        info = tmp_path / "pycascadeui-3.14.2.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pycascadeui\n"
                                       f"Version: 3.14.2\nSummary: {summary}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = run(worker("probe", "import"), cwd=tmp_path, env=env, timeout=60, check=True)
    return done.stderr


def test_upstream_pycascadeui_installed_beside_it_is_reported(tmp_path: Path) -> None:
    err = _import_with(tmp_path, "Modular UI framework for discord.py")
    assert "pycascadeui 3.14.2 (upstream CascadeUI" in err
    assert "pip uninstall pycascadeui && pip install --force-reinstall cascadeui-persistence" in err


def test_this_project_under_its_old_name_or_alone_says_nothing(tmp_path: Path) -> None:
    assert _import_with(tmp_path, None) == ""
    assert _import_with(tmp_path, "Persistence for discord.py bots: one state store") == ""
