"""NAS-Bench-201 tables: the flat loader, the explicit query, the opt-in archive reader, the
test-split guard of the evaluator, and clear errors for bad table files."""

from __future__ import annotations

import bz2
import csv
import inspect
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from autoshrink import safe_pickle
from autoshrink.errors import BenchmarkError, CellError, ConfigError
from autoshrink.tabular import (
    FILE_12EPOCH,
    FILE_200EPOCH,
    Reporter,
    SearchEvaluator,
    load_flat_tables,
    load_tables,
    query,
)
from autoshrink.tabular.archive import archive_tables, read_archive, read_pbz2
from autoshrink.tabular.tables import TABLE_LIMIT

TSS = "official-sample/NATS-tss-v1_0-3ffb9-simple"


@pytest.fixture(scope="module")
def tables():
    from conftest import shared_data_dir

    folder = shared_data_dir() / "nats-bench"
    if not folder.is_dir():
        pytest.skip(f"reference data not found at {folder}")
    return load_flat_tables(folder)


def test_published_optima(tables) -> None:
    """Published 200-epoch test optima: 94.37, 73.51, 47.31 (README of the data)."""
    for dataset, best in (("cifar10", 94.37), ("cifar100", 73.51), ("ImageNet16-120", 47.31)):
        column = tables.column(dataset=dataset, metric="accuracy", epochs=200, split="test")
        assert column.max() == pytest.approx(best, abs=0.005)
    assert tables.index.cell(6111).arch_string() == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
        "nor_conv_1x1~2|"
    )


def test_query_values_from_the_official_record(tables) -> None:
    """Record 000000: cifar10-valid x-valid@11 = 62.712 (seed 777), 64.016 (seed 111)."""
    v = query(tables, 0, dataset="cifar10", metric="accuracy", epochs=12, split="valid")
    assert v == pytest.approx((62.71199997802734 + 64.01599998291016) / 2)
    t = query(tables, 0, dataset="cifar10", metric="accuracy", epochs=200, split="test")
    assert t == pytest.approx((85.79 + 85.62 + 86.18) / 3)
    cell = tables.index.cell(0)
    assert query(tables, cell, dataset="cifar10", metric="accuracy", epochs=200, split="test") == t
    assert (
        query(tables, str(cell), dataset="CIFAR10", metric="accuracy", epochs=200, split="test")
        == t
    )


def test_query_has_no_defaults_and_clear_errors(tables) -> None:
    params = inspect.signature(query).parameters
    for name in ("dataset", "metric", "epochs", "split"):
        assert params[name].default is inspect.Parameter.empty
    with pytest.raises(TypeError):
        query(tables, 0, dataset="cifar10", metric="accuracy", epochs=12)  # type: ignore[call-arg]
    with pytest.raises(BenchmarkError, match="no 200-epoch valid accuracy for cifar10"):
        query(tables, 0, dataset="cifar10", metric="accuracy", epochs=200, split="valid")
    with pytest.raises(ConfigError, match="split must be one of"):
        query(tables, 0, dataset="cifar10", metric="accuracy", epochs=12, split="train")
    with pytest.raises(ConfigError, match="data set"):
        query(tables, 0, dataset="svhn", metric="accuracy", epochs=12, split="valid")
    for arch in (True, 3.0):  # a bool or a float is no official index
        with pytest.raises(CellError, match="arch must be a cell, an arch string or an official"):
            query(tables, arch, dataset="cifar10", metric="accuracy", epochs=12, split="valid")
    for epochs in (200.7, "x", True):  # 200.7 read the 200-epoch numbers, "x" a ValueError
        with pytest.raises(ConfigError, match=f"^epochs must be a whole number .*{epochs!r}$"):
            query(tables, 0, dataset="cifar10", metric="accuracy", epochs=epochs, split="test")
        with pytest.raises(ConfigError, match="^epochs must be a whole number"):
            SearchEvaluator(tables, dataset="cifar10", epochs=epochs)
    column = tables.column(dataset="cifar10", metric="accuracy", epochs=12, split="valid")
    with pytest.raises(ValueError, match="read-only"):  # shared by every evaluator of a bench
        column[0] = 100.0


