"""NAS-Bench-201 spaces: arch-string codec, official index mapping, size-space index, errors."""

from __future__ import annotations

import random

import pytest

from autoshrink.errors import CellError, ConfigError
from autoshrink.spaces.nb201 import (
    NUM_CELLS,
    NUM_SIZES,
    OPS,
    ArchIndex,
    NB201Cell,
    NB201Size,
    all_cells,
    dataset_name,
)
from autoshrink.strategies.base import Observation, Proposal, better

BEST_C10 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)


def test_codec_round_trip_all_cells() -> None:
    cells = all_cells()
    strings = {c.arch_string() for c in cells}
    assert len(cells) == NUM_CELLS == 15625 and len(strings) == NUM_CELLS
    for code, cell in enumerate(cells):
        assert cell.code == code
        back = NB201Cell.from_string(cell.arch_string())
        assert back == cell and back.code == code
        assert NB201Cell.from_dict(cell.to_dict()) == cell


def test_arch_string_layout() -> None:
    cell = NB201Cell.from_string(BEST_C10)
    assert cell.ops == (
        "nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3",
        "nor_conv_1x1",
    )  # fmt: skip
    assert cell.key == BEST_C10 == str(cell)
    assert cell.num_edges == 6 and cell.is_connected
    sparse = NB201Cell.from_string("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|")
    assert sparse.num_edges == 1 and not sparse.is_connected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "has 1 node groups; expected 3"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "has 2 node groups; expected 3"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NAS-Bench-201 op 'conv'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "input 0 of node 1 .* got 'none~1'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 .* has 1 inputs; expected 2"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 .* must look like"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", "node 3 .* must look like"),
        ("|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 .* must look like"),
        ("||+|none~0|none~1|+|none~0|none~1|none~2|", "input 0 of node 1 .* got ''"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "input 0 of node 1 .* got 'none0'"),
    ],
)
def test_bad_arch_strings(text: str, says: str) -> None:
    with pytest.raises(CellError, match=says) as err:
        NB201Cell.from_string(text)
    assert "\n" not in str(err.value)


def test_bad_cells() -> None:
    with pytest.raises(CellError, match="6 edge ops"):
        NB201Cell(("none",) * 5)
    with pytest.raises(CellError, match="unknown NAS-Bench-201 op 'sep3x3' on edge 0->1;"):
        NB201Cell(("sep3x3",) + ("none",) * 5)
    with pytest.raises(CellError):
        NB201Cell.from_code(NUM_CELLS)
    with pytest.raises(ConfigError, match="unknown NAS-Bench-201 data set"):
        dataset_name("mnist")
    assert dataset_name("imagenet16-120") == "ImageNet16-120" == dataset_name("imagenet")


def test_neighbors_and_edits() -> None:
    cell = NB201Cell.random(random.Random(3))
    nbrs = list(cell.neighbors())
    assert len(nbrs) == 24 and len({n.code for _, _, n in nbrs}) == 24
    for e, op, n in nbrs:
        diff = [i for i in range(6) if n.ops[i] != cell.ops[i]]
        assert diff == [e] and n.ops[e] == op and op in OPS


def test_better_breaks_ties_to_fewer_edges() -> None:
    big = NB201Cell(("nor_conv_3x3",) * 6)
    small = big.with_op(0, "none")
    a, b = Observation(Proposal(big, 0), 0.5), Observation(Proposal(small, 0), 0.5)
    assert better(b, a) and not better(a, b)


def test_arch_index_from_strings() -> None:
    rng = random.Random(0)
    codes = list(range(NUM_CELLS))
    rng.shuffle(codes)
    index = ArchIndex([NB201Cell.from_code(c).arch_string() for c in codes])
    for i in (0, 17, NUM_CELLS - 1):
        assert index.cell(i).code == codes[i] and index.index(index.cell(i)) == i
    dup = [NB201Cell.from_code(c).arch_string() for c in codes]
    dup[5] = dup[6]
    with pytest.raises(CellError, match="missing"):
        ArchIndex(dup)
    with pytest.raises(CellError, match="expected 15625"):
        ArchIndex(dup[:10])


def test_size_space_index() -> None:
    assert NB201Size.from_index(0).key == "8:8:8:8:8"
    assert NB201Size.from_index(1).key == "8:8:8:8:16"
    assert NB201Size.from_index(11).key == "8:8:8:16:32"  # official record 000011
    assert NB201Size.from_index(284).key == "8:8:40:32:40"  # official record 000284
    assert NB201Size.from_index(NUM_SIZES - 1).key == "64:64:64:64:64"
    for i in (0, 5, 284, 9999, NUM_SIZES - 1):
        assert NB201Size.from_string(NB201Size.from_index(i).key).index == i
    with pytest.raises(CellError):
        NB201Size.from_string("8:8:8:8")
    with pytest.raises(CellError):
        NB201Size.from_string("8:8:8:8:12")


def test_official_meta_lists(shared_data) -> None:
    """The index mapping of the flat tables is the official one (meta.pickle.pbz2)."""
    from autoshrink.tabular.archive import read_pbz2
    from autoshrink.tabular.tables import load_flat_tables

    root = shared_data / "nats-bench" / "official-sample"
    tss = read_pbz2(root / "NATS-tss-v1_0-3ffb9-simple/meta.pickle.pbz2", allow_pickle=True)
    flat = load_flat_tables(shared_data / "nats-bench")
    assert [flat.index.cell(i).arch_string() for i in range(NUM_CELLS)] == tss["meta_archs"]
    sss = read_pbz2(root / "NATS-sss-v1_0-50262-simple/meta.pickle.pbz2", allow_pickle=True)
    assert [NB201Size.from_index(i).key for i in range(NUM_SIZES)] == sss["meta_archs"]
