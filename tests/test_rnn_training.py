"""Language-model training: proxy (§4) and final (§7) loops, divergence, the RNN evaluator."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from autoshrink.cost.rnn import count_rnn, rnn_proxy
from autoshrink.data.text import batchify, load_text
from autoshrink.errors import ConfigError, DataError
from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
from autoshrink.graph import Cell
from autoshrink.nn.rnn import Dropouts, RNNModel
from autoshrink.objectives import Score
from autoshrink.spaces.cells import published_cell
from autoshrink.training import final_language
from autoshrink.training.final_language import LMRecipe, WeightAverage, train_final_lm
from autoshrink.training.language import evaluate_lm, train_epoch, train_proxy_lm, windows
from autoshrink.training.proxy_settings import RNNProxyTraining
from test_rnn_text import one_thread, write_tiny_corpus  # noqa: F401 (autouse)

QUICK = RNNProxyTraining(nhid=8, epochs=1, batch_size=8, bptt=10, eval_batch_size=4)
SMALL_CELL = Cell("rnn", ("input", "tanh", "identity"), ((0, 1), (0, 2), (1, 2)))


@pytest.fixture
def small(tmp_path: Path):
    """60 training lines: for tests of the loop's mechanics, not of learning."""
    return load_text(write_tiny_corpus(tmp_path / "small", n_train=60, n_eval=20))


@pytest.mark.slow
def test_proxy_training_lowers_perplexity_far_below_the_vocabulary(tmp_path: Path) -> None:
    tiny = load_text(write_tiny_corpus(tmp_path / "tiny", n_train=200, n_eval=40))
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, tiny.ntokens, emsize=16, nhid=16)
    settings = RNNProxyTraining(nhid=16, lr=5.0, epochs=4, batch_size=8, bptt=5)
    out = train_proxy_lm(model, tiny.train, tiny.valid, settings)
    assert not out.diverged and out.stop_reason == "epochs"
    # uniform guessing gives ppl = 14 and the unigram distribution ~12; the grammar allows
    # about 3 choices per word
    assert out.history[0]["val_perplexity"] > 10
    assert out.best_perplexity < tiny.ntokens / 3
    assert out.best_perplexity == min(h["val_perplexity"] for h in out.history)


@pytest.mark.slow
def test_proxy_training_on_the_ptb_proxy_split(shared_data: Path) -> None:
    corpus = load_text(shared_data / "ptb" / "proxy", train_lines=200, valid_lines=50)
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, corpus.ntokens, emsize=16, nhid=16)
    settings = RNNProxyTraining(nhid=16, epochs=1, batch_size=8)
    out = train_proxy_lm(model, corpus.train, corpus.valid, settings)
    assert not out.diverged
    assert out.best_perplexity < corpus.ntokens / 2  # ~1,300 words


def test_learning_rate_is_divided_after_epochs_7_and_9(small) -> None:
    torch.manual_seed(0)
    model = RNNModel(Cell("rnn", ("input", "tanh"), ((0, 1),)), small.ntokens, emsize=4, nhid=4)
    settings = RNNProxyTraining(nhid=4, epochs=10, batch_size=16, bptt=10, patience=10)
    out = train_proxy_lm(model, small.train, small.valid, settings)
    lrs = [h["lr"] for h in out.history]
    assert lrs == pytest.approx([20.0] * 7 + [2.0] * 2 + [0.2])


def test_patience_stops_after_four_epochs_without_improvement(small) -> None:
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8)
    # a clip of 1e-30 leaves the float32 weights unchanged: the perplexity never improves
    settings = RNNProxyTraining(nhid=8, epochs=10, batch_size=16, bptt=10, clip=1e-30)
    out = train_proxy_lm(model, small.train, small.valid, settings)
    assert out.stop_reason == "patience" and out.epochs == 1 + 4 and not out.diverged
    assert len({h["val_perplexity"] for h in out.history}) == 1


def test_a_patience_stop_reports_the_best_perplexity_not_the_last() -> None:
    """Pins that a patience stop keeps the best validation perplexity of the training: after
    a best of 50 at epoch 2, four worse epochs stop it at epoch 6 with 50, not the last 90."""
    from autoshrink.training.language import LMEarlyStop

    stop = LMEarlyStop(RNNProxyTraining(patience=4, epochs=10), ntoken=1000)
    outs = [stop.after_epoch(e, 1.0, p, 20.0) for e, p in enumerate([100, 50, 60, 70, 80, 90], 1)]
    assert outs[:5] == [None] * 5
    out = outs[5]
    assert out is not None
    assert (out.stop_reason, out.epochs, out.best_perplexity, out.diverged) == (
        "patience",
        6,
        50,
        False,
    )


