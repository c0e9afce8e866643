"""The RNN cell and language model: hand-computed cell steps, shapes, dropouts, the 23.0M count."""

from __future__ import annotations

import math

import pytest
import torch

from autoshrink.cost.rnn import count_rnn, edge_cost, rnn_proxy, shrinkrnn_ptb
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nn.rnn import (
    Dropouts,
    LSTMModel,
    RNNCell,
    RNNModel,
    detach_hidden,
    locked_dropout,
)
from autoshrink.spaces.cells import published_cell
from test_rnn_text import one_thread  # noqa: F401 (autouse fixture)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def scalar_model(cell: Cell, w0: list[list[float]], edges: dict[tuple[int, int], list[float]]):
    """A 1-unit model (ninp = nhid = 1) with the given weights."""
    model = RNNModel(cell, 3, emsize=1, nhid=1)
    with torch.no_grad():
        model.rnn.w0.copy_(torch.tensor(w0))
        for (i, j), w in edges.items():
            model.rnn.edges[f"e{i}_{j}"].copy_(torch.tensor([w]))
    return model.eval()


def test_cell_step_by_hand_mean_over_incoming_edges() -> None:
    # 0 -> 1 (identity), 0 -> 2 and 1 -> 2 (tanh): node 2 is the mean of two edges, the leaf.
    cell = Cell("rnn", ("input", "identity", "tanh"), ((0, 1), (0, 2), (1, 2)))
    w0 = [[0.5, -0.3], [0.2, 0.7]]  # rows: x, h; columns: c, h~
    w = {(0, 1): [0.4, 1.5], (0, 2): [-0.6, 0.9], (1, 2): [1.1, -0.8]}
    model = scalar_model(cell, w0, w)
    x, h = 0.8, -0.25
    s0 = h + sig(x * 0.5 + h * 0.2) * (math.tanh(x * -0.3 + h * 0.7) - h)
    s1 = s0 + sig(s0 * 0.4) * (s0 * 1.5 - s0)  # identity on node 1
    e02 = s0 + sig(s0 * -0.6) * (math.tanh(s0 * 0.9) - s0)
    e12 = s1 + sig(s1 * 1.1) * (math.tanh(s1 * -0.8) - s1)
    expected = (e02 + e12) / 2
    out, last = model.rnn(torch.tensor([[[x]]]), torch.tensor([[h]]))
    assert out.shape == (1, 1, 1) and last.shape == (1, 1)
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_an_inner_node_with_two_in_edges_is_their_mean_before_it_feeds_on() -> None:
    # 0 -> 1 (identity), 0 -> 2 and 1 -> 2 (sigmoid), 2 -> 3 (tanh): node 2 has two in-edges
    # and is no leaf, so its state must be the mean (method section 1) before 2 -> 3 reads it.
    # Above, every node with two in-edges was a leaf: an inner node's sum went unnoticed.
    cell = Cell("rnn", ("input", "identity", "sigmoid", "tanh"), ((0, 1), (0, 2), (1, 2), (2, 3)))
    w0 = [[0.9, -0.4], [0.3, 1.1]]
    w = {(0, 1): [0.6, 1.2], (0, 2): [-0.7, 1.4], (1, 2): [0.5, -1.3], (2, 3): [1.2, 0.8]}
    model = scalar_model(cell, w0, w)
    x, h = 0.6, 0.4
    s0 = h + sig(x * 0.9 + h * 0.3) * (math.tanh(x * -0.4 + h * 1.1) - h)
    s1 = s0 + sig(s0 * 0.6) * (s0 * 1.2 - s0)  # identity on node 1
    e02 = s0 + sig(s0 * -0.7) * (sig(s0 * 1.4) - s0)
    e12 = s1 + sig(s1 * 0.5) * (sig(s1 * -1.3) - s1)
    s2 = (e02 + e12) / 2
    s3 = s2 + sig(s2 * 1.2) * (math.tanh(s2 * 0.8) - s2)  # the only leaf
    assert cell.leaves == (3,)
    out, _ = model.rnn(torch.tensor([[[x]]]), torch.tensor([[h]]))
    assert out.item() == pytest.approx(s3, rel=1e-6)


