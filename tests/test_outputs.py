"""Where commands write: a folder of another command's results is refused, and so are output
paths that cannot be written, before any work; a failed start leaves the folder as it was.
Also the bad values that used to get through to a traceback or a silent wrong result."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from autoshrink.cli import out_of_memory_line
from autoshrink.errors import BenchmarkError, ConfigError, HardwareError
from autoshrink.evaluators.nb201_zero_cost import NB201ZeroCost
from autoshrink.hardware.blocks import network_blocks
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.hardware.table import BlockEntry, LatencyTable
from autoshrink.outputs import (
    SIGNATURES,
    check_output_file,
    claim_folder,
    holder,
    mark_unfinished,
    unfinished,
)
from autoshrink.presets import preset
from autoshrink.singlepath.settings import SearchSettings
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import get_macro

CELLS = Path(__file__).resolve().parent.parent / "src" / "autoshrink" / "cells"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def results_of(folder: Path, command: str) -> Path:
    """A folder marked as holding ``command``'s results (its signature file and a result)."""
    folder.mkdir(parents=True)
    (folder / SIGNATURES[command][0]).write_text(json.dumps({"of": command}) + "\n")
    (folder / "result.json").write_text('{"kept": true}\n')
    return folder


def test_claim_folder_refuses_another_commands_results_and_files(tmp_path) -> None:
    assert claim_folder(tmp_path / "new", "search") == tmp_path / "new"  # missing: fine
    assert holder(tmp_path) is None and claim_folder(tmp_path, "train") == tmp_path
    for command in SIGNATURES:
        folder = results_of(tmp_path / command, command)
        assert holder(folder) == (command, SIGNATURES[command][0])
        assert claim_folder(folder, command) == folder  # its own: the command decides
        for other in set(SIGNATURES) - {command}:
            with pytest.raises(ConfigError, match=f"results of `autoshrink {command}`"):
                claim_folder(folder, other)
    (tmp_path / "file").write_text("hello")
    with pytest.raises(ConfigError, match="a file is there, not a folder"):
        claim_folder(tmp_path / "file", "export")


def test_check_output_file(tmp_path) -> None:
    assert check_output_file(tmp_path / "a" / "b" / "t.json", "--table")  # folders made on save
    with pytest.raises(ConfigError, match="--table .*a folder is there"):
        check_output_file(tmp_path, "--table")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_file(tmp_path / "f" / "t.json", "--table")


