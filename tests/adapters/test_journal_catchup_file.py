"""FileStore.load_changes: catching up with another store's commits from the journal.

Two FileStore objects on one path, real files: ``a`` commits with ``save_changes``, ``b``
reads only the journal records committed since the version it last read or wrote, and
gets None whenever it cannot place that version (a full write, a compaction, a journal
replaced, a version it never saw), so that the caller loads the whole document.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import JournalWriter

from cascadeui._merge import Change
from cascadeui.adapters import FileStore
from cascadeui.adapters import _journal as journal_mod
from cascadeui.errors import StateCorruptedError
from cascadeui.serializer import StateSerializer

SER = StateSerializer()


class Writer(JournalWriter):
    """A :class:`JournalWriter` whose commits must succeed."""

    def commit(self, changes: list[Change]) -> int:
        version = super().commit(changes)
        assert version is not None
        return version

    def set_n(self, i: int) -> int:
        return self.commit([(("application", "n"), i)])


def op_n(i: int) -> list[list[Any]]:
    """The decoded record of ``Writer.set_n(i)``."""
    return [[["application", "n"], i]]


def journal(path: Path) -> Path:
    return Path(f"{path}.journal")


def line(payload: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def fresh_load(path: Path) -> dict[str, Any]:
    with FileStore(path) as store:
        return store.load()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    with FileStore(path) as store:
        store.save({"application": {"name": "bot"}})
    return path


@pytest.fixture
def a(path: Path) -> Iterator[Writer]:
    with FileStore(path) as store:
        yield Writer(store)


@pytest.fixture
def b(path: Path, a: Writer) -> Iterator[Writer]:
    with FileStore(path) as store:  # loaded before any of a's commits
        yield Writer(store)


def catch_up(b: Writer) -> list[list[list[Any]]]:
    """``b.store.load_changes`` from b's version, applied to b's document."""
    found = b.store.load_changes(b.version)
    assert found is not None
    records, version = found
    assert version == b.store.version()
    for ops in records:
        journal_mod.apply_record(b.doc, ops)
    b.version = version
    return records


def test_the_records_since_the_version_and_the_current_version(path: Path, a: Writer,
                                                               b: Writer) -> None:
    versions = [a.set_n(i) for i in range(5)]
    found = b.store.load_changes(b.version)
    assert found is not None
    records, version = found
    assert records == [op_n(i) for i in range(5)]
    assert version == versions[-1] == b.store.version()
    for ops in records:
        journal_mod.apply_record(b.doc, ops)
    assert b.doc == fresh_load(path) == a.doc


def test_nothing_changed_is_an_empty_list_and_the_same_version(a: Writer, b: Writer) -> None:
    assert b.store.load_changes(b.version) == ([], b.version)
    a.set_n(1)
    catch_up(b)
    assert b.store.load_changes(b.version) == ([], b.version)


def test_catching_up_twice_continues_where_it_stopped(path: Path, a: Writer) -> None:
    a.set_n(0)
    a.set_n(1)
    with FileStore(path) as store:
        b = Writer(store)  # loaded with records in the journal already
        a.set_n(2)
        a.set_n(3)
        assert catch_up(b) == [op_n(2), op_n(3)]
        a.set_n(4)
        assert catch_up(b) == [op_n(4)]
        a.commit([(("application", "m"), "x")])
        a.set_n(5)
        assert catch_up(b) == [[[["application", "m"], "x"]], op_n(5)]
        assert b.version == a.version
        assert b.doc == fresh_load(path) == a.doc


def test_the_returned_version_can_be_written_against(path: Path, a: Writer,
                                                     b: Writer) -> None:
    a.set_n(1)
    catch_up(b)
    b.commit([(("application", "by"), "b")])
    assert a.store.save_changes([(("application", "n"), 2)], a.version,
                                full=a.full) is None  # b moved the version
    assert catch_up(a) == [[[["application", "by"], "b"]]]
    a.set_n(2)
    assert catch_up(b) == [op_n(2)]
    assert b.doc == a.doc == fresh_load(path)
    assert a.fulls == b.fulls == 0


def test_the_compaction_budget_counts_the_records_caught_up(
        path: Path, a: Writer, b: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "JOURNAL_MIN_BYTES", 1000)
    for i in range(6):
        a.commit([(("application", "pad", i), "x" * 60)])
    assert a.fulls == 0
    assert 600 < journal(path).stat().st_size < 900
    catch_up(b)
    b.commit([(("application", "big"), "y" * 300)])  # 600+ bytes + 300 > 1000
    assert b.fulls == 1, "appended past the budget: the cached journal size is stale"
    assert not journal(path).exists()
    assert fresh_load(path) == b.doc


def test_none_after_a_full_write(path: Path, a: Writer, b: Writer) -> None:
    a.set_n(1)
    a.store.save({"application": {"n": 2}})
    assert b.store.load_changes(b.version) is None
    b.doc, b.version = b.store.load_versioned()
    a.doc, a.version = a.store.load_versioned()
    a.set_n(3)  # the first append after a full write starts a new journal
    assert catch_up(b) == [op_n(3)]
    assert b.doc == fresh_load(path)


def test_none_after_a_compaction(path: Path, a: Writer, b: Writer,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "JOURNAL_MIN_BYTES", 300)
    a.set_n(0)
    catch_up(b)
    for i in itertools.count():
        a.commit([(("application", "pad", i), "x" * 60)])
        if a.fulls:
            break
    assert b.store.load_changes(b.version) is None


def test_none_for_a_version_it_never_saw(path: Path, a: Writer, b: Writer) -> None:
    a.set_n(1)
    assert b.store.load_changes(12345) is None
    with FileStore(path) as never_read:
        assert never_read.load_changes(b.version) is None
        never_read.load()  # a lock-free load does not place versions either
        assert never_read.load_changes(b.version) is None
    assert catch_up(b) == [op_n(1)]


def test_none_when_the_journal_is_replaced_or_cut(path: Path, a: Writer,
                                                  b: Writer) -> None:
    a.set_n(1)
    catch_up(b)
    good = journal(path).read_bytes()
    a.set_n(2)
    other = path.with_name("other")  # made before the old one goes: another inode
    other.write_bytes(good + line(SER.serialize({"ops": op_n(2)}).encode()))
    other.replace(journal(path))
    assert b.store.load_changes(b.version) is None  # another inode
    b.doc, b.version = b.store.load_versioned()
    with open(journal(path), "r+b") as fh:
        fh.truncate(len(good) - 5)
    assert b.store.load_changes(b.version) is None  # shorter than what b read


def test_a_torn_tail_is_left_out_until_it_is_complete(path: Path, a: Writer,
                                                      b: Writer) -> None:
    a.set_n(1)
    torn = line(SER.serialize({"ops": op_n(2)}).encode())
    with open(journal(path), "ab") as fh:
        fh.write(torn[:12])  # an append that crashed half way
    assert catch_up(b) == [op_n(1)]
    assert b.store.load_changes(b.version) == ([], b.version)
    with open(journal(path), "ab") as fh:
        fh.write(torn[12:])
    assert catch_up(b) == [op_n(2)]
    a.doc, a.version = a.store.load_versioned()
    a.set_n(3)
    assert catch_up(b) == [op_n(3)]
    assert b.doc == fresh_load(path) == {"application": {"name": "bot", "n": 3}}


def test_a_torn_tail_rewritten_by_the_next_append_is_none(path: Path, a: Writer,
                                                          b: Writer) -> None:
    a.set_n(1)
    with open(journal(path), "ab") as fh:
        fh.write(b"0123abcd {\"ops\"")
    catch_up(b)
    a.doc, a.version = a.store.load_versioned()
    a.set_n(2)  # rewrites the journal without the torn tail: another inode
    assert b.store.load_changes(b.version) is None
    b.doc, b.version = b.store.load_versioned()
    assert b.doc == a.doc


def test_a_damaged_record_is_an_error_naming_the_journal_line(path: Path, a: Writer,
                                                              b: Writer) -> None:
    a.set_n(1)
    a.set_n(2)
    catch_up(b)  # lines 1-3 read: numbering continues after them
    for i in range(3, 6):
        a.set_n(i)  # lines 4, 5, 6
    lines = journal(path).read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    lines[4] = lines[4].replace(b"application", b"applicatiOn")  # its checksum fails
    journal(path).write_bytes(b"".join(lines))
    version = b.store.version()
    with pytest.raises(StateCorruptedError, match=r"state\.json\.journal line 5: checksum"):
        b.store.load_changes(b.version)
    with pytest.raises(StateCorruptedError):  # still: the error did not move the extent
        b.store.load_changes(b.version)
    assert b.store.version() == version


def test_a_record_that_does_not_decode_is_an_error(path: Path, a: Writer,
                                                   b: Writer) -> None:
    a.set_n(1)
    with open(journal(path), "ab") as fh:
        fh.write(line(b'{"ops": 5}'))
    with pytest.raises(StateCorruptedError, match=r"state\.json\.journal line 3: "):
        b.store.load_changes(b.version)
