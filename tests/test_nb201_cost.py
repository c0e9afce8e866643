"""Parameter and FLOP counts of the NAS-Bench-201 networks against the official records,
torch's own parameter count and flop counter, and NASLib's recorded parameter counts."""

from __future__ import annotations

import ast
import json
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from autoshrink.cost.nb201 import count_size, count_topology, op_counts, topology_cost_table
from autoshrink.errors import ConfigError
from autoshrink.nn.nb201 import size_network, topology_network
from autoshrink.spaces.nb201 import DATASETS, NB201Cell, NB201Size

# (arch, dataset) -> (params M, flop M), copied from the official records in official-sample/
OFFICIAL_TSS = {
    ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
     "skip_connect~2|", "cifar10"): (0.129306, 15.64737),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
     "cifar10"): (0.802426, 113.95137),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
     "cifar100"): (0.808276, 113.95722),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
     "ImageNet16-120"): (0.809576, 28.49548),
    ("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|",
     "ImageNet16-120"): (0.108456, 2.93644),
}  # fmt: skip
OFFICIAL_SSS = {
    ("8:8:8:8:8", "cifar10"): (0.011714, 4.481114),
    ("8:8:8:16:32", "cifar100"): (0.052172, 6.84362),
    ("8:8:40:32:40", "cifar10"): (0.144834, 21.827994),
    ("8:8:40:32:40", "ImageNet16-120"): (0.149344, 5.461816),
}


@pytest.mark.parametrize(("key", "expected"), OFFICIAL_TSS.items())
def test_topology_counts_match_official(key, expected) -> None:
    arch, dataset = key
    counts = count_topology(NB201Cell.from_string(arch), dataset=dataset)
    assert (counts.params / 1e6, counts.macs / 1e6) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("key", "expected"), OFFICIAL_SSS.items())
def test_size_counts_match_official(key, expected) -> None:
    channels, dataset = key
    counts = count_size(NB201Size.from_string(channels), dataset=dataset)
    assert (counts.params / 1e6, counts.macs / 1e6) == pytest.approx(expected, abs=1e-9)


def test_counts_match_every_official_sample_record(shared_data) -> None:
    """All records of both sample archives: 3 cells x 4 hp/dataset runs each."""
    from autoshrink.tabular.archive import read_archive

    root = shared_data / "nats-bench" / "official-sample"
    tss = read_archive(root / "NATS-tss-v1_0-3ffb9-simple", allow_pickle=True)
    sss = read_archive(root / "NATS-sss-v1_0-50262-simple", allow_pickle=True)
    assert len(tss.entries) == 18 and len(sss.entries) == 27
    for e in tss.entries:
        c = count_topology(NB201Cell.from_string(e.arch), dataset=e.dataset)
        assert (c.params / 1e6, c.macs / 1e6) == pytest.approx((e.params, e.flop), abs=1e-9)
    for e in sss.entries:
        c = count_size(NB201Size.from_string(e.arch), dataset=e.dataset)
        assert (c.params / 1e6, c.macs / 1e6) == pytest.approx((e.params, e.flop), abs=1e-9)