@pytest.mark.parametrize(
    ("args", "holder_command"),
    [
        (["singlepath", "--preset", "demo", "--epochs", "2", "--warmup-epochs", "1"], "search"),
        (["singlepath", "--preset", "demo", "--resume"], "train"),
        (["search", "--preset", "demo"], "singlepath"),
        (["search", "--preset", "demo"], "export"),
        (["train", str(CELLS / "shrinkcnn.json"), "--dataset", "digits"], "singlepath"),
        (["export", str(CELLS / "shrinkcnn.json"), "--image-size", "8"], "train"),
    ],
)
def test_commands_refuse_another_commands_folder(cli, tmp_path, args, holder_command) -> None:
    folder = results_of(tmp_path / "run", holder_command)
    before = snapshot(folder)
    code, _, err = cli(*args, "--out", folder)
    assert code == 2, err
    assert f"results of `autoshrink {holder_command}`" in err and len(err.splitlines()) == 1
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--preset", "demo"],
        ["train", str(CELLS / "shrinkcnn.json"), "--dataset", "digits"],
        ["export", str(CELLS / "shrinkcnn.json"), "--image-size", "8"],
        ["singlepath", "--preset", "demo"],
    ],
)
def test_out_that_is_a_file_is_one_line(cli, tmp_path, args) -> None:
    (tmp_path / "f").write_text("hello")
    code, _, err = cli(*args, "--out", tmp_path / "f")
    assert code == 2 and "a file is there, not a folder" in err and len(err.splitlines()) == 1
    assert (tmp_path / "f").read_text() == "hello"


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--preset", "demo"],
        ["export", str(CELLS / "shrinkcnn.json"), "--image-size", "8"],
        ["bench", "nb201", "--tables", "unused"],
    ],
)
def test_out_that_is_a_dangling_symlink_is_one_line(cli, tmp_path, args) -> None:
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    code, _, err = cli(*args, "--out", tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{tmp_path / 'out'} is a symlink to {tmp_path / 'gone'}, which does not exist" in err


def test_an_output_file_that_is_a_dangling_symlink_is_written_where_it_leads(cli, tmp_path):
    """A file is written where its symlink leads; one that leads into a missing folder is
    refused before the work, naming the link (it failed at the end, naming a temporary)."""
    cell = CELLS / "shrinkcnn.json"
    (tmp_path / "p.dot").symlink_to(tmp_path / "gone" / "p.dot")
    code, _, err = cli("show", cell, "--picture", tmp_path / "p.dot")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == (
        f"autoshrink: error: --picture {tmp_path / 'p.dot'}: a symlink to "
        f"{tmp_path / 'gone' / 'p.dot'}, whose folder does not exist\n"
    )
    (tmp_path / "q.dot").symlink_to("real.dot")  # relative, to a file not there yet
    code, _, err = cli("show", cell, "--picture", tmp_path / "q.dot")
    assert code == 0, err
    assert (tmp_path / "q.dot").is_symlink() and "digraph" in (tmp_path / "real.dot").read_text()


def test_a_loop_of_symlinks_and_a_resume_of_a_file_are_named_as_they_are(cli, tmp_path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    code, _, err = cli("search", "--resume", tmp_path / "a")
    assert code == 2 and "is a symlink to b, which leads nowhere (a loop of symlinks?)" in err
    (tmp_path / "cell.json").write_text("{}")
    code, _, err = cli("search", "--resume", tmp_path / "cell.json")  # --out was named before
    assert code == 2 and f"--resume {tmp_path / 'cell.json'}: a file is there" in err, err


def test_a_train_that_fails_to_start_leaves_the_folder_as_it_was(cli, tmp_path) -> None:
    cell = CELLS / "shrinkcnn.json"
    common = ["train", cell, "--dataset", "digits", "--no-flip", "--width", "0.25"]
    out = tmp_path / "t"
    out.mkdir()
    (out / "recipe.json").write_text('{"the": "finished run"}\n')
    (out / "cell.json").write_text('{"the": "finished cell"}\n')
    before = snapshot(out)
    code, _, err = cli(*common, "--epochs", "1", "--workers", "-1", "--resume", "--out", out)
    assert code == 2 and "workers must be >= 0" in err
    assert snapshot(out) == before


def test_show_checks_the_picture_path(cli, tmp_path) -> None:
    cell = tmp_path / "c.json"
    shutil.copy(CELLS / "shrinkcnn.json", cell)
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    as_png = tmp_path / "cell.png"
    shutil.copy(cell, as_png)
    (tmp_path / "pics").mkdir()
    for picture, message in (
        (victim, "a cell picture is png, svg or dot, not 'json'"),
        (tmp_path / "pics", "a folder is there, not a file"),
    ):
        code, _, err = cli("show", cell, "--picture", picture)
        assert code == 2 and message in err, err
    code, out, err = cli("show", as_png)  # the default picture path is the cell file itself
    assert code == 2 and "would write over the cell file" in err
    assert out == ""  # the cell was printed before the refusal
    assert victim.read_text() == "keep" and json.loads(as_png.read_text())["kind"] == "cnn"


@pytest.mark.parametrize("width", ["nan", "inf", "0", "-1", "1e308", "65"])
def test_width_must_be_in_range(cli, tmp_path, width) -> None:  # 1e308 overflowed the counts
    code, _, err = cli("count", CELLS / "shrinkcnn.json", "--width", width)
    assert code == 2 and "width must be a number in (0, 64], got" in err
    arch = {"format": "autoshrink.mbconv/1", "width": float(width), "layers": ["k3e6"] * 16}
    (tmp_path / "mb.json").write_text(json.dumps(arch))
    code, _, err = cli("count", tmp_path / "mb.json")
    assert code == 2 and "mb.json: MobileNetV2 width must be a number in (0, 64], got" in err


def test_a_cell_kind_that_is_not_a_string_is_one_line(cli, tmp_path) -> None:
    bad = {"format": "autoshrink.cell/1", "kind": ["cnn"], "ops": ["input", "sep3x3"]}
    (tmp_path / "c.json").write_text(json.dumps({**bad, "edges": [[0, 1]]}))
    code, _, err = cli("count", tmp_path / "c.json")
    assert code == 2 and "unknown cell kind ['cnn']" in err


def test_table_paths_are_checked_before_measuring(cli, tmp_path) -> None:
    cell = CELLS / "shrinkcnn.json"
    code, _, err = cli("latency", cell, "--macro", "cifar-proxy", "--latency-table", tmp_path)
    assert code == 2 and "--latency-table" in err and "a folder is there" in err
    code, _, err = cli(
        "search", "--preset", "demo", "--cost", "table_latency_ms", "--latency-table", tmp_path
    )
    assert code == 2 and "--latency-table" in err


def test_an_output_file_that_is_not_a_regular_file_is_refused(cli, tmp_path) -> None:
    """``latency --latency-table /dev/null`` measured, then saved the table by an atomic
    rename over the device: as root /dev/null became a regular file. A pipe, a device or a
    socket in the place of an output file is refused before anything runs, and left as it was."""
    fifo = tmp_path / "table.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=f"--table {fifo}: not a regular file .a pipe.; "):
        check_output_file(fifo, "--table")
    cell = CELLS / "shrinkcnn.json"
    code, out, err = cli("latency", cell, "--macro", "cifar-proxy", "--latency-table", fifo)
    assert code == 2 and out == "" and f"--latency-table {fifo}: not a regular file" in err, err
    assert stat.S_ISFIFO(fifo.stat().st_mode) and sorted(tmp_path.iterdir()) == [fifo]
    code, out, err = cli("show", cell, "--picture", fifo)
    assert code == 2 and f"--picture {fifo}: not a regular file" in err, err
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_negative_latency_in_a_table_is_refused() -> None:
    block = network_blocks(published_cell("shrinkcnn"), get_macro("cifar-proxy", width=0.25))[0]
    table = LatencyTable(LatencySettings(), {block.key: BlockEntry(block, 1.0, 0.0)}).to_dict()
    assert LatencyTable.from_dict(table).entries[block.key].median_ms == 1.0
    table["blocks"][block.key]["median_ms"] = -5
    with pytest.raises(HardwareError, match=r"median_ms -5 and iqr_ms 0 must be in 0..3.6e\+06"):
        LatencyTable.from_dict(table, "t.json")


@pytest.mark.parametrize(
    "bad",
    [
        {"lam": float("inf")},
        {"latency_target_ms": float("inf")},
        {"lr_per_256": float("nan")},
        {"weight_decay": float("nan")},
    ],
)
def test_singlepath_settings_must_be_finite(bad) -> None:
    with pytest.raises(ConfigError, match="finite"):
        SearchSettings(**bad)


@pytest.mark.parametrize("proxy", ["synflow", "params"])  # params once wrote over any file
def test_a_bad_zero_cost_cache_is_one_line_and_kept(tmp_path, proxy) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not numpy at all")
    objects = tmp_path / "objects.npz"
    with objects.open("wb") as f:
        np.savez(f, values=np.array([{"a": 1}], dtype=object), settings=np.array("{}"))
    single = tmp_path / "single.npz"  # a bare array (the old .npy cache): says not what made it
    with single.open("wb") as f:
        np.save(f, np.zeros(15_625))
    for path, says in [
        (garbage, "not a zero-cost cache"),
        (objects, "not a zero-cost cache"),
        (single, "a single array, which says not what made it"),
    ]:
        before = path.read_bytes()
        with pytest.raises(BenchmarkError, match=f"{path.name}: .*{says}"):
            NB201ZeroCost(proxy, "cifar10", cache=path).load_cache()
        assert path.read_bytes() == before
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(ConfigError, match="a folder is there"):
        NB201ZeroCost(proxy, "cifar10", cache=tmp_path / "dir.npz").load_cache()


def test_a_recipe_that_is_a_folder_is_one_line(cli, tmp_path) -> None:
    (tmp_path / "dir.json").mkdir()
    code, _, err = cli(
        "train", CELLS / "shrinkcnn.json", "--recipe", tmp_path / "dir.json", "--out", tmp_path
    )
    assert code == 2 and "a folder, not a file; expected a recipe file" in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "nan", "training: lr must be finite and > 0, got nan"),
        ("--lr", "inf", "training: lr must be finite and > 0, got inf"),
        ("--lr", "0", "training: lr must be finite and > 0, got 0.0"),  # each one named
        ("--epochs", "0", "training: epochs must be >= 1, got 0"),
        ("--width", "nan", "width must be a number in (0, 64]"),
        ("--width", "1e308", "width must be a number in (0, 64]"),
        ("--max-macs", "nan", "--max-macs must be finite and > 0, got nan"),
        ("--max-latency", "inf", "--max-latency must be finite and > 0, got inf"),
        ("--max-params", "-5", "--max-params must be finite and > 0, got -5"),  # the flag's name
        ("--lambda", "-1", "--lambda must be finite and >= 0, got -1"),  # not "score weight"
    ],
)
def test_search_refuses_non_finite_settings_before_writing(cli, tmp_path, flag, value, message):
    code, _, err = cli("search", "--preset", "demo", flag, value, "--out", tmp_path / "r")
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("training_weight_decay", -1.0, "training: weight_decay must be finite and >= 0, got -1"),
        ("training_weight_decay", math.nan, "weight_decay must be finite and >= 0, got nan"),
        ("training_min_accuracy", math.nan, "training: min_accuracy must be finite, got nan"),
        ("training_overfit_ratio", math.inf, "overfit_ratio must be finite and > 0 (a large"),
        ("training_overfit_ratio", 0.0, "overfit_ratio must be finite and > 0"),
    ],
)
def test_proxy_training_settings_json_cannot_hold_are_refused(setting, value, message) -> None:
    # accepted, they were saved as null: the run's config.json never loaded again (--resume);
    # a negative weight decay failed every candidate instead
    with pytest.raises(ConfigError, match=re.escape(message)):
        preset("demo", **{setting: value})
    preset("demo", training_overfit_ratio=1e9, training_min_accuracy=-1.0)  # stops turned off


