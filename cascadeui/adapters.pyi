# Type-checking view of `cascadeui.adapters`. At run time setup.cfg's package_dir maps the
# top-level adapters/ directory to that name (an editable install does it with an import
# hook), which mypy cannot follow; this stub points mypy at the same source files.
from adapters import *  # noqa: F403
from adapters import __all__ as __all__
