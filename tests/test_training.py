"""Final training: recipes, schedule, EMA, checkpoints, the loop and ``autoshrink train``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from autoshrink.data.images import ImageData
from autoshrink.data.loaders import array_data
from autoshrink.errors import ConfigError, JournalError
from autoshrink.training.checkpoint import (
    DamagedState,
    clear_checkpoints,
    clear_earlier_run,
    flatten_optimizer,
    load_latest,
    save_checkpoint,
    unflatten_optimizer,
)
from autoshrink.training.final import _precision, train_final
from autoshrink.training.optim import ModelEMA, WarmupCosine, build_optimizer, warmup_cosine
from autoshrink.training.recipes import Recipe, get_recipe
from autoshrink.training.rmsprop_tf import RMSpropTF

SHRINKCNN = Path(__file__).resolve().parents[1] / "src/autoshrink/cells/shrinkcnn.json"


def test_shrinkcnn_imagenet_recipe_is_the_published_one() -> None:
    r = get_recipe("shrinkcnn-imagenet")
    assert (r.optimizer, r.lr_per_256, r.epochs, r.warmup_epochs) == ("rmsprop-tf", 0.1, 300, 10)
    assert (r.ema_decay, r.weight_decay, r.label_smoothing) == (0.999, 4e-5, 0.1)
    assert (r.augment, r.image_size) == ("imagenet", 224) and r.random_erasing > 0
    assert r.lr(1024) == pytest.approx(0.4) and r.lr(256) == pytest.approx(0.1)
    c = get_recipe("cifar", batch_size=64, epochs=3, image_size=40)
    assert (c.optimizer, c.augment, c.epochs, c.image_size) == ("sgd", "crop-flip", 3, 40)
    assert c.lr() == pytest.approx(0.025)


def test_an_override_of_none_turns_a_setting_off() -> None:
    """``ema_decay=None`` turns the published recipe's EMA off (overrides used to drop it)."""
    assert get_recipe("shrinkcnn-imagenet", ema_decay=None).ema_decay is None
    assert get_recipe("shrinkcnn-imagenet", image_size=None).image_size is None


def test_recipes_round_trip_through_json(tmp_path: Path) -> None:
    r = get_recipe("shrinkcnn-imagenet", epochs=5, crop_scale=(0.25, 1.0))
    r.save(tmp_path / "r.json")
    assert Recipe.load(tmp_path / "r.json") == r
    assert get_recipe(str(tmp_path / "r.json"), batch_size=32) == r.with_overrides(batch_size=32)
    # to_dict is what from_dict reads (it held crop_scale as a tuple, which from_dict refused:
    # 'recipe: "crop_scale" must be a list, got [0.25, 1.0]')
    assert Recipe.from_dict(r.to_dict()) == r


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"epochs": 0}, "bad.json: recipe custom: epochs must be >= 1"),  # the file named
        ({"name": "cifar", "lr_per_256": -1}, "bad.json: recipe cifar: lr_per_256 must be"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"ema_decay": 1.5}, "ema_decay must lie in"),
        ({"augment": "mixup"}, "augment must be one of"),
        ({"colour": 1}, r"bad.json: unknown recipe settings \['colour'\]"),
        ({"label_smoothing": "x"}, 'bad.json: "label_smoothing" must be a number, got "x"'),
        # each of these crashed training, or read as another value, before the type check
        ({"epochs": 1.5}, '"epochs" must be an integer, got 1.5'),
        ({"image_size": 16.5}, '"image_size" must be an integer or null, got 16.5'),
        ({"crop_scale": "ab"}, '"crop_scale" must be a list, got "ab"'),
        ({"crop_scale": [0.5, "x"]}, r'"crop_scale\[1\]" must be a number, got "x"'),
        ({"momentum": None}, '"momentum" must be a number, got null'),
        ({"flip": "no"}, '"flip" must be true or false, got "no"'),
        ({"epochs": True}, '"epochs" must be an integer, got true'),
    ],
)
def test_bad_recipes_are_named(tmp_path: Path, settings: dict, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "autoshrink.recipe/1", **settings}))
    with pytest.raises(ConfigError, match=needle):
        Recipe.load(path)


