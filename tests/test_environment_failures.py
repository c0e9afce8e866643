"""A failing environment -- a full disk, a broken Graphviz, Ctrl-C while the command starts, a
path that is not UTF-8 -- is one line naming the file, exit status 2 (130 for Ctrl-C), and
leaves the results already computed in place."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoshrink import cli
from autoshrink.atomic_write import save_tensors, write_atomic
from autoshrink.errors import os_error_line
from autoshrink.graph import Cell
from autoshrink.report import html
from autoshrink.report.picture import render

CELL = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))


def test_a_write_that_fails_on_flush_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"

    def full(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a close() raises it

    with pytest.raises(OSError) as info:
        write_atomic(path, full)
    assert info.value.filename == str(path) and info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_safetensors_write_that_fails_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr("safetensors.torch.save", full)
    path = tmp_path / "weights.safetensors"
    with pytest.raises(OSError, match="No space left on device") as info:
        save_tensors(path, {"w": torch.zeros(2)})
    assert info.value.filename == str(path) and not path.exists()
    assert os_error_line(info.value).startswith(f"{path}: cannot write the tensors")
    monkeypatch.undo()

    def disk_full(self, data):  # the bytes are written by this package, into the temporary
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left on device") as info:
        save_tensors(path, {"w": torch.zeros(2)})
    assert info.value.filename == str(path) and not path.exists()


@pytest.fixture
def failing_dot(tmp_path: Path, monkeypatch) -> Path:
    """A Graphviz ``dot`` that fails as on a full disk."""
    dot = tmp_path / "bin" / "dot"
    dot.parent.mkdir()
    said = "Error: failed to write: No space left on device"
    dot.write_text(f"#!/bin/sh\necho '{said}' >&2\nexit 1\n")
    dot.chmod(dot.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("shutil.which", lambda name: str(dot))
    return dot


def test_a_failing_dot_is_an_os_error_and_leaves_no_empty_picture(tmp_path, failing_dot):
    path = tmp_path / "cell.png"
    with pytest.raises(OSError, match="No space left on device") as info:
        render(CELL, path)
    assert info.value.filename == str(path) and not path.exists()


def test_a_search_whose_picture_fails_still_writes_its_results(tmp_path, failing_dot, caplog):
    from autoshrink.search import run_search
    from test_search import ToyEvaluator, toy_config

    run = tmp_path / "run"
    run_search(run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    result = json.loads((run / "result.json").read_text())
    assert result["picture"] is None and (run / "best_cell.json").is_file()
    assert "best_cell.png: Graphviz dot could not draw the cell" in caplog.text


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys) -> None:
    def interrupted(command):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["search", "--preset", "demo"]) == 130
    assert capsys.readouterr().err == "autoshrink: interrupted\n"


def test_a_ctrl_c_while_the_commands_modules_import_waits_for_them(monkeypatch, capsys) -> None:
    """A Ctrl-C raised inside torch's C import of numpy was swallowed (the command ran on) or
    left numpy half imported (a traceback later, and an export folder left behind): it is
    said once the imports are done, and the command does not run."""
    import os
    import signal

    real = cli.build_parser
    imported: list[bool] = []

    def importing(command):
        os.kill(os.getpid(), signal.SIGINT)  # lands while the modules import
        imported.append(True)
        return real(command)

    monkeypatch.setattr(cli, "build_parser", importing)
    monkeypatch.setattr(cli, "configure_logging", lambda verbose: pytest.fail("it ran on"))
    assert cli.main(["count", "x.json"]) == 130 and imported == [True]
    assert capsys.readouterr().err == "autoshrink: interrupted\n"


def test_a_report_page_for_a_path_that_is_not_utf8(tmp_path: Path) -> None:
    title = "run lat\udce9in"  # a folder name with a byte that is not UTF-8, as Python reads it
    page = html.write_page(tmp_path / "index.html", title, [("", html.note(title))])
    assert "run lat?in" in page.read_text(encoding="utf-8")


def test_a_journal_that_cannot_be_opened_any_more_names_the_journal(tmp_path, monkeypatch):
    import autoshrink.journal as journal_module
    from autoshrink.errors import JournalError

    journal = journal_module.Journal(tmp_path / "journal.jsonl")
    journal.append({"type": "event", "key": "a"})
    real_open = journal_module.os.open

    def read_only(path, *args, **kwargs):  # the folder turned read-only mid-run
        if str(path).endswith("journal.jsonl"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(journal_module.os, "open", read_only)
    with pytest.raises(JournalError, match="cannot append to .*journal.jsonl: Permission denied"):
        journal.append({"type": "event", "key": "b"})


def test_a_lock_file_that_cannot_be_removed_does_not_hide_the_error(tmp_path, monkeypatch, caplog):
    from autoshrink.journal import LOCK, RunLock

    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(self))

    with pytest.raises(RuntimeError, match="the real error"), RunLock(tmp_path):
        monkeypatch.setattr(Path, "unlink", refuse)
        raise RuntimeError("the real error")
    monkeypatch.undo()
    assert f"{LOCK}: cannot remove the lock file (Operation not permitted)" in caplog.text
    with RunLock(tmp_path):  # the lock itself was dropped: the file is taken over
        pass


def test_a_start_that_cannot_write_its_fingerprint_leaves_the_folder_free(tmp_path, monkeypatch):
    import autoshrink.run_folder as run_folder
    from autoshrink.search import run_search
    from test_search import ToyEvaluator, toy_config

    def full(run_dir, config, factories):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "fingerprint.json"))

    monkeypatch.setattr(run_folder, "write_fingerprint", full)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        run_search(run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator())
    assert not run.exists()  # the folder the start made is taken back with its files
    monkeypatch.undo()  # the same command again, once there is room
    run_search(run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False)


class _GoneDriver:
    """A worker's pipe whose driver has gone: ``recv`` or ``send`` fails as a reset pipe."""

    def __init__(self, messages: list[object], send_fails: bool) -> None:
        self.messages, self.send_fails = messages, send_fails

    def recv(self) -> object:
        if not self.messages:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return self.messages.pop(0)

    def send(self, message: object) -> None:
        if self.send_fails:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")


