"""Test helpers shipped with the package (the local Discord API double, a private Redis)."""