def _torch_counts(net: torch.nn.Module, size: int) -> tuple[int, int]:
    with FlopCounterMode(display=False) as counter:
        net.eval()(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops()


def test_torch_modules_agree_with_the_counter() -> None:
    """torch counts 2 FLOPs per MAC and no bias adds: official flop = torch / 2 + classes."""
    rng = random.Random(0)
    cells = [NB201Cell.random(rng) for _ in range(3)] + [NB201Cell(("avg_pool_3x3",) * 6)]
    for cell, (dataset, (classes, size)) in zip(cells, [*DATASETS.items(), ("cifar10", (10, 32))],
                                                 strict=True):  # fmt: skip
        params, flops = _torch_counts(topology_network(cell, num_classes=classes), size)
        counts = count_topology(cell, dataset=dataset)
        assert params == counts.params
        assert flops // 2 + classes == counts.macs
    setting = NB201Size.from_string("8:8:40:32:40")
    params, flops = _torch_counts(size_network(setting, num_classes=100), 32)
    counts = count_size(setting, dataset="cifar100")
    assert (params, flops // 2 + 100) == (counts.params, counts.macs)


def test_network_output_shapes() -> None:
    net = topology_network(NB201Cell.from_code(1234), num_classes=120).eval()
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 120)
    net = size_network(NB201Size.from_index(284), num_classes=10).eval()
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cost_table_matches_per_cell_counts() -> None:
    params, flop = topology_cost_table("cifar100")
    rng = random.Random(1)
    for code in [0, 15624, *(rng.randrange(15625) for _ in range(20))]:
        counts = count_topology(NB201Cell.from_code(code), dataset="cifar100")
        assert (params[code], flop[code]) == (counts.params, counts.macs)


def test_params_match_naslib_records(shared_data) -> None:
    """NASLib's zero-cost file records params of ~2,170 cells (its own tuple encoding: op
    indices for edges 0-1, 0-2, 0-3, 1-2, 1-3, 2-3 into skip, none, conv3x3, conv1x1, pool).
    Its 'flops' use another convention (no bias adds, more ops), so only params are compared."""
    names = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"]
    position = [0, 1, 3, 2, 4, 5]  # our edge e (01, 02, 12, 03, 13, 23) -> NASLib position
    data = json.loads((shared_data / "nats-bench" / "naslib_zc_nasbench201.json").read_text())
    checked = 0
    for dataset, records in data.items():
        for key, rec in records.items():
            t = ast.literal_eval(key)
            cell = NB201Cell(tuple(names[t[position[e]]] for e in range(6)))
            assert count_topology(cell, dataset=dataset).params / 1e6 == pytest.approx(
                rec["params"]["score"], abs=1e-9
            )
            checked += 1
    assert checked > 2000


def test_an_op_without_a_count_rule_is_refused() -> None:
    # NB201Cell refuses unknown ops itself; a count rule must not fall through to None
    with pytest.raises(ConfigError, match="^no count rule for NAS-Bench-201 op 'sep_conv_3x3'$"):
        op_counts("sep_conv_3x3", 16, 16, 32)


def test_a_cell_sums_its_nodes_inputs_and_returns_node_3() -> None:
    """The cell semantics by hand, with ops whose outputs are known: with every edge a skip,
    node 1 = x, node 2 = x + x, node 3 = x + x + 2x = 4x; a ``none`` edge adds nothing, so
    cutting 0 -> 3 and 1 -> 3 leaves node 3 = node 2 = 2x."""
    from autoshrink.nn.nb201 import NB201CellModule

    x = torch.randn(2, 4, 5, 5)
    skips = NB201Cell.from_string("|skip_connect~0|+|skip_connect~0|skip_connect~1|+"
                                  "|skip_connect~0|skip_connect~1|skip_connect~2|")  # fmt: skip
    torch.testing.assert_close(NB201CellModule(skips, 4, 4)(x), 4 * x, rtol=0, atol=0)
    cut = NB201Cell.from_string("|skip_connect~0|+|skip_connect~0|skip_connect~1|+"
                                "|none~0|none~1|skip_connect~2|")  # fmt: skip
    torch.testing.assert_close(NB201CellModule(cut, 4, 4)(x), 2 * x, rtol=0, atol=0)


def test_the_average_pool_edge_counts_no_padding() -> None:
    """``avg_pool_3x3`` averages the pixels it covers: a constant image stays constant at its
    borders too (a pool counting the padding would shrink the corners to 4/9)."""
    from autoshrink.nn.nb201 import make_op

    ones = torch.ones(1, 2, 4, 4)
    torch.testing.assert_close(make_op("avg_pool_3x3", 2, 2)(ones), ones, rtol=0, atol=0)


def test_the_reduction_block_adds_its_shortcut() -> None:
    """Silenced in turn (a zero batch-norm scale and shift; a zero 1x1 conv), the residual
    branch leaves the shortcut, 2x2 average pool then 1x1 conv, and the shortcut leaves the
    residual branch: the block is their sum."""
    from autoshrink.nn.nb201 import ResidualReduction

    torch.manual_seed(0)
    block = ResidualReduction(4, 8).eval()
    x = torch.randn(2, 4, 6, 6)
    residual = block.conv_b(block.conv_a(x))
    with torch.no_grad():
        block.shortcut[1].weight.zero_()
    torch.testing.assert_close(block(x), residual, rtol=0, atol=0)
    torch.manual_seed(0)
    block = ResidualReduction(4, 8).eval()
    with torch.no_grad():
        block.conv_b[2].weight.zero_()
        block.conv_b[2].bias.zero_()
    shortcut = torch.nn.functional.conv2d(
        torch.nn.functional.avg_pool2d(x, 2), block.shortcut[1].weight
    )
    torch.testing.assert_close(block(x), shortcut)
    assert block(x).shape == (2, 8, 3, 3)


def test_unknown_and_width_changing_none_ops_are_refused() -> None:
    from autoshrink.nn.nb201 import make_op

    with pytest.raises(ValueError, match="^unknown NAS-Bench-201 op 'conv_5x5'$"):
        make_op("conv_5x5", 4, 4)
    with pytest.raises(ValueError, match="^a 'none' edge cannot change the width$"):
        make_op("none", 4, 8)