def test_a_diverging_training_is_reported_and_scores_minus_inf(small) -> None:
    torch.manual_seed(0)
    settings = RNNProxyTraining(nhid=8, epochs=3, batch_size=8, bptt=10, lr=1e9)
    model = RNNModel(published_cell("shrinkrnn"), small.ntokens, emsize=8, nhid=8)
    out = train_proxy_lm(model, small.train, small.valid, settings)
    assert out.diverged and out.stop_reason == "diverged" and math.isnan(out.best_perplexity)
    ev = RNNProxyEvaluator(small, settings)
    evaluation = ev.evaluate(published_cell("shrinkrnn"), seed=0)
    assert evaluation.status == "diverged"
    assert Score.rnn()(evaluation.metrics) == -math.inf


def test_a_candidate_whose_training_raises_is_a_failed_evaluation(small, monkeypatch) -> None:
    """A RuntimeError inside one candidate (out of memory, say) fails that candidate with its
    costs and the error, not the search; ``fit`` gives no model back."""
    from autoshrink.evaluators import rnn_proxy

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(rnn_proxy, "train_proxy_lm", out_of_memory)
    ev = RNNProxyEvaluator(small, QUICK)
    cell = published_cell("shrinkrnn")
    evaluation, model = ev.fit(cell, seed=0)
    assert evaluation.status == "failed" and model is None
    assert evaluation.detail["error"] == "RuntimeError: CUDA out of memory"
    assert math.isnan(evaluation.metrics["perplexity"])
    assert evaluation.metrics["edges"] == 12.0 and Score.rnn()(evaluation.metrics) == -math.inf


