"""Proxy training of CNN candidates: learning, seeding, early stops, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from autoshrink.data.images import load_images, proxy_split
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import cifar_proxy
from autoshrink.training.proxy_settings import ProxyTraining


@pytest.fixture(scope="module")
def split():
    return proxy_split(load_images("digits"), per_class=40, val_size=200, seed=0)


def evaluator(split, **training) -> CNNProxyEvaluator:
    spec = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.5)
    return CNNProxyEvaluator(split, spec, ProxyTraining(**training), threads=1)


def test_proxy_training_learns_digits_well_above_chance(split):
    ev = evaluator(split, epochs=5, batch_size=32)
    result = ev.evaluate(published_cell("shrinkcnn"), seed=0)
    assert result.status == "ok"
    assert result.metrics["accuracy"] > 0.8  # chance is 0.1
    assert result.metrics["macs"] > 0 and result.metrics["params"] > 0
    assert result.detail["epochs"] <= 5


def test_same_seed_same_result_and_other_seed_differs(split):
    ev = evaluator(split, epochs=2, batch_size=32)
    cell = published_cell("shrinkcnn")
    a, b, c = ev.evaluate(cell, 1), ev.evaluate(cell, 1), ev.evaluate(cell, 2)
    assert a.metrics == b.metrics and a.detail == b.detail
    assert c.metrics["accuracy"] != a.metrics["accuracy"] or c.detail != a.detail


def test_a_diverging_candidate_is_reported_as_diverged(split):
    ev = evaluator(split, epochs=3, batch_size=32, lr=1e12)
    result = ev.evaluate(published_cell("shrinkcnn"), seed=0)
    assert result.status == "diverged"
    assert math.isnan(result.metrics["accuracy"])


def test_low_accuracy_early_stop(split):
    # a learning rate too small to learn anything: accuracy stays near chance, stop after epoch 3
    ev = evaluator(split, epochs=20, batch_size=32, lr=1e-9, min_accuracy=0.5)
    result = ev.evaluate(published_cell("shrinkcnn"), seed=0)
    # images_trained: 3 epochs x 40 images of each of the 10 digits
    per_class = result.detail.pop("class_accuracy")  # of the network training stopped with
    assert len(per_class) == 10 and all(0.0 <= a <= 1.0 for a in per_class)
    assert result.detail == {"epochs": 3, "stop_reason": "low_accuracy", "images_trained": 1200}


def test_proxy_split_is_seeded_per_class_and_disjoint():
    data = load_images("digits")
    a = proxy_split(data, per_class=30, val_size=100, seed=5)
    b = proxy_split(data, per_class=30, val_size=100, seed=5)
    assert (a.train_x == b.train_x).all() and (a.val_y == b.val_y).all()
    assert all((a.train_y == c).sum() == 30 for c in range(10))
    assert len(a.val_y) == 100


def test_evaluation_counts_every_image_whatever_the_batch_size():
    from autoshrink.training.classification import evaluate_classes

    # the inputs are the logits: images 0 and 3 are classified right, 1 and 2 wrong
    x = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    y = torch.tensor([0, 1, 0, 1])
    expected = torch.nn.functional.cross_entropy(x, y).item()
    for batch_size in (1, 3, 4, 10):
        loss, accuracy, classes = evaluate_classes(torch.nn.Identity(), x, y, batch_size)
        assert loss == pytest.approx(expected) and accuracy == 0.5 and classes == [0.5, 0.5]


class Constant(torch.nn.Module):
    """Logits that never change with training: class 1 for every image, NaN when evaluated
    if ``nan_in_eval``."""

    def __init__(self, nan_in_eval: bool = False) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.nan_in_eval = nan_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([0.0, 9.0]).expand(len(x), 2) + 0 * self.bias
        return logits * math.nan if self.nan_in_eval and not self.training else logits


def test_patience_counts_from_the_first_epoch_and_a_validation_nan_diverges():
    from autoshrink.training.classification import train_proxy

    x, y = torch.zeros(8, 1), torch.zeros(8, dtype=torch.long)  # all of class 0: accuracy 0
    settings = ProxyTraining(epochs=10, batch_size=4, patience=2, min_accuracy=0.0)
    out = train_proxy(Constant(), (x, y), (x, y), settings, torch.Generator().manual_seed(0))
    assert (out.stop_reason, out.epochs, out.best_accuracy, out.diverged) == (
        "patience",
        2,
        0.0,
        False,
    )
    out = train_proxy(Constant(True), (x, y), (x, y), settings, torch.Generator().manual_seed(0))
    assert (out.stop_reason, out.epochs, out.diverged) == ("diverged", 1, True)  # train loss fine


class Scripted(torch.nn.Module):
    """Trains on nothing and records the size of each training batch; its validation accuracy
    on the images ``x = 0 .. n - 1`` follows ``accuracies`` epoch by epoch (those below
    ``accuracy * n`` are classified right)."""

    def __init__(self, accuracies: list[float], n: int, batches_per_epoch: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.accuracies, self.n, self.per_epoch = accuracies, n, batches_per_epoch
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches.append(len(x))
            return torch.zeros(len(x), 2) + self.bias
        epoch = (len(self.batches) - 1) // self.per_epoch
        right = x[:, 0] < self.accuracies[epoch] * self.n
        return torch.stack([right.float(), (~right).float()], 1) * 9


def test_each_epoch_trains_on_every_image_and_an_improvement_restarts_the_patience():
    from autoshrink.training.classification import train_proxy

    x, y = torch.arange(10.0)[:, None], torch.zeros(10, dtype=torch.long)
    model = Scripted([0.0, 0.5, 0.5, 0.5, 0.5], n=10, batches_per_epoch=3)
    settings = ProxyTraining(
        epochs=5, batch_size=4, patience=2, min_accuracy=0.0, overfit_ratio=1e9
    )
    out = train_proxy(model, (x, y), (x, y), settings, torch.Generator().manual_seed(0))
    assert model.batches[:3] == [4, 4, 2]  # all 10 images in the first epoch
    # epoch 2 improves: patience starts again there, and runs out 2 epochs later
    assert (out.stop_reason, out.epochs, out.best_accuracy) == ("patience", 4, 0.5)


def test_the_best_validation_accuracy_is_returned_not_the_last():
    """Method section 4 returns the best validation accuracy: scripted accuracies 0.2, 0.6,
    0.3, 0.4, 0.1 (best at epoch 2, last 0.1) run all 5 epochs and return 0.6. Above, the
    patience test's last accuracy equalled its best, so returning the last one passed."""
    from autoshrink.training.classification import train_proxy

    x, y = torch.arange(10.0)[:, None], torch.zeros(10, dtype=torch.long)
    model = Scripted([0.2, 0.6, 0.3, 0.4, 0.1], n=10, batches_per_epoch=3)
    settings = ProxyTraining(
        epochs=5, batch_size=4, patience=5, min_accuracy=0.0, overfit_ratio=1e9
    )
    out = train_proxy(model, (x, y), (x, y), settings, torch.Generator().manual_seed(0))
    assert [row["val_accuracy"] for row in out.history] == [0.2, 0.6, 0.3, 0.4, 0.1]
    assert (out.stop_reason, out.epochs, out.best_accuracy) == ("epochs", 5, 0.6)


