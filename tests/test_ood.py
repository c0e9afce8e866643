"""``--objective ood`` and the leave-one-domain-out protocol, through the command line.

The protocol test poisons the held-out domain: building it raises. A real search (ERM and
OoD, each strategy) must then run to its end, and final evaluation (``autoshrink train``) must
be the code that reaches it.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from autoshrink.data import domains
from autoshrink.errors import ConfigError
from autoshrink.report.folder import write_report
from autoshrink.training.ood import reverse_gradient

TINY = [
    "--preset", "demo", "--dataset", "colored-digits", "--test-domain", "0.1",
    "--nodes", "3", "--k", "2", "--keep-fraction", "0.34", "--per-class", "40",
    "--val-size", "60", "--epochs", "1", "--width", "0.25", "--threads", "1", "--no-progress",
]  # fmt: skip


class HeldOutTouched(Exception):
    pass


@pytest.fixture
def poisoned(monkeypatch):
    """Building the held-out domain ``0.1`` of colored-digits raises :class:`HeldOutTouched`."""
    build = domains.build_domain

    def guarded(dataset, domain, source):
        if domain == "0.1":
            raise HeldOutTouched(f"{dataset} {domain}")
        return build(dataset, domain, source)

    monkeypatch.setattr(domains, "build_domain", guarded)


def _journal(run):
    lines = (run / "journal.jsonl").read_text().splitlines()
    return [json.loads(s) for s in lines if '"candidate"' in s]


@pytest.mark.parametrize(
    ("objective", "strategy"),
    [("erm", "autoshrink"), ("ood", "autoshrink"), ("ood", "random"), ("ood", "rea")],
)
def test_search_never_reaches_the_held_out_domain(cli, tmp_path, poisoned, objective, strategy):
    with pytest.raises(HeldOutTouched):  # the poison bites where the domain is built
        domains.load_held_out_domain("colored-digits", "0.1")
    extra = [] if strategy == "autoshrink" else ["--budget", "3"]
    code, out, err = cli(
        "search", *TINY, "--objective", objective, "--strategy", strategy, *extra,
        "--executor", "inprocess", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    assert ("synthetic-domain accuracy" in out) == (objective == "ood")
    records = _journal(tmp_path / "run")
    assert records and all(r["status"] == "ok" for r in records)
    if objective == "ood":
        m = records[0]["metrics"]
        mix = 0.5 * m["val_accuracy"] + 0.5 * m["synthetic_accuracy"]
        assert m["accuracy"] == pytest.approx(mix)
    page = write_report(tmp_path / "run").read_text()  # says what its accuracy is, and its parts
    blend = "(1 − m) · val_accuracy + m · synthetic_accuracy with m = 0.5"
    assert (blend in page) == ("<dt>best validation accuracy</dt>" in page) == (objective == "ood")
    # compute is counted as for every search: real training images x epochs, per candidate
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    per_epoch = {r["key"]: r["detail"]["images_trained"] / r["detail"]["epochs"] for r in records}
    assert len(set(per_epoch.values())) == 1 and next(iter(per_epoch.values())) > 0
    assert result["images_trained"] == sum(r["detail"]["images_trained"] for r in records)
    # final evaluation is what loads the held-out domain
    with pytest.raises(HeldOutTouched):
        cli(
            "train", tmp_path / "run" / "best_cell.json", "--dataset", "colored-digits",
            "--test-domain", "0.1", "--epochs", "1", "--width", "0.25", "--no-flip",
            "--out", tmp_path / "t",
        )  # fmt: skip


def test_ood_search_same_in_pool_and_resume_trains_nothing(cli, tmp_path):
    args = [*TINY, "--objective", "ood"]
    assert cli("search", *args, "--executor", "inprocess", "--out", tmp_path / "a")[0] == 0
    code, _, err = cli("search", *args, "--workers", "2", "--out", tmp_path / "b")  # pool
    assert code == 0, err
    a, b = _journal(tmp_path / "a"), _journal(tmp_path / "b")
    assert {r["key"]: r["metrics"] for r in a} == {r["key"]: r["metrics"] for r in b}
    # the batched engine has no OoD training: its candidates train one at a time, not as
    # plain (ERM) candidates scored without their synthetic accuracy
    code, _, err = cli("search", *args, "--executor", "batched", "--out", tmp_path / "c")
    assert code == 0, err
    c = _journal(tmp_path / "c")
    assert {r["key"]: r["metrics"] for r in c} == {r["key"]: r["metrics"] for r in a}
    assert all("synthetic_accuracy" in r["metrics"] for r in c)
    # an interrupted run: drop the last record, resume retrains exactly that one
    lines = (tmp_path / "a" / "journal.jsonl").read_text().splitlines()
    (tmp_path / "a" / "journal.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    code, out, err = cli("search", "--resume", tmp_path / "a", "--no-progress")
    assert code == 0, err
    assert "1 trained now" in out
    assert {r["key"]: r["metrics"] for r in _journal(tmp_path / "a")} == {
        r["key"]: r["metrics"] for r in a
    }
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["objective"] == "ood" and cfg["test_domain"] == "0.1"


def test_train_reports_every_domain(cli, tmp_path):
    from importlib import resources

    cell = str(resources.files("autoshrink").joinpath("cells/shrinkcnn.json"))
    code, out, err = cli(
        "train", cell, "--dataset", "colored-digits", "--test-domain", "0.1", "--epochs", "1",
        "--width", "0.25", "--no-flip", "--out", tmp_path / "t",
    )  # fmt: skip
    assert code == 0, err
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    # DomainBed's three environments of 1,797 // 3 images; the training ones' 20% test parts
    assert m["domains"]["0.1"] == {
        "accuracy": m["test_domain_accuracy"],
        "images": 599,
        "held_out": True,
    }
    assert {k: v["images"] for k, v in m["domains"].items()} == {"0.9": 120, "0.8": 120, "0.1": 599}
    assert m["test_domain"] == "0.1" and 0 <= m["test_domain_accuracy"] <= 1
    assert "held-out test domain" in out
    # the last line leads with the held-out domain: the figure NAS-OoD is judged by
    assert out.splitlines()[-1].startswith(
        f"held-out domain 0.1: accuracy {m['test_domain_accuracy']:.4f}; test accuracy "
        f"{m['test_accuracy']:.4f} on the training domains of colored-digits ("
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["search", "--dataset", "rotated-digits", "--test-domain", "90"], "unknown test domain"),
        (["search", "--dataset", "digits", "--test-domain", "0"], "single domain"),
        (["search", "--task", "rnn", "--objective", "ood"], "not --task rnn"),
        (["search", "--synthetic-mix", "0.3"], "--objective ood"),
        # a resume takes the run's settings: it was told --synthetic-mix needs --objective ood
        (["search", "--synthetic-mix", "0.3", "--resume"], "config.json; drop --synthetic-mix"),
        (["search", "--synthetic-mix", "2", "--resume"], "config.json; drop --synthetic-mix"),
        (["search", "--objective", "ood", "--synthetic-mix", "2"], "synthetic_mix"),
        (["train", "x.json", "--dataset", "colored-digits", "--test-domain", "1"], "unknown test"),
        (["train", "x.json", "--dataset", "fashion-mnist", "--test-domain", "0"], "single domain"),
    ],
)
def test_bad_input_one_line_exit_2(cli, tmp_path, args, needle):
    code, _, err = cli(*args, "--out", tmp_path / "o")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("autoshrink: error:")
    assert needle in lines[0]


def test_gradient_reversal():
    x = torch.ones(3, requires_grad=True)
    (reverse_gradient(x, 2.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-2.5, -5.0, -7.5]))


@pytest.mark.slow
def test_ood_search_through_ray_matches_inprocess(cli, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    args = [*TINY, "--objective", "ood"]
    assert cli("search", *args, "--executor", "inprocess", "--out", tmp_path / "a")[0] == 0
    code, _, err = cli("search", *args, "--executor", "ray", "--out", tmp_path / "b")
    assert code == 0, err
    a, b = _journal(tmp_path / "a"), _journal(tmp_path / "b")
    assert {r["key"]: r["metrics"] for r in a} == {r["key"]: r["metrics"] for r in b}


def test_one_backward_pass_makes_the_generator_ascend_the_candidates_loss():
    from torch import nn
    from torch.nn import functional as F

    from autoshrink.training.ood import DomainGenerator, keeper_network, minimax_loss
    from autoshrink.training.proxy_settings import OodSettings

    torch.manual_seed(0)
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
    source = F.pad(F.one_hot(torch.randint(0, 2, (8,)), 2).float(), (0, 3))
    novel = F.pad(torch.randn(8, 3), (2, 0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 3))
    gen, keeper = DomainGenerator(2, 5, 4, 1.5), keeper_network(2, 3, 4)
    ood = OodSettings(adversarial=3.0, synthetic_weight=0.5, class_weight=0.7, cycle_weight=2.0)
    loss, _ = minimax_loss(model, gen, keeper, x, y, source, novel, ood)
    loss.backward()
    got = [p.grad.clone() for p in gen.parameters()]
    # independently: the generator descends its constraints and ascends the candidate's loss
    fake = gen(x, source, novel)
    attack = F.cross_entropy(model(fake), y)
    keep = F.cross_entropy(keeper(fake), y)
    cycle = (gen(fake, novel, source) - x).abs().mean()
    want = torch.autograd.grad(
        -3.0 * 0.5 * attack + 0.7 * keep + 2.0 * cycle, gen.parameters(), retain_graph=True
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    # the candidate descends its loss on real and synthetic images, not the constraints
    want_model = torch.autograd.grad(
        F.cross_entropy(model(x), y) + 0.5 * attack, model.parameters()
    )
    for p, w in zip(model.parameters(), want_model, strict=True):
        torch.testing.assert_close(p.grad, w)
    # the keeper learns from real images only
    want_keeper = torch.autograd.grad(F.cross_entropy(keeper(x), y), keeper.parameters())
    for p, w in zip(keeper.parameters(), want_keeper, strict=True):
        torch.testing.assert_close(p.grad, w)


def random_images(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random 1x8x8 images with labels of 3 classes and 2 domains, drawn from ``gen``."""
    x = torch.randn(n, 1, 8, 8, generator=gen)
    return x, torch.randint(0, 3, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)


