"""Files replaced in one step: the old file or the new one, never half, and no leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.atomic_write import write_atomic, write_csv, write_text_atomic


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


def test_a_file_given_through_a_symlink_is_written_where_the_link_leads(tmp_path: Path) -> None:
    """A latency table shared through a symlink (runs/a/table.json -> shared/table.json): the
    link was replaced by a private copy, the shared table never got what was measured, and
    runs holding links to one table did not take turns (their lock was beside each link)."""
    from autoshrink.atomic_write import locked

    shared = tmp_path / "shared" / "table.json"
    shared.parent.mkdir()
    shared.write_text("old")
    link = tmp_path / "table.json"
    link.symlink_to(Path("shared") / "table.json")
    write_text_atomic(link, "new")
    assert link.is_symlink() and shared.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "table.json"]
    assert [p.name for p in shared.parent.iterdir()] == ["table.json"]  # no temporary left
    with locked(link):
        assert (shared.parent / ".table.json.lock").exists()
        assert not (tmp_path / ".table.json.lock").exists()


def test_an_error_of_another_file_is_raised_as_it_is(tmp_path: Path) -> None:
    # only an error naming no file or the temporary one is renamed to the file being replaced
    def read_another(tmp: Path) -> None:
        (tmp_path / "missing.json").read_text()

    with pytest.raises(FileNotFoundError) as caught:
        write_atomic(tmp_path / "out.json", read_another)
    assert caught.value.filename == str(tmp_path / "missing.json")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_names_the_file_not_the_temporary(tmp_path, monkeypatch) -> None:
    # on a read-only mount, removing the temporary that was never made fails too (EROFS, not
    # ENOENT): that error replaced the write's, and named the hidden temporary file
    import errno

    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    def write(tmp: Path) -> None:
        refuse(tmp)

    monkeypatch.setattr(Path, "unlink", refuse)
    path = tmp_path / "report" / "candidates.csv"
    with pytest.raises(OSError, match="Read-only file system") as caught:
        write_atomic(path, write)
    assert caught.value.filename == str(path)


def test_json_files_are_strict_whatever_numbers_they_get(tmp_path: Path) -> None:
    import json

    import numpy as np
    import torch

    from autoshrink.atomic_write import write_json

    path = tmp_path / "metrics.json"
    write_json(path, {"nan": float("nan"), "inf": [float("-inf")], "np": np.float32(0.5),
                      "torch": torch.tensor(3), "b": {"a": 1}}, sort_keys=True)  # fmt: skip
    text = path.read_text()
    assert json.loads(text) == {"b": {"a": 1}, "inf": [None], "nan": None, "np": 0.5, "torch": 3}
    assert text.endswith("}\n") and text.index('"b"') < text.index('"nan"')  # sorted
    write_json(path, {"z": 1, "a": 2})  # unsorted unless asked: the order it was given
    assert path.read_text() == '{\n  "z": 1,\n  "a": 2\n}\n'
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))


def test_a_table_whose_rows_fail_midway_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    write_csv(path, ["a", "b"], [[1, 2], [3, "x,y"]])
    assert path.read_bytes() == b'a,b\r\n1,2\r\n3,"x,y"\r\n'  # as the csv module writes

    def rows():
        yield [5, 6]
        raise OSError("File too large")

    with pytest.raises(OSError, match="File too large"):
        write_csv(path, ["a", "b"], rows())
    assert path.read_bytes() == b'a,b\r\n1,2\r\n3,"x,y"\r\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_locked_lets_one_process_in_at_a_time(tmp_path) -> None:
    # workers merging their measurements into a shared latency table could drop each other's
    import threading
    import time

    from autoshrink.atomic_write import locked

    order: list[str] = []
    table = tmp_path / "t.json"

    def second() -> None:
        with locked(table):
            order.append("second")

    with locked(table):
        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.3)  # it waits for the lock meanwhile
        order.append("first")
    waiting.join(10)
    assert order == ["first", "second"]
    assert [p.name for p in tmp_path.iterdir()] == [".t.json.lock"]  # hidden, beside it
    assert (tmp_path / ".t.json.lock").stat().st_mode & 0o777 == 0o644 & ~umask()
    with (
        pytest.raises(OSError, match="cannot create the lock file") as caught,
        locked(tmp_path / "missing" / "t.json"),
    ):
        pass
    assert caught.value.filename == str(tmp_path / "missing" / ".t.json.lock")


def test_a_lock_the_file_system_refuses_names_the_lock_file(tmp_path, monkeypatch) -> None:
    import errno
    import fcntl

    from autoshrink.atomic_write import locked

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")  # an NFS mount without a lock daemon

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with (
        pytest.raises(OSError, match=r"cannot lock it \(No locks available\)") as caught,
        locked(tmp_path / "t.json"),
    ):
        pytest.fail("the body ran without the lock")
    assert caught.value.filename == str(tmp_path / ".t.json.lock")


def umask() -> int:
    """This process's umask (set, read back and restored)."""
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_weights_file_is_as_readable_as_the_json_beside_it(tmp_path) -> None:
    """safetensors' save_file makes owner-only files (0600): on a shared machine the weights
    were the one output others could not read."""
    import torch
    from safetensors.torch import load_file

    from autoshrink.atomic_write import save_tensors, write_json

    save_tensors(tmp_path / "w.safetensors", {"a": torch.arange(3.0)}, {"k": "v"})
    write_json(tmp_path / "m.json", {})
    mode = (tmp_path / "m.json").stat().st_mode & 0o777
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == mode
    assert torch.equal(load_file(tmp_path / "w.safetensors")["a"], torch.arange(3.0))


def test_save_tensors_takes_a_state_as_a_module_gives_it(tmp_path: Path) -> None:
    # each caller detached, moved and made its tensors contiguous itself (one forgot .cpu());
    # on this CPU-only test, what shows is the contiguous copy and the values of a graph's tensor
    import torch
    from safetensors.torch import load_file

    from autoshrink.atomic_write import save_tensors

    weight = torch.arange(6.0).reshape(2, 3).requires_grad_()
    state = {"t": weight.t(), "w": weight * 2}  # not contiguous (refused by save_file); in a graph
    save_tensors(tmp_path / "s.safetensors", state)
    read = load_file(tmp_path / "s.safetensors")
    assert torch.equal(read["t"], weight.detach().t()) and torch.equal(read["w"], 2 * read["t"].t())


def test_the_same_tensors_and_metadata_make_the_same_file(tmp_path: Path) -> None:
    # safetensors writes the metadata in the order of a Rust hash map, drawn anew for each file:
    # two runs of one seed wrote weights and checkpoints with the same tensors that differed in
    # their header (sha256sum told them apart)
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import save

    from autoshrink.atomic_write import save_tensors

    tensors = {"b": torch.ones(2), "a": torch.arange(3.0)}
    metadata = {f"key{i}": "é" * i for i in range(8)}
    files = []
    for n in range(6):
        path = tmp_path / f"{n}.safetensors"
        save_tensors(path, tensors, dict(reversed(metadata.items())) if n % 2 else metadata)
        files.append(path.read_bytes())
    assert len(set(files)) == 1
    size = int.from_bytes(files[0][:8], "little")
    assert list(json.loads(files[0][8 : 8 + size])["__metadata__"]) == sorted(metadata)
    assert size % 8 == 0 and files[0][8 + size :] == save(tensors)[-20:]  # the data as it was
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata and torch.equal(f.get_tensor("a"), tensors["a"])
