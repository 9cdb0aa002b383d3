from __future__ import annotations

from pathlib import Path

from cascadeui.adapters import FileStore, RedisStore, SQLiteStore


def test_roundtrip_all(tmp_path: Path, redis_url: str, redis_key: str) -> None:
    for store in (FileStore(tmp_path / "s.json"), SQLiteStore(tmp_path / "s.db"),
                  RedisStore(redis_url, key=redis_key)):
        with store:
            assert store.load() == {}
            store.save({"application": {"a": {1, 2}}})
            with store.transaction() as st:
                st["application"]["b"] = 3
            assert store.load() == {"application": {"a": {1, 2}, "b": 3}}
