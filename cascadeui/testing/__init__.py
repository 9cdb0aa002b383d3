"""Test helpers shipped with the package (the local Discord API double, a private Redis).

Import the submodules (``cascadeui.testing.discord_double``, ``.redis_server``, ...); the
package itself exports nothing.
"""

__all__: list[str] = []