@pytest.mark.parametrize("error", [RuntimeError, MemoryError])  # MemoryError stopped the search
def test_a_training_that_raises_is_a_failed_candidate_and_class_accuracies_are_rounded(
    split, monkeypatch, error
):
    import autoshrink.evaluators.cnn_proxy as cnn_proxy
    from autoshrink.training.classification import TrainOutcome

    ev = evaluator(split, epochs=1, batch_size=32)
    cell = published_cell("shrinkcnn")

    def raises(*args, **kwargs):
        raise error("the kernel refused")

    monkeypatch.setattr(cnn_proxy, "train_proxy", raises)
    failed = ev.evaluate(cell, seed=0)
    assert failed.status == "failed"
    assert failed.detail["error"] == f"{error.__name__}: the kernel refused"
    assert failed.metrics["macs"] == ev.profile(cell)["macs"]  # its costs are still known

    def finished(*args, **kwargs):
        return TrainOutcome(0.5, 1, False, "epochs", class_accuracy=[1 / 3, math.nan] + [0.5] * 8)

    monkeypatch.setattr(cnn_proxy, "train_proxy", finished)
    done = ev.evaluate(cell, seed=0)
    assert done.detail["class_accuracy"] == [0.3333, None] + [0.5] * 8


def test_a_validation_loss_above_the_ratio_times_the_training_loss_stops_as_overfit():
    """Pins the overfit stop's comparison against the training loss: a constant class-1 model
    fits training labels of 1 (loss ln(1 + e^-9)) and misses validation labels of 0 (loss
    about 9), so it stops as "overfit" at epoch 1, long before its patience runs out."""
    from autoshrink.training.classification import train_proxy

    x = torch.zeros(8, 1)
    train_y, val_y = torch.ones(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)
    settings = ProxyTraining(epochs=10, batch_size=4, patience=5, min_accuracy=0.0)
    out = train_proxy(
        Constant(), (x, train_y), (x, val_y), settings, torch.Generator().manual_seed(0)
    )
    assert (out.stop_reason, out.epochs, out.best_accuracy) == ("overfit", 1, 0.0)
    (row,) = out.history
    # float32 logits: the training loss holds about 3 significant digits
    assert row["train_loss"] == pytest.approx(math.log1p(math.exp(-9.0)), rel=1e-3)
    assert row["val_loss"] == pytest.approx(9.0 + math.log1p(math.exp(-9.0)), rel=1e-6)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            cifar_proxy(in_channels=3, image_size=8, num_classes=10, width=0.5),
            "macro cifar-proxy takes 3-channel images; the proxy split's have 1",
        ),
        (
            cifar_proxy(in_channels=1, image_size=32, num_classes=10, width=0.5),
            "macro cifar-proxy takes 32px images; the proxy split's are 8px",
        ),
        (
            cifar_proxy(in_channels=1, image_size=8, num_classes=3, width=0.5),
            "macro cifar-proxy has 3 classes; the proxy split has 10",
        ),
    ],
)
def test_a_macro_that_does_not_fit_the_split_is_refused_when_the_evaluator_is_made(
    split, spec, says
) -> None:
    """Every candidate failed (3 channels), a traceback left the search (3 classes: 'Target 4
    is out of bounds'), or the MACs were counted at another image size (32px)."""
    from autoshrink.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{says}"):
        CNNProxyEvaluator(split, spec, ProxyTraining(epochs=1))