def test_search_evaluator_sees_validation_only(tables) -> None:
    ev = SearchEvaluator(tables, dataset="cifar10")
    cell = tables.index.cell(11)
    metrics = ev(cell)
    assert set(metrics) == {"accuracy", "macs", "params"}
    valid = query(tables, 11, dataset="cifar10", metric="accuracy", epochs=12, split="valid")
    assert metrics["accuracy"] == pytest.approx(valid / 100)
    assert metrics["macs"] == pytest.approx(113.95137e6) and metrics["params"] == 802426
    # no path from the evaluator to a test number: no tables kept, no test column held
    tests = [
        tables.column(dataset=d, metric="accuracy", epochs=e, split="test")
        for d in ("cifar10", "cifar100", "ImageNet16-120")
        for e in (12, 200)
    ]
    for value in vars(ev).values():
        assert not hasattr(value, "column") and not hasattr(value, "values")
        if isinstance(value, np.ndarray) and value.size == 15625:
            for t in tests:
                assert not np.allclose(np.sort(value), np.sort(t)), "a test column leaked"
    assert not any("test" in name for name in dir(ev))
    rep = Reporter(tables, dataset="cifar10")
    assert rep.test_accuracy(cell) == pytest.approx(91.58333333333333)
    assert rep.optimum()[0] == pytest.approx(94.3733, abs=1e-4)


@pytest.mark.parametrize("what", [6111, "|nor_conv_3x3~0|", None])
def test_the_evaluators_name_what_is_not_a_cell(tables, what) -> None:
    """``SearchEvaluator(t)(6111)`` (an official index, say) was an AttributeError: 'int'
    object has no attribute 'code'."""
    says = (
        f"a NAS-Bench-201 evaluator takes an NB201Cell, got {type(what).__name__} {what!r} (an "
        "official index i: tables.index.cell(i))"
    )
    with pytest.raises(CellError) as refused:
        SearchEvaluator(tables, dataset="cifar10")(what)  # type: ignore[arg-type]
    assert str(refused.value) == says
    with pytest.raises(CellError) as refused:
        Reporter(tables, dataset="cifar10").test_accuracy(what)  # type: ignore[arg-type]
    assert str(refused.value) == says


def test_archive_needs_opt_in(shared_data) -> None:
    folder = shared_data / "nats-bench" / TSS
    with pytest.raises(BenchmarkError, match="allow_pickle=True"):
        read_archive(folder)
    with pytest.raises(BenchmarkError, match="--allow-pickle"):
        load_tables(folder)


def test_archive_matches_flat_tables(shared_data, tables) -> None:
    archive = archive_tables(read_archive(shared_data / "nats-bench" / TSS, allow_pickle=True))
    checked = 0
    for index in (0, 11, 284):
        for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
            for epochs, split in ((12, "valid"), (12, "test"), (200, "test")):
                kw = {"dataset": dataset, "metric": "accuracy", "epochs": epochs, "split": split}
                assert query(archive, index, **kw) == pytest.approx(query(tables, index, **kw))
                checked += 1
    assert checked == 27
    # the archive also has 200-epoch validation numbers, but only for the cells it holds
    kw = {"dataset": "cifar10", "metric": "accuracy", "epochs": 200, "split": "valid"}
    assert query(archive, 11, **kw) == pytest.approx((87.94 + 87.748 + 88.132) / 3, abs=1e-3)
    with pytest.raises(BenchmarkError, match="for cell 12 "):
        query(archive, 12, **kw)
    # and the losses: the seeds' mean of the record's x-test@199 (CIFAR-100 has its own test)
    kw = {"dataset": "cifar100", "metric": "loss", "epochs": 200, "split": "test"}
    seeds = (1.4022211936950684, 1.4640736488342285, 1.4437529708862304)  # 999, 777, 888
    assert query(archive, 11, **kw) == pytest.approx(sum(seeds) / 3, rel=1e-12)
    kw = {"dataset": "cifar100", "metric": "loss", "epochs": 12, "split": "valid"}
    assert query(archive, 11, **kw) == pytest.approx(2.5791997245788574, rel=1e-12)  # seed 111
    missing = shared_data / "nats-bench" / TSS / "000012.pickle.pbz2"
    with pytest.raises(BenchmarkError, match=f"^{missing}: NATS-Bench archive file not found$"):
        read_pbz2(missing, allow_pickle=True)


def _write_pbz2(path: Path, payload: bytes) -> Path:
    path.write_bytes(bz2.compress(payload))
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_reader_refuses_code(tmp_path: Path) -> None:
    evil = _write_pbz2(tmp_path / "meta.pickle.pbz2", pickle.dumps(_Evil()))
    with pytest.raises(BenchmarkError, match="not allowed"):
        read_pbz2(evil, allow_pickle=True)
    ok = _write_pbz2(tmp_path / "ok.pickle.pbz2", pickle.dumps({"a": [1, 2.5, "x"]}))
    assert read_pbz2(ok, allow_pickle=True) == {"a": [1, 2.5, "x"]}
    np_scalar = _write_pbz2(tmp_path / "np.pickle.pbz2", pickle.dumps([np.float64(0.25)]))
    value = read_pbz2(np_scalar, allow_pickle=True)
    assert value == [0.25] and type(value[0]) is float
    bad = tmp_path / "bad.pickle.pbz2"
    bad.write_bytes(b"not bz2")
    with pytest.raises(BenchmarkError, match=f"^{bad}: not a readable NATS-Bench archive file"):
        read_pbz2(bad, allow_pickle=True)