def test_unknown_recipe_name() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'imagenet'"):
        get_recipe("imagenet")


def test_warmup_then_cosine() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupCosine(opt, peak=0.4, warmup_steps=4, total_steps=14)
    assert [s.lr_at(k) for k in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert s.lr_at(4) == pytest.approx(0.4)
    assert s.lr_at(9) == pytest.approx(0.2)  # half-way through the cosine
    assert s.lr_at(13) == pytest.approx(0.2 * (1 + math.cos(math.pi * 0.9)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    again = WarmupCosine(opt, peak=0.4, warmup_steps=4, total_steps=14)
    again.load_state_dict(s.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    cold = WarmupCosine(opt, peak=0.4, warmup_steps=0, total_steps=10)  # no warm-up: the peak
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4) and cold.lr_at(5) == pytest.approx(0.2)
    assert get_recipe("cifar", warmup_epochs=0).warmup_epochs == 0


def test_ema_follows_the_documented_update() -> None:
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(1.0)
    model.num_batches_tracked.fill_(5)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, torch.full((2,), 0.9 + 0.1 * 3.0))
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 0.1))
    assert int(ema.module.num_batches_tracked) == 5
    warm = ModelEMA(model, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)


def test_weight_decay_skips_norm_and_bias_when_asked() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    opt = build_optimizer(model, get_recipe("shrinkcnn-imagenet"), 512)
    decays = [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    assert decays == [(1, 4e-5), (3, 0.0)]
    assert isinstance(opt, RMSpropTF) and opt.param_groups[0]["lr"] == 0.2
    head = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))  # a matrix decays, its bias does not
    opt = build_optimizer(head, get_recipe("shrinkcnn-imagenet"), 512)
    assert [[p.ndim for p in g["params"]] for g in opt.param_groups] == [[2], [1]]


def test_sgd_is_nesterov_only_when_the_recipe_says_so() -> None:
    model = nn.Linear(2, 2)
    cases = ((True, 0.9, True), (False, 0.9, False), (True, 0.0, False))  # no momentum: plain
    for nesterov, momentum, expected in cases:
        recipe = get_recipe("cifar", nesterov=nesterov, momentum=momentum)
        opt = build_optimizer(model, recipe, 128)
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] is expected


def test_checkpoints_keep_the_newest_and_ignore_partial_writes(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    tensors, rest = flatten_optimizer(opt.state_dict(), "optim")
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, epoch, {"w": model.weight, **tensors}, {"optimizer": rest})
    (tmp_path / "epoch-0004.safetensors.tmp").write_bytes(b"killed while writing")
    (tmp_path / "epoch-0004.safetensors").write_bytes(b"no json yet: not a checkpoint")
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["epoch-0002.json", "epoch-0003.json"]
    ckpt = load_latest(tmp_path)
    assert ckpt.epoch == 3
    torch.testing.assert_close(ckpt.tensors["w"], model.weight.detach())
    restored = unflatten_optimizer(ckpt.tensors, ckpt.state["optimizer"], "optim")
    fresh = torch.optim.RMSprop(model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(restored)
    for key, value in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(fresh.state_dict()["state"][0][key], value)
    # a state entry among both the tensors and the numbers: the number replaced the tensor
    twice = {**ckpt.state["optimizer"], "scalars": {"0": {"square_avg": None}}}
    with pytest.raises(DamagedState, match=r"^optim.0.square_avg is both a tensor and a number$"):
        unflatten_optimizer(ckpt.tensors, twice, "optim")


def test_an_unreadable_checkpoint_is_one_line_and_a_fresh_start_clears_only_checkpoints(
    tmp_path: Path, caplog
) -> None:
    save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {})
    stem = tmp_path / "epoch-0001"
    stem.with_suffix(".safetensors").write_bytes(b"\x08\x00")  # a torn tensor file
    with pytest.raises(JournalError, match=re.escape(f"{stem}: unreadable checkpoint (")):
        load_latest(tmp_path)
    (tmp_path / "notes.json").write_text("{}")  # the user's, not a checkpoint
    (tmp_path / "epoch-0002.safetensors.tmp").write_bytes(b"a killed write")
    assert clear_checkpoints(tmp_path) == 1  # one checkpoint (its .json), the rest tidied
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json"]
    assert clear_checkpoints(tmp_path) == 0 and clear_checkpoints(tmp_path / "none") == 0
    with caplog.at_level("WARNING", logger="autoshrink"):
        clear_earlier_run(tmp_path)  # nothing of an earlier run: nothing said
    assert caplog.messages == []