def test_someone_elses_files_are_not_written_over(cli, tmp_path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.py").write_text("# my own model\n")
    (folder / "notes.txt").write_text("kept\n")
    with pytest.raises(ConfigError, match=r"holds model.py, which no `autoshrink export` wrote"):
        claim_folder(folder, "export", writes=("model.onnx", "model.py"))
    assert claim_folder(folder, "export", writes=("model.onnx",)) == folder  # others: fine
    code, _, err = cli("export", CELLS / "shrinkcnn.json", "--image-size", "8", "--out", folder)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.strip() == (
        f"autoshrink: error: --out {folder} holds model.py, which no `autoshrink export` wrote; "
        "export would write over it: choose another --out"
    )
    assert (folder / "model.py").read_text() == "# my own model\n"
    (folder / "model.py").unlink()  # a folder of other files: the export goes beside them
    assert cli("export", CELLS / "shrinkcnn.json", "--image-size", "8", "--out", folder)[0] == 0
    assert (folder / "notes.txt").read_text() == "kept\n"
    before = snapshot(folder)  # an earlier export is kept: writing over it mixed two networks'
    code, _, err = cli("export", CELLS / "shrinkcnn.json", "--image-size", "16", "--out", folder)
    assert code == 2 and snapshot(folder) == before
    assert "already holds the results of an `autoshrink export` run (export.json)" in err


@pytest.mark.parametrize("command", ["train", "train-rnn", "singlepath"])
def test_train_and_singlepath_do_not_write_over_someone_elses_files(cli, tmp_path, command):
    """Neither checked the names it writes: a model the user kept in --out was replaced."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "weights.safetensors").write_text("my own model\n")
    args = {
        "train": ["train", CELLS / "shrinkcnn.json", "--dataset", "digits", "--epochs", "1"],
        "train-rnn": ["train", CELLS / "shrinkrnn.json", "--task", "rnn", "--data", tmp_path],
        "singlepath": ["singlepath", "--preset", "demo"],
    }[command]
    before = snapshot(folder)
    code, _, err = cli(*args, "--out", folder)
    assert code == 2 and len(err.splitlines()) == 1, err
    what = "singlepath" if command == "singlepath" else "train"
    assert f"holds weights.safetensors, which no `autoshrink {what}` wrote" in err
    assert snapshot(folder) == before


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_singlepath_refuses_checkpoints_it_did_not_write(cli, tmp_path, resume):
    """Checkpoints without the settings.json of the run that wrote them are no Single-Path
    search's to resume, nor to clear: a fresh search starts only in a folder without them."""
    folder = tmp_path / "sp"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "epoch-0002.json").write_text("{}")
    before = snapshot(folder)
    code, _, err = cli("singlepath", "--preset", "demo", "--out", folder, *resume)
    assert code == 2 and "holds checkpoints, which no `autoshrink singlepath` wrote" in err
    assert snapshot(folder) == before


