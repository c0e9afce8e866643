"""SearchConfig refuses each setting out of its range, or that does not go with the others, in
one ConfigError that names it (the command line and config.json files reach the same checks;
their own tests are in tests/test_cli.py and tests/test_run_folder_input.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError
from autoshrink.presets import preset
from autoshrink.screening import ScreeningStage
from autoshrink.training.proxy_settings import ProxyTraining, RNNProxyTraining


@pytest.mark.parametrize(
    ("task", "change", "message"),
    [
        ("cnn", {"task": "bogus"}, "unknown task 'bogus'; expected one of ('cnn', 'rnn')"),
        ("cnn", {"population_size": 0}, "population_size must be >= 1, got 0"),
        ("cnn", {"tournament_size": 0}, "tournament_size must be >= 1, got 0"),
        ("cnn", {"keep_fraction": 1.0}, "keep_fraction must be in [0, 1), got 1.0"),
        ("cnn", {"keep_fraction": -0.1}, "keep_fraction must be in [0, 1), got -0.1"),
        ("cnn", {"patience": 0}, "patience must be >= 1, got 0"),
        ("cnn", {"per_class": 0}, "per_class and val_size must be >= 1"),
        ("cnn", {"val_size": 0}, "per_class and val_size must be >= 1"),
        ("cnn", {"latency_macro": "bogus"}, "unknown latency macro 'bogus'; expected one of"),
        (
            "cnn",
            {"constraints": {"macs": math.inf}},
            "constraint macs: the limit must be a finite number > 0, got inf",
        ),
        (
            "cnn",
            {"constraints": {"params": 0}},
            "constraint params: the limit must be a finite number > 0, got 0",
        ),
        ("cnn", {"evaluator": "bogus"}, "unknown evaluator 'bogus'; expected one of"),
        (
            "cnn",
            {"evaluator": "oneshot", "objective": "ood"},
            "evaluator oneshot fine-tunes with the erm objective; not with 'ood'",
        ),
        ("cnn", {"objective": "bogus"}, "unknown objective 'bogus'; expected one of"),
        ("cnn", {"score": {"metric": "accuracy"}}, "score must be Score(...), got dict"),
        (
            "cnn",
            {"execution": {"executor": "inprocess"}},
            "execution must be ExecutionSettings(...), got dict",
        ),
        (
            "rnn",
            {"objective": "ood"},
            "objective 'ood' and test_domain (--objective ood, --test-domain) are for cnn cells, "
            "not task 'rnn' (--task rnn)",  # a library call's arguments named too
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(task: str, change: dict[str, Any], message: str):
    base = preset("demo", task=task)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        dataclasses.replace(base, **change)
    assert "\n" not in str(caught.value)


def test_a_config_file_that_is_not_settings_is_named():
    with pytest.raises(ConfigError, match=r"^c\.json: expected a JSON object, got list$"):
        SearchConfig.from_dict([1], "c.json")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^c\.json: unknown setting\(s\) \['bogus'\]$"):
        SearchConfig.from_dict({"bogus": 1}, "c.json")


def test_an_rnn_keep_fraction_of_no_edge_suggests_one_that_keeps_an_edge():
    # it suggested 0.5 / edges, which rounds (half to even) to 0 edges too
    base = preset("demo", task="rnn")  # 6 nodes: 15 edges
    with pytest.raises(ConfigError, match=r"use at least 0\.0667$") as caught:
        dataclasses.replace(base, keep_fraction=0.0333)
    suggested = float(str(caught.value).rsplit(" ", 1)[1])
    assert dataclasses.replace(base, keep_fraction=suggested).keep_fraction == suggested


def test_the_edges_of_each_range_are_accepted():
    base = preset("demo")
    for change in (
        {"keep_fraction": 0.0},
        {"patience": 1},
        {"per_class": 1, "val_size": 1},
        {"population_size": 1, "tournament_size": 1},
        {"constraints": {"macs": 1e-9}},
    ):
        config = dataclasses.replace(base, **change)
        assert all(getattr(config, name) == value for name, value in change.items())


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        (ProxyTraining, {"lr": 0.0}, "training: lr must be finite and > 0, got 0.0"),
        (ProxyTraining, {"epochs": 0}, "training: epochs must be >= 1, got 0"),
        (ProxyTraining, {"batch_size": 0}, "training: batch_size must be >= 1, got 0"),
        (ProxyTraining, {"patience": 0}, "training: patience must be >= 1, got 0"),
        (
            ProxyTraining,
            {"weight_decay": -1.0},
            "training: weight_decay must be finite and >= 0, got -1.0",
        ),
        (ProxyTraining, {"min_accuracy": math.nan}, "training: min_accuracy must be finite"),
        (ProxyTraining, {"overfit_ratio": math.inf}, "overfit_ratio must be finite and > 0 (a"),
        (ProxyTraining, {"epochs": None}, 'training: "epochs" must be an integer, got null'),
        (ProxyTraining, {"lr": "fast"}, 'training: "lr" must be a number, got "fast"'),
        (RNNProxyTraining, {"epochs": None}, 'training: "epochs" must be an integer, got null'),
        (RNNProxyTraining, {"lr_decay_after": ["7"]}, '"lr_decay_after[0]" must be an integer'),
    ],
)
def test_training_settings_check_themselves_when_built(kind, settings, message) -> None:
    """A library caller's training settings are refused where they are made (a None epochs
    was a TypeError, an lr of 0 accepted until a SearchConfig held it)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        kind(**settings)


def test_the_rnn_training_holds_its_lr_decay_epochs_as_a_tuple() -> None:
    assert RNNProxyTraining(lr_decay_after=[3, 5]).lr_decay_after == (3, 5)  # as JSON's list


@pytest.mark.parametrize(
    "config",
    [
        preset("demo"),
        preset("demo", task="rnn"),
        preset(
            "demo",
            screening="progressive",
            screening_stages=(ScreeningStage(2, 1, 0.5), ScreeningStage(1.0, 6, 1.0)),
        ),
        preset("demo", constraints={"macs": 2e5}),
    ],
    ids=["cnn", "rnn", "progressive", "constraints"],
)
def test_a_configs_dict_reads_back_as_the_config(config: SearchConfig) -> None:
    """to_dict() held tuples (screening_stages, the rnn lr_decay_after) that from_dict, which
    reads config.json's JSON, refused: 'config: "screening_stages" must be a list, got []'."""
    d = config.to_dict()
    assert SearchConfig.from_dict(d) == config
    assert d == json.loads(json.dumps(d))  # what config.json holds, as the docstring says


def test_a_setting_json_cannot_hold_is_named_with_its_type() -> None:
    from pathlib import Path

    import numpy as np

    # "config: a setting is not a plain JSON value (...)" named neither the field nor the fix
    with pytest.raises(ConfigError, match=r"^config: data_dir \(PosixPath\) is not a plain JS"):
        preset("demo", data_dir=Path("/tmp/digits"))
    with pytest.raises(ConfigError, match=r"^config: seed \(int64\) is not a plain JSON value"):
        preset("demo", seed=np.int64(2))
    assert preset("demo", data_dir="/tmp/digits").data_dir == "/tmp/digits"
