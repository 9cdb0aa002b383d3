"""MkDocs hooks (``hooks:`` in mkdocs.yml) that keep the site complete without upkeep.

- Every ``docs/*.md`` page missing from ``nav`` is appended to it (titled by its first
  heading), so a new page is on the site and never fails ``mkdocs build --strict``.
- ``CHANGELOG.md`` at the repository root becomes the site's ``changelog.md`` page.
- In ``docs/api.md`` the line ``<!-- api-modules -->`` becomes one mkdocstrings ``:::``
  block per public module of the installed ``cascadeui`` package (names without a leading
  underscore), so a new module's docstrings reach the API reference by themselves.
"""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
API_MARKER = "<!-- api-modules -->"
SKIPPED_MODULES = {"cascadeui.__main__"}


def _listed(nav: list[Any]) -> set[str]:
    """The page paths a (nested) nav configuration names."""
    found: set[str] = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found |= _listed(value)
        elif isinstance(value, str):
            found.add(value)
    return found


def _title(page: Path) -> str:
    match = re.search(r"^# (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return match.group(1).strip() if match else page.stem.replace("-", " ").capitalize()


def _installed() -> Path:
    """The site-packages holding the installed ``cascadeui`` (with its real ``adapters``).

    This interpreter's purelib, not ``sys.path``: that may start with the source tree.
    """
    purelib = Path(sysconfig.get_paths()["purelib"])
    if not (purelib / "cascadeui" / "adapters" / "__init__.py").is_file():
        raise RuntimeError(f"no wheel-installed cascadeui in {purelib} (an editable install "
                           "has no cascadeui/adapters there): pip install '.[docs]'")
    return purelib


# Before mkdocstrings' own on_config, which may already create the Python handler.
@event_priority(100)
def on_config(config: Any) -> Any:
    # mkdocstrings reads the installed package, never the source tree, whose
    # cascadeui/adapters.pyi only stands in for the package_dir mapping.
    handlers = config["plugins"]["mkdocstrings"].config["handlers"]
    handlers.setdefault("python", {})["paths"] = [str(_installed())]
    nav: list[Any] = config["nav"] or []
    docs = Path(config["docs_dir"])
    listed = _listed(nav)
    extra = [{_title(page): page.name} for page in sorted(docs.glob("*.md"))
             if page.name not in listed and not page.name.startswith("_")]
    if "changelog.md" not in listed:
        extra.append({"Changelog": "changelog.md"})
    config["nav"] = nav + extra
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files


def public_modules() -> list[str]:
    """Every public module of the installed ``cascadeui``, packages before their modules."""
    root = _installed()
    names = []
    for source in (root / "cascadeui").rglob("*.py"):
        parts = source.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name not in SKIPPED_MODULES and not any(part.startswith("_") for part in parts):
            names.append(name)
    return sorted(names, key=lambda name: name.split("."))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != "api.md" or API_MARKER not in markdown:
        return markdown
    blocks = "\n\n".join(f"::: {name}" for name in public_modules())
    return markdown.replace(API_MARKER, blocks)