@pytest.mark.parametrize(("ratio", "reason"), [(1e-6, "overfit"), (1e6, "epochs")])
def test_an_ood_candidate_stops_at_overfitting_as_an_erm_one_does(ratio, reason):
    # the minimax training had no overfit stop: its candidates trained on where erm ones stopped
    from torch import nn

    from autoshrink.training.ood import train_ood_proxy
    from autoshrink.training.proxy_settings import OodSettings, ProxyTraining

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    settings = ProxyTraining(epochs=3, batch_size=16, patience=5, min_accuracy=0.0,
                             overfit_ratio=ratio)  # fmt: skip
    train, val = random_images(48, gen), random_images(24, gen)
    out = train_ood_proxy(model, train, val, 2, 3, settings, OodSettings(), gen)
    assert (out.stop_reason, out.epochs) == (reason, 1 if reason == "overfit" else 3)
    first = out.history[0]
    assert (first["val_loss"] > ratio * first["train_loss"]) == (reason == "overfit")


def test_a_domain_split_is_a_proxy_split_whose_subsets_keep_the_domains():
    from autoshrink.data.images import ProxySplit
    from autoshrink.evaluators.ood_proxy import domain_split

    data = domains.load_training_domains("rotated-digits", test_domain="75")
    split = domain_split(data, per_class=10, val_size=40, seed=0)
    assert isinstance(split, ProxySplit) and split.num_domains == 5
    # normalised with the statistics it records: the training images have mean 0, std 1
    assert len(split.mean) == len(split.std) == 1
    assert abs(float(split.train_x.mean())) < 1e-5 and abs(float(split.train_x.std()) - 1) < 1e-4
    stage = split.restricted([1, 7])
    assert isinstance(stage, type(split)) and set(stage.train_y) == {1, 7}
    for part in ("train", "val"):
        kept = np.isin(getattr(split, f"{part}_y"), [1, 7])
        for field in ("x", "y", "domain"):
            got, full = getattr(stage, f"{part}_{field}"), getattr(split, f"{part}_{field}")
            assert np.array_equal(got, full[kept])


