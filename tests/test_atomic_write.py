"""Files replaced in one step: the old file or the new one, never half, and no leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.atomic_write import write_atomic, write_text_atomic


def test_a_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_text_atomic(path, "old\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"epoch": 1}\n')

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text('{"epoch": 1}\n{"epo')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == '{"epoch": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["decisions.jsonl"]
