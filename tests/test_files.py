"""The atomic writer (vsp_assert/files.py): permissions like an ordinary write, and all-or-nothing content."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsp_assert.files import atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_is_readable_as_the_umask_allows(tmp_path: Path, mask: int, expected: int) -> None:
    target = tmp_path / "cases" / "shapes.baseline.json"
    with umask(mask):
        atomic_write_text(target, "{}\n")
    assert mode_of(target) == expected
    assert target.read_text() == "{}\n"


@pytest.mark.parametrize("mode", [0o644, 0o664, 0o755, 0o600, 0o444])
def test_rewriting_a_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    os.chmod(target, mode)
    with umask(0o077):  # a strict umask must not tighten an existing file
        atomic_write_text(target, "new")
    assert mode_of(target) == mode
    assert target.read_text() == "new"


@settings(max_examples=40, deadline=None)
@given(mode=st.integers(0, 0o777), mask=st.integers(0, 0o777))
def test_any_existing_mode_survives_a_rewrite_under_any_umask(mode: int, mask: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "weights.safetensors"
        target.write_bytes(b"old")
        os.chmod(target, mode)
        with umask(mask):
            atomic_write_bytes(target, b"new")
        assert mode_of(target) == mode
        os.chmod(target, 0o600)
        assert target.read_bytes() == b"new"


@settings(max_examples=40, deadline=None)
@given(mask=st.integers(0, 0o777))
def test_any_umask_gives_a_new_file_0666_less_the_umask(mask: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "index.html"
        with umask(mask):
            atomic_write_text(target, "<html>")
        assert mode_of(target) == 0o666 & ~mask


def test_failed_replace_leaves_old_content_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cases.baseline.json"
    target.write_text("old baseline\n")

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new baseline\n")
    assert target.read_text() == "old baseline\n"
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_old_content_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "concepts.json"
    target.write_text("old labels\n")

    def crash(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "half-written labels")
    assert target.read_text() == "old labels\n"
    assert leftovers(tmp_path) == []


def test_success_leaves_no_temp_file_and_the_target_is_a_new_inode(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    before = os.stat(target).st_ino
    keep = open(target)  # a reader holding the old file still sees the old content
    try:
        atomic_write_text(target, "new")
        assert keep.read() == "old"
    finally:
        keep.close()
    assert target.read_text() == "new"
    assert os.stat(target).st_ino != before
    assert leftovers(tmp_path) == []


def test_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "store" / "shapes.baseline.json"
    real.parent.mkdir()
    real.write_text("old")
    os.chmod(real, 0o664)
    link = tmp_path / "cases" / "shapes.baseline.json"
    link.parent.mkdir()
    link.symlink_to(real)
    assert atomic_write_text(link, "new") == link
    assert link.is_symlink()
    assert real.read_text() == "new"
    assert mode_of(real) == 0o664
    assert leftovers(link.parent) == [] and leftovers(real.parent) == []


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    real = tmp_path / "missing.json"
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with umask(0o022):
        atomic_write_text(link, "made")
    assert link.is_symlink() and real.read_text() == "made"
    assert mode_of(real) == 0o644


def test_missing_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write_bytes(target, b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"
