"""The README's main job: save, reload, rotate a backup and migrate, on embedded backends.

Run ``python -m cascadeui.demo`` in an empty directory; it needs no token and no server.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

from cascadeui.persistence import FileStorageBackend, SQLiteBackend, migrate_storage


async def run(workdir: Path) -> None:
    """Walk through the storage layer and print what happens at each step."""
    json_path, db_path = workdir / "bot_state.json", workdir / "cascadeui.db"
    state = {
        "application": {
            "scores": {1234567890123456789: 10, 987654321098765432: 7},
            "seen": {"welcome", "rules"},
            "started": datetime(2026, 1, 1, tzinfo=timezone.utc),
        },
        "persistent_views": {},
    }
    async with FileStorageBackend(json_path) as fb, SQLiteBackend(db_path) as sb:
        print(f"1. save to {json_path.name}: {await fb.save_state(state)}")
        state["application"]["scores"][1234567890123456789] += 5
        print(f"2. save again: {await fb.save_state(state)}; backup kept: "
              f"{json_path.with_name(json_path.name + '.bak').exists()}")
        loaded = await fb.load_state()
        print(f"3. reload: types survive: int keys {list(loaded['application']['scores'])}, "
              f"set {loaded['application']['seen']}, {loaded['application']['started']!r}")
        print(f"4. migrate JSON -> SQLite: {await migrate_storage(fb, sb)}")
        async with sb.transaction() as st:
            st["application"]["scores"][987654321098765432] += 1
        print(f"5. transaction on SQLite: scores now {(await sb.load_state())['application']['scores']}")
    print(f"done; files in {workdir}: {sorted(p.name for p in workdir.iterdir())}")


def main() -> None:
    """Entry point of ``python -m cascadeui.demo``: runs in the current directory."""
    asyncio.run(run(Path.cwd()))


if __name__ == "__main__":
    main()