class Spy(torch.nn.Module):
    """Wraps a model and records whether each window's incoming hidden state has a history."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.ntoken, self.had_history, self.lengths = model, model.ntoken, [], []
        self.incoming: list[torch.Tensor] = []  # each window's hidden state, in and out
        self.outgoing: list[torch.Tensor] = []

    def init_hidden(self, b: int) -> torch.Tensor:
        return self.model.init_hidden(b)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor):
        self.had_history.append(hidden.grad_fn is not None or hidden.requires_grad)
        self.lengths.append(len(tokens))
        out = self.model(tokens, hidden)
        self.last_hidden = out.hidden
        self.incoming.append(hidden.detach().clone())
        self.outgoing.append(out.hidden.detach().clone())
        return out


def test_hidden_state_is_detached_between_bptt_windows(small) -> None:
    torch.manual_seed(0)
    spy = Spy(RNNModel(published_cell("shrinkrnn"), small.ntokens, emsize=8, nhid=8))
    data = torch.from_numpy(batchify(small.train, 8))  # [T, 8]
    opt = torch.optim.SGD(spy.parameters(), lr=1.0)
    train_epoch(spy, opt, data, bptt=5, clip=0.25)
    assert len(spy.had_history) == len(list(windows(data.size(0), 5))) > 3
    assert not any(spy.had_history)  # every window starts from a detached state
    assert spy.last_hidden.grad_fn is not None  # ... that did carry a history before
    # detached, not dropped: each window starts from the state the one before ended with (a
    # loop that reset it to zeros at every window passed this file before)
    assert not spy.incoming[0].any()
    for before, after in zip(spy.outgoing, spy.incoming[1:], strict=False):
        assert after.any() and torch.equal(after, before)


@pytest.mark.parametrize("tar", [2.0, 0.5])
def test_tar_adds_the_mean_squared_change_of_the_raw_outputs(small, capsys, tar) -> None:
    """One window, trained by ``train_epoch`` and by hand on cross-entropy plus
    ``tar · mean((raw[t+1] - raw[t])²)``: the same weights."""
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8).double()
    by_hand = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8).double()
    by_hand.load_state_dict(model.state_dict())
    data = torch.from_numpy(batchify(small.train, 4))[:9]  # [9, 4]: one window of 8 steps
    train_epoch(model, torch.optim.SGD(model.parameters(), lr=1.0), data, bptt=8, clip=1e9, tar=tar)
    assert capsys.readouterr().err == ""  # no progress label: no bar
    out = by_hand(data[:8], by_hand.init_hidden(4))
    loss = (
        torch.nn.functional.cross_entropy(
            out.logits.reshape(-1, small.ntokens), data[1:].reshape(-1)
        )
        + tar * (out.raw[1:] - out.raw[:-1]).pow(2).mean()
    )
    loss.backward()
    with torch.no_grad():
        for p in by_hand.parameters():
            p -= p.grad
    for (name, a), b in zip(model.named_parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_a_one_epoch_proxy_training_trains_epoch_1(small) -> None:
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8)
    out = train_proxy_lm(model, small.train, small.valid, QUICK)
    assert (out.epochs, out.stop_reason) == (1, "epochs")
    assert [h["epoch"] for h in out.history] == [1]


def test_windows_cover_the_stream() -> None:
    assert list(windows(12, 5)) == [5, 5, 1]
    rng = __import__("numpy").random.default_rng(0)
    lengths = list(windows(1000, 35, rng, max_delta=20))
    assert sum(lengths) == 999 and all(1 <= n <= 55 for n in lengths)
    assert all(n >= 5 for n in lengths[:-1])


def test_evaluation_does_not_depend_on_the_window_length(small) -> None:
    torch.manual_seed(0)
    model = RNNModel(published_cell("shrinkrnn"), small.ntokens, emsize=8, nhid=8)
    data = torch.from_numpy(batchify(small.valid, 4))
    assert evaluate_lm(model, data, 3) == pytest.approx(evaluate_lm(model, data, 1000), rel=1e-5)


class Clock(torch.nn.Module):
    """A language model whose hidden state counts the tokens it has read and which predicts
    token ``(count + 1) mod V`` with logit 20 (0 elsewhere): on the stream 0, 1, 2, ... mod V it
    is right exactly when its hidden state is carried across windows and each position is
    scored against the next token."""

    ntoken = 7

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, dtype=torch.long)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor):
        from autoshrink.nn.rnn import LMOutput

        read_before = hidden[None, :] + torch.arange(len(tokens))[:, None]  # [T, B]
        logits = 20.0 * torch.nn.functional.one_hot((read_before + 1) % self.ntoken, 7).double()
        return LMOutput(logits, hidden + len(tokens), logits)


@pytest.mark.parametrize("bptt", [3, 1000])
def test_evaluation_scores_the_next_token_from_the_carried_state(bptt: int) -> None:
    # every prediction right: cross-entropy log(1 + 6 e^-20) per token, whatever the windows.
    # The test above cannot tell: an untrained cell's hidden state moves its loss by about
    # 6e-6 relative, under its 1e-5 tolerance; scoring each position against its own token,
    # or starting each window from a zero state, passed this file before.
    data = (torch.arange(20) % 7)[:, None].expand(20, 2).contiguous()  # [T, B]: 0, 1, ..., 6, 0
    want = math.log1p(6 * math.exp(-20.0))
    assert evaluate_lm(Clock(), data, bptt) == pytest.approx(want, rel=1e-9)


def test_weight_average_is_the_mean_of_the_iterates() -> None:
    model = torch.nn.Linear(2, 1)
    avg = WeightAverage(model)
    snaps = [model.weight.detach().clone()]
    for k in range(3):
        with torch.no_grad():
            model.weight.add_(float(k + 1))
        avg.update()
        snaps.append(model.weight.detach().clone())
    live = model.weight.detach().clone()
    avg.swap()
    assert torch.allclose(model.weight, torch.stack(snaps).mean(0))
    avg.swap()
    assert torch.equal(model.weight, live)


def test_final_training_keeps_the_best_weights_and_reports_test(small) -> None:
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8, dropouts=Dropouts.darts())
    recipe = LMRecipe(epochs=3, batch_size=8, bptt=10, test_batch_size=4, eval_batch_size=4)
    result = train_final_lm(model, small, recipe, seed=0)
    assert len(result.history) == 3 and not result.diverged
    assert result.val_perplexity == pytest.approx(min(h["val_perplexity"] for h in result.history))
    valid = torch.from_numpy(batchify(small.valid, 4))
    assert math.exp(evaluate_lm(model, valid, 10)) == pytest.approx(result.val_perplexity)
    assert math.isfinite(result.test_perplexity)


def test_final_training_needs_the_test_split(small) -> None:
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8, dropouts=Dropouts.darts())
    recipe = LMRecipe(epochs=1, batch_size=8, bptt=10, test_batch_size=4, eval_batch_size=4)
    with pytest.raises(DataError, match="without its test split"):
        train_final_lm(model, dataclasses.replace(small, test=None), recipe, seed=0)


@pytest.mark.parametrize("delta", [0, 20])
def test_final_training_windows_are_at_most_bptt_plus_the_recipes_delta(small, delta) -> None:
    torch.manual_seed(0)
    spy = Spy(RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8))
    recipe = LMRecipe(epochs=1, batch_size=4, bptt=10, max_seq_len_delta=delta, test_batch_size=4)
    train_final_lm(spy, small, recipe, seed=0)
    longest = max(spy.lengths)  # training windows; evaluation ones are bptt long
    assert longest == 10 if delta == 0 else longest > 10


def test_final_training_switches_to_averaged_sgd(small, monkeypatch) -> None:
    # Validation losses that only get worse: with nonmono = 1 the DARTS rule (loss above the
    # best of all but the last epoch) first holds at epoch 3; epoch 4 trains averaged.
    losses = iter([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    monkeypatch.setattr(final_language, "evaluate_lm", lambda model, data, bptt: next(losses))
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8)
    recipe = LMRecipe(epochs=4, batch_size=16, bptt=10, nonmono=1, test_batch_size=4)
    result = train_final_lm(model, small, recipe, seed=0)
    assert result.asgd_epoch == 3
    assert [h["averaged"] for h in result.history] == [False, False, False, True]
    assert result.best_epoch == 1 and result.val_perplexity == pytest.approx(math.e)


def test_the_evaluator_profiles_without_training_and_is_deterministic(small) -> None:
    ev = RNNProxyEvaluator(small, QUICK)
    cell = published_cell("shrinkrnn")
    prof = ev.profile(cell)
    spec = rnn_proxy(vocab=small.ntokens, nhid=8)
    assert prof["edges"] == 12 and prof["edge_cost"] == 12 * 8 * 8
    assert prof["params"] == count_rnn(cell, spec).params
    a, b = ev.evaluate(cell, seed=3), ev.evaluate(cell, seed=3)
    assert a.status == "ok" and a.metrics == b.metrics
    assert 1 < a.metrics["perplexity"] < 10 * small.ntokens
    assert a.metrics != ev.evaluate(cell, seed=4).metrics


@pytest.mark.parametrize("bad", [math.nan, 800.0])
def test_final_training_stops_when_validation_diverges(small, monkeypatch, bad: float) -> None:
    """Epoch 2's validation loss is NaN, or a finite 800 nats whose perplexity exp(800)
    overflows to inf (that one ended as a finished training, exit status 0, with a null
    perplexity in metrics.json beside "diverged": false): training stops there, epoch 1's
    weights give the test perplexity; in the first epoch, no weights were ever scored."""
    losses = iter([1.0, bad, 1.5])  # validation of epochs 1, 2; then the test
    monkeypatch.setattr(final_language, "evaluate_lm", lambda model, data, bptt: next(losses))
    torch.manual_seed(0)
    model = RNNModel(SMALL_CELL, small.ntokens, emsize=8, nhid=8)
    recipe = LMRecipe(epochs=5, batch_size=16, bptt=10, test_batch_size=4)
    result = train_final_lm(model, small, recipe, seed=0)
    assert result.diverged and result.diverged_epoch == 2 and result.best_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    expected = math.nan if math.isnan(bad) else math.inf  # exp(800) is beyond float64
    assert result.history[1]["val_perplexity"] == pytest.approx(expected, nan_ok=True)
    assert result.val_perplexity == pytest.approx(math.e)
    assert result.test_perplexity == pytest.approx(math.exp(1.5))
    losses = iter([bad])
    first = train_final_lm(model, small, dataclasses.replace(recipe, epochs=1), seed=0)
    assert (first.diverged_epoch, first.best_epoch) == (1, 0)
    assert math.isnan(first.test_perplexity)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"weight_decay": -1.0}, "weight_decay must be finite and >= 0, got -1.0"),
        ({"lr": 0.0}, "lr must be finite and > 0, got 0.0"),
        ({"lr": math.nan}, "lr must be finite and > 0, got nan"),
        ({"test_batch_size": 0}, "test_batch_size must be >= 1, got 0"),
        ({"max_seq_len_delta": -1}, "max_seq_len_delta must be >= 0, got -1"),
    ],
)
def test_final_recipe_names_the_bad_value(settings: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        LMRecipe(**settings)