def test_claim_folder_without_resume_refuses_an_earlier_run_of_the_command(tmp_path) -> None:
    folder = results_of(tmp_path / "sp", "singlepath")
    with pytest.raises(ConfigError, match="already holds the results of an `autoshrink singlepath"):
        claim_folder(folder, "singlepath", resume=False)
    assert claim_folder(folder, "singlepath", resume=True) == folder


def test_only_a_run_that_stopped_midway_may_be_written_over_without_resume(tmp_path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    signature = folder / "export.json"
    mark_unfinished(signature, "export")
    assert unfinished(signature) and claim_folder(folder, "export", resume=False) == folder
    # a finished run's file, or one that cannot be read as the note, is a run to keep
    for text in ('{"format": "autoshrink.export/1"}', "not JSON", '["incomplete"]'):
        signature.write_text(text)
        assert unfinished(signature) is False
        with pytest.raises(ConfigError, match="already holds the results of an `autoshrink export"):
            claim_folder(folder, "export", resume=False)
    assert unfinished(folder / "missing.json") is False
    with pytest.raises(ValueError, match="unknown command 'serve'; known: search, singlepath"):
        claim_folder(folder, "serve")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_outputs_where_nothing_can_be_written_are_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="--out /proc/x/run: cannot write in /proc"):
        claim_folder("/proc/x/run", "search")
    with pytest.raises(ConfigError, match="--picture /proc/cell.png: cannot write in /proc"):
        check_output_file("/proc/cell.png", "--picture")


