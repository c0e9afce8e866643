"""Zero-cost proxies against hand-derived values and NASLib's stored NAS-Bench-201 scores."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from autoshrink.errors import BenchmarkError, ConfigError
from autoshrink.nn.nb201 import topology_network
from autoshrink.spaces.nb201 import NB201Cell
from autoshrink.tabular.naslib_zc import cell_from_naslib, load_naslib_scores
from autoshrink.zero_cost import PROXY_NAMES, check_proxy, proxy


def test_unknown_proxy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown zero-cost proxy 'fisher'"):
        proxy("fisher")
    assert check_proxy("naswot") == "naswot"


@pytest.mark.parametrize("name", PROXY_NAMES)
@pytest.mark.parametrize(("images", "labels"), [(0, 0), (1, 1), (4, 3)])
def test_a_proxy_refuses_a_batch_it_cannot_score(name: str, images: int, labels: int) -> None:
    """An empty batch gave silent zeros (snip, grad_norm) or a reshape error (jacov, naswot),
    one image a LinAlgError (jacov); each now names the proxy and the batch."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    says = f"zero-cost proxy {name} needs a batch of at least 2 images with one label each, "
    got = f"got {images} image{'s' * (images != 1)} and {labels} label{'s' * (labels != 1)}"
    with pytest.raises(ConfigError, match=re.escape(says + got)):  # "1 image": said "1 images"
        proxy(name)(net, torch.randn(images, 4), torch.zeros(labels, dtype=torch.long))


