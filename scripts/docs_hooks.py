"""MkDocs hooks (``hooks:`` in mkdocs.yml) that keep the site complete without upkeep.

- Every ``docs/*.md`` page missing from ``nav`` is appended to it (titled by its first
  heading), so a new page is on the site and never fails ``mkdocs build --strict``.
- ``CHANGELOG.md`` at the repository root becomes the site's ``changelog.md`` page.
- Every public module of the installed ``cascadeui`` package (names without a leading
  underscore) gets its own generated page ``api/<module>.md`` (one mkdocstrings ``:::``
  block) under "API reference" in the nav, and the line ``<!-- api-modules -->`` of
  ``docs/api.md`` becomes the list of those pages, so a new module's docstrings reach the
  API reference by themselves.
- ``css/pygments.css`` is generated from the installed Pygments (the colours of the code
  that ``pymdownx.highlight`` marks up at build time: no highlight.js from a CDN).
- Sphinx roles in docstrings (``:class:`Name```) become links through the Griffe extension
  in ``scripts/docs_roles.py``; a raw role left on an API page fails the build.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
API_MARKER = "<!-- api-modules -->"
SKIPPED_MODULES = {"cascadeui.__main__"}
API_PAGE = "api.md"
RAW_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):(?:`|<code>)")


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
    python = handlers.setdefault("python", {})
    python["paths"] = [str(_installed())]
    python.setdefault("options", {}).setdefault("extensions", []).append(
        f"{ROOT / 'scripts' / 'docs_roles.py'}:SphinxRoles")
    nav: list[Any] = [_with_module_pages(item) for item in config["nav"] or []]
    docs = Path(config["docs_dir"])
    listed = _listed(nav)
    extra = [{_title(page): page.name} for page in sorted(docs.glob("*.md"))
             if page.name not in listed and not page.name.startswith("_")]
    if "changelog.md" not in listed:
        extra.append({"Changelog": "changelog.md"})
    config["nav"] = nav + extra
    return config


def _with_module_pages(item: Any) -> Any:
    """The nav entry of ``api.md`` turned into a section: the overview, then one page a module."""
    if not isinstance(item, dict) or next(iter(item.values())) != API_PAGE:
        return item
    title = next(iter(item))
    return {title: [{"Overview": API_PAGE},
                    *({name: _module_page(name)} for name in public_modules())]}


def _module_page(name: str) -> str:
    return f"api/{name}.md"


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=changelog))
    from pygments.formatters import HtmlFormatter

    css = HtmlFormatter(style="default").get_style_defs(".highlight")
    files.append(File.generated(config, "css/pygments.css", content=css))
    for name in public_modules():
        page = f"::: {name}\n    options:\n      heading_level: 1\n"
        files.append(File.generated(config, _module_page(name), content=page))
    return files


def _summary(name: str) -> str:
    """The first paragraph of the installed module's docstring, on one line."""
    root = _installed() / Path(*name.split("."))
    source = root / "__init__.py" if root.is_dir() else root.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    line = " ".join(doc.strip().split("\n\n", 1)[0].split())
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", line)


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
    if page.file.src_uri != API_PAGE or API_MARKER not in markdown:
        return markdown
    links = "\n".join(f"- [`{name}`]({_module_page(name)}): {_summary(name)}"
                      for name in public_modules())
    return markdown.replace(API_MARKER, links)


def on_post_page(output: str, page: Any, config: Any) -> str:
    """Refuse an API page on which a Sphinx role was printed raw instead of linked."""
    api_page = page.file.src_uri == API_PAGE or page.file.src_uri.startswith("api/")
    if api_page and (raw := RAW_ROLE.search(output)):
        context = output[max(raw.start() - 80, 0):raw.end() + 40]
        raise PluginError(f"{page.file.src_uri}: a raw Sphinx role on the page: {context!r}")
    return output