def test_the_cli_names_the_path_of_an_os_error() -> None:
    from autoshrink.errors import os_error_line

    err = PermissionError(13, "Permission denied", "/x/y.json")
    assert os_error_line(err) == "/x/y.json: Permission denied"
    assert os_error_line(OSError(28, "No space left on device")) == "No space left on device"


def test_an_empty_zero_cost_cache_is_named(tmp_path) -> None:
    from autoshrink.evaluators.nb201_zero_cost import read_cache

    (tmp_path / "zc.npz").write_bytes(b"")
    with pytest.raises(BenchmarkError, match="zc.npz: not a zero-cost cache"):
        read_cache(tmp_path / "zc.npz")


def test_negative_seeds_are_refused() -> None:
    from autoshrink.config import SearchConfig

    with pytest.raises(ConfigError, match="^seed must be a whole number >= 0, got -1$"):
        SearchConfig(seed=-1)
    with pytest.raises(ConfigError, match="^singlepath: seed must be a whole number >= 0, got -2$"):
        SearchSettings(seed=-2)


def test_a_single_path_seed_beyond_torchs_is_refused() -> None:
    # torch.manual_seed raised "Overflow when unpacking long long" as the supernet was built
    says = "singlepath: seed must be at most 9223372036854775807, got 18446744073709551616"
    with pytest.raises(ConfigError, match=f"^{says}$"):
        SearchSettings(seed=2**64)


@pytest.mark.parametrize(
    "args",
    [
        ("search", "--preset", "demo", "--threads", "1000000000"),
        ("latency", CELLS / "shrinkcnn.json", "--threads", "1025"),
        ("singlepath", "--preset", "demo", "--train-threads", "0"),
    ],
)
def test_thread_counts_are_bounded(cli, tmp_path, args) -> None:
    # a billion threads made OpenMP abort the process, after a search had written its folder
    code, _, err = cli(*args, "--out", tmp_path / "r") if args[0] != "latency" else cli(*args)
    assert code == 2 and "must be an integer in 1..1024, got" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_sizes_beyond_memory_are_one_line(cli) -> None:
    big = ["--image-size", "65536", "--batch", "65536"]  # the largest each option takes
    code, _, err = cli("latency", CELLS / "shrinkcnn.json", "--macro", "cifar-proxy", *big)
    assert code == 2 and len(err.splitlines()) == 1
    assert "out of memory (tried to allocate 3377699.7 GB): the sizes asked for" in err