@pytest.mark.parametrize(
    ("settings", "says"),
    [  # accepted: an infinite learning rate, a fractional code size
        ({"lr": math.inf}, "ood: lr must be finite and > 0, got inf"),
        ({"code_dim": 1.5}, 'ood: "code_dim" must be an integer, got 1.5'),
        ({"code_dim": 0}, "ood: code_dim must be a whole number >= 1, got 0"),
        ({"adversarial": math.nan}, "ood: adversarial must be finite and >= 0, got nan"),
        # of another type from Python: a TypeError, or True taken as a bound of 1
        ({"synthetic_mix": "0.5"}, 'ood: "synthetic_mix" must be a number, got "0.5"'),
        ({"max_shift": True}, 'ood: "max_shift" must be a number, got true'),
    ],
)
def test_ood_settings_refuse_what_cannot_train(settings, says) -> None:
    from autoshrink.training.proxy_settings import OodSettings

    with pytest.raises(ConfigError, match=re.escape(says)):
        OodSettings(**settings)


def test_the_selected_epoch_is_the_best_mix_of_real_and_synthetic_accuracy(monkeypatch, one_thread):
    """Scripted per-epoch accuracies (val, synthetic) with synthetic_mix 0.25: (0.5, 0.5),
    (0.75, 0), (0.5, 1), (0.625, 0.625) mix to 0.5, 0.5625, 0.625, 0.625 (0.75 v + 0.25 s, exact
    in binary). The outcome is epoch 3: the best mix, the first of two equal ones (the best
    val_accuracy alone, 0.75, is epoch 2's); at the default 0.5 swapped weights would not show.
    The epoch's train_loss is the candidate's loss on the real images (what the overfit stop
    compares), the batch-size-weighted mean of minimax_loss's second value."""
    from torch import nn

    from autoshrink.training import ood as ood_training
    from autoshrink.training.proxy_settings import OodSettings, ProxyTraining

    vals = iter([0.5, 0.75, 0.5, 0.625])
    # evaluate gives (val_loss, val_accuracy); a loss of 1.0 stays under the overfit stop
    monkeypatch.setattr(ood_training, "evaluate", lambda *a: (1.0, next(vals)))
    syns = iter([0.5, 0.0, 1.0, 0.625])
    monkeypatch.setattr(ood_training, "synthetic_accuracy", lambda *a: next(syns))
    real: list[tuple[float, int]] = []
    original = ood_training.minimax_loss

    def recording(*args):  # noqa: ANN002, ANN202
        loss, real_loss = original(*args)
        real.append((float(real_loss.detach()), len(args[4])))
        return loss, real_loss

    monkeypatch.setattr(ood_training, "minimax_loss", recording)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    settings = ProxyTraining(epochs=4, batch_size=16, patience=9, min_accuracy=0.0,
                             overfit_ratio=1e6)  # fmt: skip
    train, val = random_images(40, gen), random_images(8, gen)
    ood = OodSettings(synthetic_mix=0.25)
    out = ood_training.train_ood_proxy(model, train, val, 2, 3, settings, ood, gen)
    assert (out.stop_reason, out.epochs) == ("epochs", 4)
    assert [r["mixed_accuracy"] for r in out.history] == [0.5, 0.5625, 0.625, 0.625]
    assert (out.mixed_accuracy, out.val_accuracy, out.synthetic_accuracy) == (0.625, 0.5, 1.0)
    assert len(real) == 4 * 3  # 40 images: batches of 16, 16, 8
    first = real[:3]
    want = sum(loss * n for loss, n in first) / 40
    assert out.history[0]["train_loss"] == pytest.approx(want, rel=1e-6)


def test_domain_codes_are_one_hot_and_novel_codes_live_outside_them():
    """Module docstring: training domain i is e_i in R^(D + Z); a novel domain is [0, z],
    z ~ N(0, I_Z) per image (D = 2, Z = 3 here)."""
    from autoshrink.training.ood import _codes, _novel

    codes = _codes(torch.tensor([1, 0, 1]), 2, 3)
    assert torch.equal(codes, torch.tensor([[0.0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]))
    novel = _novel(4, 2, 3, torch.Generator().manual_seed(5))
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(novel[:, :2], torch.zeros(4, 2)) and torch.equal(novel[:, 2:], z)