def test_cell_output_is_the_mean_of_the_leaves_over_two_steps() -> None:
    # 0 -> 1 (sigmoid), 0 -> 2 (relu): both leaves; the output feeds the next step.
    cell = Cell("rnn", ("input", "sigmoid", "relu"), ((0, 1), (0, 2)))
    w0 = [[-0.4, 0.9], [0.3, -1.2]]
    w = {(0, 1): [0.7, -2.0], (0, 2): [-0.5, 1.3]}
    model = scalar_model(cell, w0, w)

    def step(x: float, h: float) -> float:
        s0 = h + sig(x * -0.4 + h * 0.3) * (math.tanh(x * 0.9 + h * -1.2) - h)
        s1 = s0 + sig(s0 * 0.7) * (sig(s0 * -2.0) - s0)
        s2 = s0 + sig(s0 * -0.5) * (max(0.0, s0 * 1.3) - s0)
        return (s1 + s2) / 2

    h1 = step(1.5, 0.1)
    h2 = step(-0.7, h1)
    out, last = model.rnn(torch.tensor([[[1.5]], [[-0.7]]]), torch.tensor([[0.1]]))
    assert out[:, 0, 0].tolist() == pytest.approx([h1, h2], rel=1e-6)
    assert last.item() == pytest.approx(h2, rel=1e-6)


def test_a_cell_without_edges_outputs_node_zero() -> None:
    cell = Cell("rnn", ("input", "tanh"), ())
    model = scalar_model(cell, [[0.3, 0.6], [-0.2, 0.4]], {})
    x, h = 0.5, 0.2
    s0 = h + sig(x * 0.3 + h * -0.2) * (math.tanh(x * 0.6 + h * 0.4) - h)
    assert model.rnn(torch.tensor([[[x]]]), torch.tensor([[h]]))[1].item() == pytest.approx(s0)


def test_columns_are_c_then_h_for_wider_states() -> None:
    # nhid = 2: W0 columns 0..1 are the gate c, 2..3 the candidate h~ (per unit).
    cell = Cell("rnn", ("input", "identity"), ((0, 1),))
    model = RNNModel(cell, 3, emsize=2, nhid=2).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.rnn.w0.normal_()
        model.rnn.edges["e0_1"].normal_()
    x, h = torch.randn(1, 1, 2), torch.randn(1, 2)
    w0, w01 = model.rnn.w0, model.rnn.edges["e0_1"]
    ch = torch.cat([x[0], h], dim=1) @ w0
    s0 = h + torch.sigmoid(ch[:, :2]) * (torch.tanh(ch[:, 2:]) - h)
    ch1 = s0 @ w01
    s1 = s0 + torch.sigmoid(ch1[:, :2]) * (ch1[:, 2:] - s0)
    assert torch.allclose(model.rnn(x, h)[1], s1, atol=1e-6)


@pytest.mark.parametrize("kind", ["cell", "lstm"])
def test_language_model_shapes_and_tied_weights(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "cell":
        model = RNNModel(published_cell("shrinkrnn"), 50, emsize=8, nhid=8)
    else:
        model = LSTMModel(50, emsize=8, nhid=8)
    tokens = torch.randint(0, 50, (7, 4))  # [T, B]
    out = model(tokens, model.init_hidden(4))
    assert out.logits.shape == (7, 4, 50)
    assert out.raw.shape == (7, 4, 8)
    states = [out.hidden] if kind == "cell" else list(out.hidden)  # LSTM: (h, c)
    assert all(h.shape == ((4, 8) if kind == "cell" else (1, 4, 8)) for h in states)
    assert all(h.grad_fn is not None for h in states)
    detached = detach_hidden(out.hidden)
    assert all(h.grad_fn is None for h in ([detached] if kind == "cell" else detached))
    assert model.decoder.weight is model.encoder.weight


def test_hidden_state_carries_the_history() -> None:
    # Two windows from the carried state give exactly the output of one long window.
    torch.manual_seed(0)
    model = RNNModel(published_cell("shrinkrnn"), 30, emsize=6, nhid=6).eval()
    tokens = torch.randint(0, 30, (10, 3))
    full = model(tokens, model.init_hidden(3))
    first = model(tokens[:4], model.init_hidden(3))
    second = model(tokens[4:], detach_hidden(first.hidden))
    joined = torch.cat([first.logits, second.logits])
    assert torch.allclose(joined, full.logits, atol=1e-5)


def test_locked_dropout_shares_one_mask_over_time() -> None:
    torch.manual_seed(0)
    x = torch.ones(6, 2, 16)  # [T, B, D]
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:1].expand_as(y))  # one mask per sequence, the same at every step
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_dropouts_act_in_training_only() -> None:
    torch.manual_seed(0)
    model = RNNModel(published_cell("shrinkrnn"), 20, emsize=16, nhid=16, dropouts=Dropouts.darts())
    tokens = torch.randint(0, 20, (5, 2))
    model.eval()
    a = model(tokens, model.init_hidden(2)).logits
    assert torch.equal(a, model(tokens, model.init_hidden(2)).logits)
    model.train()
    b = model(tokens, model.init_hidden(2)).logits
    assert not torch.allclose(a, b)