def test_out_of_memory_lines() -> None:
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 120000000000 bytes. Error code 12"
    )
    assert "(tried to allocate 120.0 GB)" in str(out_of_memory_line(cpu))
    cuda = type("OutOfMemoryError", (RuntimeError,), {})(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139 GiB"
    )
    assert "(tried to allocate 20.00 GiB)" in str(out_of_memory_line(cuda))
    assert str(out_of_memory_line(MemoryError())).startswith("out of memory: the sizes")
    # a bench has no batch, image size or width: it names what it sizes
    bench = out_of_memory_line(MemoryError(), "--runs times --queries")
    assert (
        bench
        == "out of memory: the sizes asked for (--runs times --queries) do not fit this machine"
    )
    assert out_of_memory_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_a_second_bench_into_the_same_folder_is_refused(tmp_path) -> None:
    (tmp_path / "bench.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        claim_folder(tmp_path, "bench", resume=False)
    assert str(err.value) == (
        f"--out {tmp_path} already holds the results of an `autoshrink bench` run (bench.json); "
        "choose another --out"
    )


def test_show_refuses_a_picture_format_before_printing_the_cell(cli, tmp_path) -> None:
    from autoshrink.spaces.cells import published_cell

    published_cell("shrinkcnn").save(tmp_path / "c.json")
    code, out, err = cli("show", tmp_path / "c.json", "--picture", tmp_path / "p.jpg")
    assert code == 2 and out == "" and "a cell picture is png, svg or dot, not 'jpg'" in err


def test_show_of_a_cell_read_from_a_pipe_asks_where_its_picture_goes(cli, tmp_path) -> None:
    """``autoshrink show <(cat cell.json)`` said ``--picture /dev/fd/63.png: cannot write in
    /dev/fd`` (a flag not given), and ``cat cell.json | autoshrink show /dev/stdin`` wrote
    ``/dev/stdin.png``: a pipe has no folder of its own for the picture beside it."""
    import threading

    text = (CELLS / "shrinkcnn.json").read_text()
    fifo = tmp_path / "cell.json"

    def show(*more: object) -> tuple[int, str, str]:
        os.mkfifo(fifo)
        writer = threading.Thread(target=fifo.write_text, args=(text,))
        writer.start()
        try:
            return cli("show", fifo, *more)
        finally:
            writer.join()
            fifo.unlink()

    code, out, err = show()
    assert code == 2 and out == ""
    assert f"{fifo}: not a regular file (a pipe?): give --picture FILE" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    code, out, err = show("--picture", tmp_path / "p.dot")
    assert code == 0 and "digraph cell" in (tmp_path / "p.dot").read_text()


@pytest.mark.parametrize("pattern", ["/dev/fd/{}", "/proc/self/fd/{}"])
def test_show_of_a_cell_read_from_a_descriptor_asks_where_its_picture_goes(
    cli, tmp_path, pattern
) -> None:
    """``autoshrink show /dev/stdin < cell.json`` (standard input a regular file, not a pipe)
    wrote ``/dev/stdin.png``, and ``/dev/fd/N`` or ``/proc/self/fd/N`` of an open file was
    refused naming ``--picture``, a flag not given: a descriptor has no folder of its own."""
    cell = tmp_path / "cell.json"
    shutil.copy(CELLS / "shrinkcnn.json", cell)
    with cell.open() as opened:
        named = pattern.format(opened.fileno())
        code, out, err = cli("show", named)
        assert code == 2 and out == ""
        assert f"{named}: not a file of a folder (a descriptor?): give --picture FILE" in err, err
        code, out, err = cli("show", named, "--picture", tmp_path / "p.dot")
    assert code == 0 and "digraph cell" in (tmp_path / "p.dot").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json", "p.dot"]