def test_a_full_archive_is_refused_with_the_simple_one_named(tmp_path: Path) -> None:
    """A record of a ``-full`` archive holds torch tensors (the trained weights): it was
    refused in the unpickler's words alone, not saying that the ``-simple`` archive reads."""
    record = _write_pbz2(tmp_path / "000000.pickle.pbz2", b"ctorch._utils\n_rebuild_tensor_v2\n.")
    says = (
        f"{record}: not a readable NATS-Bench archive file (refusing to unpickle global "
        "torch._utils._rebuild_tensor_v2: not allowed in this format); a NATS-Bench -full "
        "archive holds torch tensors: read the -simple one (NATS-tss-v1_0-3ffb9-simple, "
        "NATS-sss-v1_0-50262-simple)"
    )
    with pytest.raises(BenchmarkError, match=f"^{re.escape(says)}$"):
        read_pbz2(record, allow_pickle=True)


def test_an_archive_file_that_unpacks_past_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 KB of bz2 unpack to 4 GB of zeros: read whole, a small file could fill the memory."""
    monkeypatch.setattr(safe_pickle, "PICKLE_LIMIT", 2**20)
    big = _write_pbz2(tmp_path / "big.pickle.pbz2", pickle.dumps(b"\0" * 2**21))
    with pytest.raises(
        BenchmarkError,
        match=f"^{big}: not a readable NATS-Bench archive file .unpacks to more than 1 MiB.$",
    ):
        read_pbz2(big, allow_pickle=True)
    two = tmp_path / "two.pickle.pbz2"  # bz2.decompress reads concatenated streams: still so
    two.write_bytes(bz2.compress(pickle.dumps([1, 2])[:5]) + bz2.compress(pickle.dumps([1, 2])[5:]))
    assert read_pbz2(two, allow_pickle=True) == [1, 2]
    cut = tmp_path / "cut.pickle.pbz2"
    cut.write_bytes(bz2.compress(pickle.dumps([1, 2]))[:-4])
    with pytest.raises(BenchmarkError, match=f"^{cut}: not a readable NATS-Bench archive file"):
        read_pbz2(cut, allow_pickle=True)


def _edited_record(value, key: str, new):
    """``value`` (a record's nested dicts) with every ``key`` set to ``new(old)``."""
    if isinstance(value, dict):
        return {k: new(v) if k == key else _edited_record(v, key, new) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("key", "new", "says"),
    [
        ("arch_index", lambda old: 99999, "has arch_index 99999; expected 0..15624"),  # IndexError
        ("arch_index", lambda old: old - 15625, "has arch_index -15614; expected 0..15624"),
        ("eval_acc1es", lambda old: dict.fromkeys(old, 523.0), "accuracy 523.0 is outside 0..100"),
    ],
)
def test_an_archive_record_out_of_range_is_refused(shared_data, tmp_path, key, new, says) -> None:
    """An index past the end was an IndexError, one below 0 read as another cell (Python's
    negative indexing); an accuracy of 523% was read as it was (the flat tables refuse it)."""
    folder = tmp_path / "tss"
    shutil.copytree(shared_data / "nats-bench" / TSS, folder)
    record = folder / "000011.pickle.pbz2"
    edited = _edited_record(read_pbz2(record, allow_pickle=True), key, new)
    _write_pbz2(record, pickle.dumps(edited))
    with pytest.raises(BenchmarkError, match=re.escape(says)):
        archive_tables(read_archive(folder, allow_pickle=True))


def _damage_meta(folder: Path, change) -> None:
    meta = folder / "meta.pickle.pbz2"
    _write_pbz2(meta, pickle.dumps(change(read_pbz2(meta, allow_pickle=True))))


def _other_arch(meta: dict) -> dict:
    archs = list(meta["meta_archs"])
    archs[3] = "|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    return {**meta, "meta_archs": archs}


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (
            lambda f: (f / "meta.pickle.pbz2").unlink(),
            "{f}/meta.pickle.pbz2: NATS-Bench archive file not found",
        ),
        (lambda f: _damage_meta(f, lambda m: {"archs": m["meta_archs"]}), "has no 'meta_archs'"),
        (
            lambda f: _damage_meta(f, lambda m: {**m, "meta_archs": m["meta_archs"][:100]}),
            "{f} lists 100 archs; a topology archive has 15625",
        ),
        (lambda f: _damage_meta(f, _other_arch), "bogus"),
        (
            lambda f: _write_pbz2(f / "000011.pickle.pbz2", pickle.dumps([1, 2])),
            "NATS-Bench record {f}/000011.pickle.pbz2 is not a dict of training lengths",
        ),
        (
            lambda f: _write_pbz2(f / "000011.pickle.pbz2", pickle.dumps({"200": {"x": 1}})),
            "NATS-Bench record {f}/000011.pickle.pbz2 is malformed: KeyError('all_results')",
        ),
        (
            lambda f: _write_pbz2(
                f / "000011.pickle.pbz2",
                pickle.dumps(
                    _edited_record(
                        read_pbz2(f / "000011.pickle.pbz2", allow_pickle=True),
                        "arch_str",
                        lambda old: "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                    )
                ),
            ),
            "{f}: record 11 is not '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|'",
        ),
    ],
)
def test_a_damaged_archive_is_one_line_naming_the_file(shared_data, tmp_path, damage, says):
    folder = tmp_path / "tss"
    shutil.copytree(shared_data / "nats-bench" / TSS, folder)
    damage(folder)
    with pytest.raises(BenchmarkError) as caught:
        archive_tables(read_archive(folder, allow_pickle=True))
    assert says.format(f=folder) in str(caught.value) and "\n" not in str(caught.value)