def test_the_released_shrinkrnn_has_23_0m_parameters() -> None:
    cell = published_cell("shrinkrnn")
    assert cell.num_edges == 12 and cell.leaves == (4, 5)
    # embedding 10,000 x 745 + node-0 matrix 1,490 x 1,490 + 12 edges of 745 x 1,490 + bias
    by_hand = 10_000 * 745 + 1_490 * 1_490 + 12 * 745 * 1_490 + 10_000
    assert by_hand == 23_000_700
    assert count_rnn(cell, shrinkrnn_ptb()).params == by_hand
    model = RNNModel(cell, 10_000, emsize=745, nhid=745)
    assert sum(p.numel() for p in model.parameters()) == by_hand


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_matches_the_module_for_random_cells(seed: int) -> None:
    import random

    from autoshrink.spaces.cells import start_cell

    rng = random.Random(seed)
    cell = start_cell("rnn", 6, rng)
    for _ in range(rng.randrange(0, 10)):
        cell = cell.remove_edge(rng.choice(cell.edges))
    spec = rnn_proxy(vocab=37, nhid=12)
    model = RNNModel(cell, 37, emsize=12, nhid=12)
    assert count_rnn(cell, spec).params == sum(p.numel() for p in model.parameters())
    assert edge_cost(cell, 12) == cell.num_edges * 144
    # and the MACs of one token, by torch's flop counter (2 per MAC), edges removed or not
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 1, dtype=torch.long), model.init_hidden(1))
    assert count_rnn(cell, spec).macs == counter.get_total_flops() // 2


def test_bad_model_settings() -> None:
    cnn = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))
    with pytest.raises(ConfigError, match="needs an rnn cell"):
        RNNModel(cnn, 10, emsize=4, nhid=4)
    rnn = published_cell("shrinkrnn")
    with pytest.raises(ConfigError, match="emsize == nhid"):
        RNNModel(rnn, 10, emsize=4, nhid=5)
    for ninp, nhid in ((0, 8), (8, 0)):
        with pytest.raises(ConfigError, match=f"ninp and nhid must be >= 1, got {ninp} and {nhid}"):
            RNNCell(rnn, ninp, nhid, input_dropout=0.0, hidden_dropout=0.0)
    with pytest.raises(ConfigError, match="dropout output"):
        Dropouts(output=1.0)
    with pytest.raises(ConfigError, match="needs an rnn cell"):
        count_rnn(cnn, shrinkrnn_ptb())


def test_rnn_macs_per_token_by_hand_and_by_torchs_flop_counter() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    cell = published_cell("shrinkrnn")
    # node-0 matrix 1,490 x 1,490 + 12 edges of 745 x 1,490 + the decoder's 745 x 10,000
    assert count_rnn(cell, shrinkrnn_ptb()).macs == 1_490 * 1_490 + 12 * 745 * 1_490 + 7_450_000
    model = RNNModel(cell, 37, emsize=12, nhid=12).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, dtype=torch.long), model.init_hidden(1))  # one token
    assert count_rnn(cell, rnn_proxy(vocab=37, nhid=12)).macs == counter.get_total_flops() // 2


def test_untied_decoders_and_vocabulary_limits_are_counted_and_checked() -> None:
    from autoshrink.cost.rnn import RNNSpec, check_vocabulary

    cell = published_cell("shrinkrnn")  # 12 edges
    untied = RNNSpec(name="r", vocab=100, emsize=8, nhid=8, tied=False)
    # embedding 100 x 8, node-0 matrix 16 x 16, 12 edges of 8 x 16, decoder weight and bias
    assert count_rnn(cell, untied).params == 800 + 256 + 12 * 128 + 8 * 100 + 100
    check_vocabulary(2)  # the smallest vocabulary with something to predict
    with pytest.raises(ConfigError, match="a vocabulary of >= 2 words, got 1"):
        check_vocabulary(1)
    with pytest.raises(ConfigError, match="r: tied weights need emsize == nhid"):
        RNNSpec(name="r", vocab=100, emsize=8, nhid=16, tied=True)