class Tiny(nn.Module):
    """A batch-norm-free classifier: ``[B, 1, 8, 8] -> [B, 2]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


def toy_data() -> ImageData:
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = rng.normal(0.5, 0.1, (64, 1, 8, 8)).astype(np.float32)
    x[y == 1, :, 2:6, 2:6] += 0.3  # class 1 has a bright square
    return ImageData("toy", x[:48], y[:48], x[48:], y[48:], ("a", "b"))


def _val_loss(model: nn.Module, data) -> float:
    x = torch.stack([data.val[(i, 0)][0] for i in range(len(data.val))])
    y = torch.as_tensor(data.val.labels)
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), y))


def test_evaluation_uses_the_ema_weights(tmp_path: Path) -> None:
    """With decay 1 the EMA never moves: the scores must be those of the initial weights."""
    recipe = get_recipe("cifar", epochs=2, batch_size=16, augment="none", ema_decay=1.0)
    recipe = recipe.with_overrides(ema_warmup=False)
    data = array_data(toy_data(), recipe)
    torch.manual_seed(0)
    model = Tiny()
    initial = _val_loss(model, data)  # before any step
    result = train_final(model, data, recipe, out=tmp_path)
    assert result.test_loss == pytest.approx(initial, rel=1e-6)
    assert result.evaluated is not model
    assert _val_loss(model, data) != pytest.approx(initial, rel=1e-3)  # the model did move
    saved = load_file(str(tmp_path / "checkpoints" / "epoch-0002.safetensors"))
    assert not torch.equal(saved["model.fc.weight"], saved["ema.fc.weight"])


def test_training_learns_and_logs_every_epoch(tmp_path: Path) -> None:
    recipe = get_recipe("cifar", epochs=4, batch_size=16, lr_per_256=1.6, flip=False)
    data = array_data(toy_data(), recipe)
    torch.manual_seed(0)
    rows = []
    result = train_final(Tiny(), data, recipe, out=tmp_path, on_epoch=rows.append)
    assert result.test_accuracy > 0.8
    assert rows == result.history and [r["epoch"] for r in rows] == [1, 2, 3, 4]
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == rows
    steps = 3  # 48 training images in batches of 16
    for r in rows:  # the learning rate of each epoch's last step
        warmup = round(recipe.warmup_epochs * steps)
        last = warmup_cosine(r["epoch"] * steps - 1, recipe.lr(), warmup, recipe.epochs * steps)
        assert r["lr"] == pytest.approx(last, rel=1e-12)


@pytest.mark.parametrize("warmup, says", [(0.0, False), (1.0, True)])
def test_a_warm_up_as_long_as_the_run_is_warned_of(tmp_path, caplog, warmup, says) -> None:
    recipe = get_recipe("cifar", epochs=1, batch_size=16, warmup_epochs=warmup, flip=False)
    torch.manual_seed(0)
    train_final(Tiny(), array_data(toy_data(), recipe), recipe, out=tmp_path)
    assert ("warm-up (1 epochs) covers the whole run" in caplog.text) is says


@pytest.mark.parametrize(
    "precision, device, dtype",
    [
        ("auto", "cpu", None),
        ("fp32", "cpu", None),
        ("bf16", "cpu", torch.bfloat16),
        ("fp32", "cuda", None),
        ("fp16", "cuda", torch.float16),  # the device is only read, never used
    ],
)
def test_each_precision_gives_its_autocast_dtype(precision, device, dtype) -> None:
    recipe = get_recipe("cifar", precision=precision)
    assert _precision(recipe, torch.device(device)) == dtype


def test_fp16_needs_a_gpu() -> None:
    with pytest.raises(ConfigError, match="precision fp16 needs a GPU; the device is cpu"):
        _precision(get_recipe("cifar", precision="fp16"), torch.device("cpu"))


@pytest.mark.slow
def test_an_unreadable_image_found_in_training_leaves_the_folder_free(cli, tmp_path) -> None:
    from test_training_data import write_tree

    root = write_tree(tmp_path / "tree")
    broken = root / "train" / "class1" / "3.png"
    good = broken.read_bytes()
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # read lazily, in the first epoch
    out = tmp_path / "run"
    args = ["train", SHRINKCNN, "--dataset", "imagefolder", "--data-dir", root, "--epochs", "1"]
    args += ["--batch-size", "8", "--image-size", "16", "--width", "0.25", "--out", out]
    code, _, err = cli(*args)
    assert code == 2 and f"{broken}: unreadable image" in err
    assert not out.exists()  # it held recipe.json and cell.json, and refused the next start
    code, _, err = cli(*args, "--resume")  # a resume removes nothing: it may be another's start
    assert code == 2 and f"{broken}: unreadable image" in err
    assert sorted(p.name for p in out.iterdir()) == ["cell.json", "log.jsonl", "recipe.json"]
    broken.write_bytes(good)
    code, _, err = cli(*args, "--resume")
    assert code == 0, err


def test_cli_trains_on_an_image_folder(cli, tmp_path: Path) -> None:
    from test_training_data import write_tree

    root = write_tree(tmp_path / "tree")
    out = tmp_path / "run"
    args = ["train", SHRINKCNN, "--dataset", "imagefolder", "--data-dir", root, "--epochs", "2"]
    args += ["--batch-size", "8", "--image-size", "16", "--width", "0.25", "--ema", "0.9"]
    code, stdout, err = cli(*args, "--activation", "swish", "--out", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == "ema" and len(metrics["history"]) == 2
    assert Recipe.load(out / "recipe.json").ema_decay == 0.9
    assert json.loads((out / "cell.json").read_text())["activation"] == "swish"
    assert "test accuracy" in stdout
    weights = load_file(str(out / "weights.safetensors"))
    ckpt = load_file(str(out / "checkpoints" / "epoch-0002.safetensors"))
    torch.testing.assert_close(weights["classifier.weight"], ckpt["ema.classifier.weight"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--recipe", "/"], "/: a folder, not a file; expected a recipe file"),  # "unknown"
        (["--dataset", "imagefolder"], "needs --data-dir"),
        (
            ["--dataset", "imagefolder", "--data-dir", "/nonexistent"],
            "/nonexistent: no such folder; expected an image",
        ),
        (["--macro", "shrinkcnn-imagenet"], "too small"),
        (["--batch-size", "5000"], "exceeds the 1438 training images"),
    ],
)
def test_cli_bad_input_is_one_line(cli, tmp_path: Path, args: list[str], needle: str) -> None:
    code, _, err = cli("train", SHRINKCNN, *args, "--epochs", "1", "--out", tmp_path / "x")
    assert code == 2 and needle in err and err.count("\n") == 1


def test_a_diverging_training_stops_and_keeps_the_epochs_before(tmp_path: Path) -> None:
    """Weights turned NaN during epoch 2: epoch 1 stays logged and checkpointed, epoch 2 is
    neither, and the result names the epoch and its losses."""
    recipe = get_recipe("cifar", epochs=4, batch_size=16, flip=False)
    data = array_data(toy_data(), recipe)
    torch.manual_seed(0)
    model = Tiny()

    def poison(epoch: int, step: int) -> None:
        if (epoch, step) == (2, 0):
            with torch.no_grad():
                model.fc.weight.fill_(math.nan)

    result = train_final(model, data, recipe, out=tmp_path, on_step=poison)
    assert result.diverged_epoch == 2 and [r["epoch"] for r in result.history] == [1]
    assert result.resumed_from == 0  # a fresh start
    assert math.isnan(result.test_accuracy)
    assert all(math.isnan(v) for v in result.diverged_loss.values())  # not even evaluated
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == result.history
    assert load_latest(tmp_path / "checkpoints").epoch == 1


def test_resume_refuses_another_run_info(tmp_path: Path) -> None:
    recipe = get_recipe("cifar", epochs=1, batch_size=16, augment="none")
    data = array_data(toy_data(), recipe)
    torch.manual_seed(0)
    train_final(Tiny(), data, recipe, out=tmp_path, run_info={"data": "toy", "n": 64})
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(JournalError, match=r'of another run \(data: "toy" -> "other"\)'):
        train_final(Tiny(), data, recipe, out=tmp_path, resume=True,
                    run_info={"data": "other", "n": 64})  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    again = train_final(Tiny(), data, recipe, out=tmp_path, resume=True,
                        run_info={"data": "toy", "n": 64})  # fmt: skip
    assert again.resumed_from == 1


@pytest.mark.parametrize(
    ("settings", "says"),
    [  # from Python: an epochs of 1.5 got to training and failed there
        ({"epochs": 1.5}, 'recipe cifar: "epochs" must be an integer, got 1.5'),
        ({"flip": "no"}, '"flip" must be true or false, got "no"'),
        ({"crop_scale": 0.5}, '"crop_scale" must be a list, got 0.5'),
    ],
)
def test_a_recipe_from_python_checks_its_types(settings, says) -> None:
    from autoshrink.training.recipes import get_recipe

    with pytest.raises(ConfigError, match=re.escape(says)):
        get_recipe("cifar", **settings)
    assert get_recipe("cifar", crop_scale=(0.5, 1)).crop_scale == (0.5, 1.0)


def test_a_negative_seed_is_refused_before_training() -> None:
    from autoshrink.training.final import train_final
    from autoshrink.training.recipes import get_recipe

    with pytest.raises(ConfigError, match="seed must be a whole number >= 0, got -1"):
        train_final(nn.Linear(2, 2), None, get_recipe("cifar"), seed=-1)  # type: ignore[arg-type]


class PooledNorm(nn.Module):
    """Batch norm over a 1x1 map (as at the end of MobileNetV2 on small inputs): one value per
    channel for a batch of one image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1)  # [B, 4, 1, 1]
        return self.fc(self.norm(pooled).flatten(1))


def test_a_batch_of_one_that_batch_norm_cannot_train_on_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    recipe = get_recipe("cifar", epochs=1, batch_size=1, flip=False)
    torch.manual_seed(0)
    model = PooledNorm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"^batch_size \(--batch-size\) 1 .* at least 2"):
        train_final(model, array_data(toy_data(), recipe), recipe, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    recipe = recipe.with_overrides(batch_size=2)  # two images: two values per channel
    result = train_final(PooledNorm(), array_data(toy_data(), recipe), recipe)
    assert math.isfinite(result.test_loss)


def test_cli_batch_of_one_at_a_1x1_map_is_one_line(cli, tmp_path: Path) -> None:
    """The cifar-proxy network at 4 px ends on 1x1 maps: torch's traceback, exit 1, and a
    folder that refused the next start, until 2026-12-08."""
    out = tmp_path / "run"
    args = ["train", SHRINKCNN, "--epochs", "1", "--batch-size", "1", "--image-size", "4"]
    code, _, err = cli(*args, "--width", "0.25", "--no-flip", "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "--batch-size" in err and "at least 2" in err
    assert not out.exists()