# -- bad table files ------------------------------------------------------------------------


@pytest.fixture
def table_copy(shared_data, tmp_path: Path) -> Path:
    for name in (FILE_12EPOCH, FILE_200EPOCH):
        shutil.copy(shared_data / "nats-bench" / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, edit) -> None:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_missing_folder_and_file(tmp_path: Path, table_copy: Path) -> None:
    with pytest.raises(
        BenchmarkError, match="nope: no such folder; expected a NAS-Bench-201 table folder"
    ):
        load_flat_tables(tmp_path / "nope")
    (table_copy / FILE_200EPOCH).unlink()
    with pytest.raises(BenchmarkError, match=f"{FILE_200EPOCH} not found"):
        load_flat_tables(table_copy)
    with pytest.raises(BenchmarkError, match="empty_dir_that_is_missing: no such folder"):
        load_tables(tmp_path / "empty_dir_that_is_missing")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: [[c.replace("cifar10-val", "c10v") for c in rows[0]], *rows[1:]],
         "lacks the columns"),
        (lambda rows: rows[:-1], "15624 data rows; expected 15625"),
        (lambda rows: rows[:1], "0 data rows"),
        (lambda rows: [rows[0], [*rows[1][:3], "n/a", *rows[1][4:]], *rows[2:]],
         "line 2, column cifar10-val: expected an accuracy in percent, got 'n/a'"),
        (lambda rows: [rows[0], rows[1], rows[2][:3], *rows[3:]],  # a row cut short
         "line 3: 3 fields, the header has 8"),
        (lambda rows: [rows[0], rows[1], [*rows[2][:3], "88.22", *rows[2][3:]], *rows[3:]],
         "line 3: 9 fields, the header has 8"),  # a field too many: every number shifted
        (lambda rows: [*rows[:3], [*rows[3][:3], "123.0", *rows[3][4:]], *rows[4:]],
         r"line 4, column cifar10-val: accuracy 123.0 is outside 0\.\.100"),
        (lambda rows: [rows[0], *([*r[:3], str(float(r[3]) / 100), *r[4:]] for r in rows[1:])],
         r"column cifar10-val: every accuracy is within 0\.\.1 \(fractions\?\); expected percent"),
        (lambda rows: [rows[0], rows[2], rows[1], *rows[3:]],
         r"line 2: official index 1, expected 0 \(rows must be in index order\)"),
        (lambda rows: [rows[0], [rows[1][0], "|none~0|", *rows[1][2:]], *rows[2:]],
         "disagree at official index 0"),
        (lambda rows: [rows[0], ["zero", *rows[1][1:]], *rows[2:]],
         "line 2: expected an official index and an arch string"),
    ],
)  # fmt: skip
def test_malformed_12epoch_table(table_copy: Path, edit, message: str) -> None:
    _edit(table_copy / FILE_12EPOCH, edit)
    with pytest.raises(BenchmarkError, match=message) as err:
        load_flat_tables(table_copy)
    assert "\n" not in str(err.value)


