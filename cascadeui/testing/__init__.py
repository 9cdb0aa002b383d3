"""What a user's own tests need, shipped with the package: the local Discord API double
(:mod:`cascadeui.testing.discord_double`) and the adapter conformance suite
(:mod:`cascadeui.testing.conformance`).

Import the submodules; the package itself exports nothing. The project's own campaign
machinery (private servers, TCP proxy, power-cut simulator) is not shipped: it lives in the
repository's ``scripts/kit``.
"""

__all__: list[str] = []