@pytest.mark.parametrize("name", PROXY_NAMES)
@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("model", "model must be a torch.nn.Module, got NoneType"),
        ("images", "images must be a torch.Tensor, got ndarray"),
        ("labels", "labels must be a torch.Tensor of integer class indices, got torch.float32"),
    ],
)
def test_a_proxy_names_a_model_or_batch_of_another_type(name: str, given: str, says: str) -> None:
    """None for the model, NumPy images or float labels met an AttributeError, TypeError or
    RuntimeError from inside torch (or, for some proxies, a score of float labels)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.randn(4, 4), torch.zeros(4, dtype=torch.long)
    args = {
        "model": (None, x, y),
        "images": (net, x.numpy(), y),
        "labels": (net, x, y.float()),
    }[given]
    with pytest.raises(ConfigError, match=f"^zero-cost proxy {name}: {re.escape(says)}$"):
        proxy(name)(*args)


def test_synflow_of_a_linear_chain_is_layers_times_path_sum() -> None:
    # With |weights|, no bias and an all-ones input, R = 1^T |W2| |W1| 1 is homogeneous of
    # degree 1 in each layer's weights, so sum |w dR/dw| over one layer is R (Euler): 2 R.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    w1, w2 = net[0].weight.detach().abs().double(), net[2].weight.detach().abs().double()
    r = float((w2 @ w1 @ torch.ones(4, dtype=torch.float64)).sum())
    got = proxy("synflow")(net, torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    assert got == pytest.approx(2 * r, rel=1e-12)


def test_naswot_kernel_counts_agreeing_units() -> None:
    # One ReLU on the input itself: codes [1,0,1] and [1,1,0] agree on 1 unit of 3,
    # K = [[3, 1], [1, 3]], log det = log 8.
    x = torch.tensor([[0.5, -1.0, 2.0], [1.0, 3.0, -0.1]])
    got = proxy("naswot")(nn.Sequential(nn.ReLU()), x, torch.zeros(2, dtype=torch.long))
    assert got == pytest.approx(math.log(8.0), rel=1e-12)
    # a unit is on above 0, however little: codes [1,1,0] and [1,0,1], K as above
    small = torch.tensor([[0.5, 0.25, -1.0], [0.75, -0.5, 0.1]])
    got = proxy("naswot")(nn.Sequential(nn.ReLU()), small, torch.zeros(2, dtype=torch.long))
    assert got == pytest.approx(math.log(8.0), rel=1e-12)

    # a unit whose input is exactly 0 is off: after the first ReLU, x becomes
    # [[0.5, 0, 2], [1, 3, 0]]; the second ReLU's codes are [1,0,1] and [1,1,0] again, so
    # K = 2 * [[3, 1], [1, 3]] = [[6, 2], [2, 6]], log det = log 32 (">= 0" gave log 20)
    two = nn.Sequential(nn.ReLU(), nn.ReLU())
    got = proxy("naswot")(two, x, torch.zeros(2, dtype=torch.long))
    assert got == pytest.approx(math.log(32.0), rel=1e-12)


def test_params_counts_only_trainable_weights() -> None:
    # Linear(4, 3): 4*3 + 3 = 15; Linear(3, 2) frozen (8) is not counted
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    net[1].requires_grad_(False)
    got = proxy("params")(net, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    assert got == 15.0


def test_jacov_of_a_linear_model_sees_perfectly_correlated_jacobians() -> None:
    # y = W x: every image's input gradient is the same row of W's column sums, so the
    # correlation matrix is all ones, eigenvalues (n, 0, ..., 0).
    n, k = 6, 1e-5
    net = nn.Linear(10, 3)
    got = proxy("jacov")(net, torch.randn(n, 10), torch.zeros(n, dtype=torch.long))
    want = -(math.log(n + k) + 1 / (n + k) + (n - 1) * (math.log(k) + 1 / k))
    assert got == pytest.approx(want, rel=1e-6)


def test_snip_and_grad_norm_from_their_definitions() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(net(x), y).backward()
    layers = [net[0], net[2]]
    snip = sum(float((m.weight * m.weight.grad).detach().abs().sum()) for m in layers)
    norm = sum(float(m.weight.grad.norm()) for m in layers)
    net.zero_grad(set_to_none=True)
    assert proxy("snip")(net, x, y) == pytest.approx(snip, rel=1e-6)
    assert proxy("grad_norm")(net, x, y) == pytest.approx(norm, rel=1e-6)


@pytest.mark.parametrize("name", PROXY_NAMES)
def test_proxies_leave_the_network_untouched(name: str) -> None:
    torch.manual_seed(0)
    net = topology_network(
        NB201Cell.from_string(
            "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|"
            "nor_conv_1x1~1|nor_conv_3x3~2|"
        ),
        num_classes=10,
        channels=4,
        cells_per_stage=1,
    ).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    value = proxy(name)(net, torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    assert math.isfinite(value)
    assert not net.training
    assert all(p.grad is None for p in net.parameters())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_proxies_run_on_the_proxy_cnn() -> None:
    from autoshrink.nn.cnn import build_network
    from autoshrink.spaces.cells import start_cell
    from autoshrink.spaces.macros import cifar_proxy

    cell = start_cell("cnn", 4, random.Random(0), "relu")
    net = build_network(cell, cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    values = {name: proxy(name)(net, x, y) for name in PROXY_NAMES}
    assert all(math.isfinite(v) for v in values.values())
    assert values["params"] == sum(p.numel() for p in net.parameters())


# -- outside numbers: NASLib's stored scores (NAS-Bench-Suite-Zero) --------------------------


@pytest.mark.parametrize("key", ["(0, -1, 2, 3, 2, 1)", "(0, 5, 2, 3, 2, 1)", "(0, 1, 2)", "(a)"])
def test_a_naslib_key_outside_its_ops_is_refused(key: str) -> None:
    # a negative index was read from the end of the op list: another cell, in silence
    with pytest.raises(BenchmarkError, match=r"^not a NASLib NAS-Bench-201 op tuple: "):
        cell_from_naslib(key)


@pytest.mark.shared_data
def test_naslib_encoding_matches_the_official_arch_strings(shared_data) -> None:
    # the one cell whose NASLib tuple we can read off by hand: all edges nor_conv_3x3 (op 2)
    assert cell_from_naslib("(2, 2, 2, 2, 2, 2)") == NB201Cell(("nor_conv_3x3",) * 6)
    # edge (1,4) of NASLib (node 0 -> 3 in ours) is the 3rd tuple entry, our 4th edge
    cell = cell_from_naslib("(0, 0, 1, 0, 0, 0)")
    assert cell.ops[3] == "none" and cell.ops.count("none") == 1
    stored = load_naslib_scores(shared_data / "nats-bench", "cifar10")
    assert len(stored.val_accuracy) > 700


@pytest.mark.shared_data
def test_params_equal_naslib_stored_values(shared_data) -> None:
    stored = load_naslib_scores(shared_data / "nats-bench", "cifar10")
    params = stored.proxy("params")  # NASLib: millions of parameters
    for cell in random.Random(3).sample(stored.cells(), 5):
        net = topology_network(cell, num_classes=10)
        got = proxy("params")(net, torch.zeros(2), torch.zeros(2, dtype=torch.long))  # not read
        assert got / 1e6 == pytest.approx(params[cell.code], abs=1e-6)


#: Spearman our values must reach against NASLib's on the sample. jacov depends most on the
#: batch's content: NASLib used a real CIFAR-10 batch, we use noise, and two of our own runs
#: with different noise batches and inits agree only at 0.90-0.94 (docs/zero-cost.md), so it
#: is held to 0.75 here; the 40- and 200-cell figures are in benchmarks/README.md.
RANK_FLOOR = {"synflow": 0.9, "snip": 0.9, "grad_norm": 0.9, "naswot": 0.9, "jacov": 0.75}


@pytest.mark.shared_data
def test_proxies_rank_nb201_cells_like_naslib(shared_data, one_thread) -> None:
    """Spearman with NASLib's stored values on a seeded sample of cells (floors above), and a
    correlation with validation accuracy within 0.15 of the file's own values."""
    stored = load_naslib_scores(shared_data / "nats-bench", "cifar10")
    cells = random.Random(0).sample(stored.cells(), 16)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    ours: dict[str, list[float]] = {n: [] for n in RANK_FLOOR}
    for i, cell in enumerate(cells):
        torch.manual_seed(i)
        net = topology_network(cell, num_classes=10)
        for n in RANK_FLOOR:
            ours[n].append(proxy(n)(net, x, y))
    acc = [stored.val_accuracy[c.code] for c in cells]
    got = {}
    for n in RANK_FLOOR:
        theirs = [stored.proxy(n)[c.code] for c in cells]
        rho = spearmanr(ours[n], theirs).statistic
        gap = spearmanr(ours[n], acc).statistic - spearmanr(theirs, acc).statistic
        got[n] = (round(rho, 3), round(gap, 3))
    assert all(got[n][0] >= floor for n, floor in RANK_FLOOR.items()), got
    assert all(abs(got[n][1]) <= 0.15 for n in RANK_FLOOR), got
    # synflow itself, not only its ranks: NASLib stores its natural logarithm
    logs = np.log(ours["synflow"])
    want = np.array([stored.proxy("synflow")[c.code] for c in cells])
    assert np.max(np.abs(logs - want)) < 1.0