def test_bad_arch_string_in_both_tables(table_copy: Path) -> None:
    bad = "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    _edit(table_copy / FILE_12EPOCH, lambda r: [r[0], [r[1][0], bad, *r[1][2:]], *r[2:]])
    _edit(table_copy / FILE_200EPOCH, lambda r: [r[0], [*r[1][:3], bad, r[1][4]], *r[2:]])
    with pytest.raises(BenchmarkError, match="index 0: unknown NAS-Bench-201 op 'nor_conv_5x5'"):
        load_flat_tables(table_copy)


def test_a_table_cut_inside_its_last_number_is_refused(table_copy: Path) -> None:
    """Cut 12 bytes short, the last row's 13.43333332824707 was read as 13.43."""
    path = table_copy / FILE_12EPOCH
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(BenchmarkError, match="ends inside a line .cut short.."):
        load_flat_tables(table_copy)


def test_a_folder_in_place_of_a_table_is_named(table_copy: Path) -> None:
    (table_copy / FILE_12EPOCH).unlink()
    (table_copy / FILE_12EPOCH).mkdir()
    with pytest.raises(BenchmarkError, match=f"{FILE_12EPOCH} is a folder; expected the flat CSV"):
        load_flat_tables(table_copy)


def test_a_table_that_is_not_utf8_text_is_named(table_copy: Path) -> None:
    path = table_copy / FILE_12EPOCH
    path.write_bytes(b"\xff\xfe" + path.read_bytes())
    with pytest.raises(BenchmarkError, match=f"cannot read NAS-Bench-201 table {path}: 'utf-8'"):
        load_flat_tables(table_copy)


def test_a_table_saved_with_a_byte_order_mark_reads_as_without(table_copy: Path, tables) -> None:
    """A spreadsheet's UTF-8 BOM made the first column's name "\ufeffarch": "lacks the
    columns ['arch']", which it holds."""
    path = table_copy / FILE_12EPOCH
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    read = load_flat_tables(table_copy)
    for epochs, split in ((12, "valid"), (200, "test")):
        settings = {"dataset": "cifar10", "metric": "accuracy", "epochs": epochs, "split": split}
        assert query(read, 1234, **settings) == query(tables, 1234, **settings)


def test_a_200_epoch_row_cut_short_is_named_so(table_copy: Path) -> None:
    """It was reported as the two tables disagreeing on the row's arch string."""
    _edit(table_copy / FILE_200EPOCH, lambda r: [*r[:7], r[7][:2], *r[8:]])
    with pytest.raises(BenchmarkError, match=f"{FILE_200EPOCH}, line 8: 2 fields, the header has"):
        load_flat_tables(table_copy)


def test_a_huge_file_in_place_of_a_table_is_refused_unread(table_copy: Path) -> None:
    """A 3 GB file named as a table was read whole and parsed: "out of memory: the sizes asked
    for (--runs times --queries) do not fit this machine", or the machine's memory filled."""
    path = table_copy / FILE_200EPOCH
    with path.open("r+b") as f:
        f.truncate(TABLE_LIMIT + 1)  # sparse: no disk space, and reading it would take seconds
    with pytest.raises(BenchmarkError, match=f"^NAS-Bench-201 table {path} is larger than 64 MiB"):
        load_flat_tables(table_copy)


def test_blank_lines_at_the_end_of_a_table_are_ignored(table_copy: Path, tables) -> None:
    """An editor's extra line break at the end: "has 15626 data rows; expected 15625"."""
    path = table_copy / FILE_200EPOCH
    path.write_bytes(path.read_bytes() + b"\n\r\n")
    read = load_flat_tables(table_copy)
    settings = {"dataset": "cifar100", "metric": "accuracy", "epochs": 200, "split": "test"}
    assert query(read, 15624, **settings) == query(tables, 15624, **settings)


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_empty_file(table_copy: Path, text: str) -> None:
    (table_copy / FILE_200EPOCH).write_text(text)
    with pytest.raises(BenchmarkError, match="is empty"):
        load_flat_tables(table_copy)


def test_evaluator_refuses_missing_cells(shared_data) -> None:
    archive = archive_tables(read_archive(shared_data / "nats-bench" / TSS, allow_pickle=True))
    ev = SearchEvaluator(archive, dataset="cifar10")
    assert ev(archive.index.cell(284))["accuracy"] > 0.7
    with pytest.raises(BenchmarkError, match="no 12-epoch validation accuracy"):
        ev(archive.index.cell(1))  # the sample archive holds records 0, 11 and 284 only