@pytest.mark.parametrize("send_fails", [False, True])
def test_a_pool_worker_whose_driver_was_interrupted_exits_quietly(send_fails) -> None:
    import signal

    from autoshrink.executors.pool import _serve

    before, threads = signal.getsignal(signal.SIGINT), torch.get_num_threads()
    try:
        gone = _GoneDriver([("load", 0, object(), {0})], send_fails)
        _serve(gone, (logging.getLogger("autoshrink").level, None))  # returns, no traceback
    finally:  # what the worker sets for its own process
        signal.signal(signal.SIGINT, before)
        torch.set_num_threads(threads)


def test_a_cell_given_through_a_pipe_is_read(cli, tmp_path) -> None:
    import os
    import threading

    fifo = tmp_path / "cell.fifo"
    os.mkfifo(fifo)
    text = json.dumps(CELL.to_dict())

    def feed() -> None:
        with open(fifo, "w") as f:  # blocks until the command opens it, as a shell pipe does
            f.write(text)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    code, out, err = cli("count", fifo, "--json")
    writer.join(timeout=10)
    assert code == 0, err
    assert json.loads(out)["params"] > 0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m autoshrink ARGS`` in a child process (an environment of its own)."""
    return subprocess.run(
        [sys.executable, "-m", "autoshrink", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_a_bad_mplbackend_is_one_line_naming_it(tmp_path: Path) -> None:
    # matplotlib fails its own import on it; the plots need no backend
    done = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path),
                   env={"MPLBACKEND": "bogus"})  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(
        "autoshrink: error: MPLBACKEND='bogus' is not a matplotlib backend ("
    )
    assert done.stderr.rstrip().endswith(
        "unset it: autoshrink draws its plots into files and needs none"
    )


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly(tmp_path: Path) -> None:
    cell = tmp_path / "cell.json"  # show writes its picture beside it
    CELL.save(cell)
    child = subprocess.Popen(
        [sys.executable, "-m", "autoshrink", "show", str(cell)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # as `| head -0` does, before anything is read
    assert child.wait(timeout=120) == 141
    assert child.stderr.read() == b""