def test_jacov_of_a_model_that_ignores_its_input_is_minus_infinity() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias.expand(x.shape[0], 3)

    got = proxy("jacov")(Constant(), torch.randn(4, 10), torch.zeros(4, dtype=torch.long))
    assert got == float("-inf")

    class PixelSum(nn.Module):  # every pixel of an image gets the same input gradient
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1).sum(1, keepdim=True) * self.w

    got = proxy("jacov")(PixelSum(), torch.randn(4, 10), torch.zeros(4, dtype=torch.long))
    assert got == float("-inf")  # the correlation of constant rows is undefined


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "has no data set 'cifar10'; it has list"),
        ('{"cifar10": [1, 2]}', "data set 'cifar10' is a list; expected an object of cells"),
        ('{"cifar10": {"(0, 1, 2, 3, 4, 0)": {}}}', "record '(0, 1, 2, 3, 4, 0)' is malformed"),
        ('{"cifar10": {"(9, 9)": {"val_accuracy": 1}}}', "not a NASLib NAS-Bench-201 op tuple"),
    ],
)
def test_a_damaged_naslib_file_is_one_line_naming_it(tmp_path, text, needle) -> None:
    path = tmp_path / "zc.json"
    path.write_text(text)
    with pytest.raises(BenchmarkError, match=re.escape(needle)) as info:
        load_naslib_scores(path, "cifar10")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
