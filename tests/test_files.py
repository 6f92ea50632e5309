"""Atomic writes and the checksums seal (`gridtune.files`)."""

from __future__ import annotations

import json
import os

import pytest

from gridtune.files import (
    CHECKSUMS,
    atomic_path,
    atomic_write_text,
    check_sealed,
    damage_message,
    file_digest,
    seal,
    unseal,
)


def test_atomic_path_renames_only_a_finished_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.")
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the rename
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_seal_records_sizes_and_digests_and_merges(tmp_path):
    atomic_write_text(tmp_path / "a.json", '{"x": 1}')
    (tmp_path / "sub").mkdir()
    atomic_write_text(tmp_path / "sub" / "b.txt", "hello")
    seal(tmp_path, ["a.json"])
    seal(tmp_path, ["sub/b.txt"])
    files = json.loads((tmp_path / CHECKSUMS).read_text())["files"]
    assert files == {"a.json": {"bytes": 8, "sha256": file_digest(tmp_path / "a.json")["sha256"]},
                     "sub/b.txt": {"bytes": 5, "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c"
                                   "1fa7425e73043362938b9824"}}
    assert check_sealed(tmp_path) == []
    unseal(tmp_path, ["a.json"])
    assert set(json.loads((tmp_path / CHECKSUMS).read_text())["files"]) == {"sub/b.txt"}


@pytest.mark.parametrize("fault, problem", [
    ("truncate", "is truncated (3 of 7 bytes)"),
    ("extend", "is longer than written (8 bytes, 7 written)"),
    ("flip", "has other content than was written"),
    ("missing", "is missing"),
])
def test_each_kind_of_damage_is_named(tmp_path, fault, problem):
    path = tmp_path / "data.txt"
    atomic_write_text(path, "1234567")
    seal(tmp_path, ["data.txt"])
    if fault == "truncate":
        path.write_text("123")
    elif fault == "extend":
        path.write_text("12345678")
    elif fault == "flip":
        path.write_text("1234577")
    else:
        path.unlink()
    [damage] = check_sealed(tmp_path, remedy="rebuild it")
    assert damage.path == path and damage.problem.startswith(problem)
    assert damage_message("dataset `d`", [damage]).startswith(f"dataset `d`: `{path}` {problem}")
    if fault == "flip":  # sizes alone cannot see a flipped bit; the digest does
        assert check_sealed(tmp_path, deep=False) == []


def test_a_damaged_seal_is_itself_named(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "a")
    seal(tmp_path, ["a.txt"])
    (tmp_path / CHECKSUMS).write_text('{"format": "gridtune-checks')
    [damage] = check_sealed(tmp_path)
    assert damage.path.name == CHECKSUMS and "unreadable" in damage.problem


def test_several_damaged_files_make_one_line(tmp_path):
    for name in ("a", "b", "c"):
        atomic_write_text(tmp_path / name, name * 4)
    seal(tmp_path, ["a", "b", "c"])
    (tmp_path / "a").unlink()
    (tmp_path / "c").write_text("c")
    text = damage_message("x", check_sealed(tmp_path, remedy="fix"))
    assert "\n" not in text and text.endswith("(also damaged: `c`)")


def test_an_optional_sealed_file_may_go_but_not_change(tmp_path):
    from gridtune.files import check_sealed, seal

    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "cal.json").write_text('{"x": 1}')
    seal(tmp_path, ["a.json"])
    seal(tmp_path, ["cal.json"], optional=True)
    assert check_sealed(tmp_path) == []
    (tmp_path / "cal.json").write_text('{"x": 2}')
    assert [d.path.name for d in check_sealed(tmp_path)] == ["cal.json"]  # present: must match
    (tmp_path / "cal.json").unlink()
    assert check_sealed(tmp_path) == []  # removed: not damage
    (tmp_path / "a.json").unlink()
    assert [d.problem for d in check_sealed(tmp_path)] == ["is missing"]
