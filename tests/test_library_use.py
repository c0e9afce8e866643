"""What a user of autoshrink as a library meets: type information, settings spelled as the
command line spells them, global state left as it was, and custom evaluators and scores that
fail in one clear error."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluation, journal_problem
from autoshrink.evaluators.factory import build_evaluator
from autoshrink.executors.base import InProcessExecutor
from autoshrink.graph import Cell
from autoshrink.journal import Journal
from autoshrink.objectives import Score
from autoshrink.presets import PRESETS, preset
from autoshrink.report.reading import read_run
from autoshrink.search import run_search
from test_search import ToyEvaluator, toy_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_ships_its_type_information() -> None:
    assert resources.files("autoshrink").joinpath("py.typed").is_file()
    package_data = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")
    assert '"py.typed"' in package_data[1].split("[")[1]  # the built wheel has it too
    for entry, name in [(run_search, "run_dir"), (read_run, "run_dir")]:
        assert typing.get_type_hints(entry)[name] == str | Path  # the docs pass strings
    assert typing.get_type_hints(Journal.__init__)["path"] == str | Path


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"epochs": 2}, "unknown setting 'epochs'; did you mean training_epochs?"),
        ({"weight": 0.05}, "did you mean score=Score.cnn(weight=...)"),
        ({"max_macs": 2e5}, 'did you mean constraints={"macs": ...}?'),
        ({"training_epoch": 2}, "did you mean training_epochs"),
        ({"nodez": 3}, "did you mean nodes?"),
    ],
)
def test_preset_names_an_unknown_setting_and_its_spelling(overrides, says) -> None:
    with pytest.raises(ConfigError) as err:
        preset("demo", **overrides)
    assert says in str(err.value)
    assert preset("demo", training_epochs=2, k=3).training.epochs == 2


def test_evaluating_a_candidate_leaves_the_callers_random_numbers_alone() -> None:
    config = preset("demo", nodes=3, per_class=5, val_size=20, training_epochs=1, threads=1)
    evaluator = build_evaluator(config)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluation = evaluator.evaluate(Cell.complete("cnn", ["input", "sep3x3", "conv1x1"]), 77)
    assert evaluation.status == "ok"
    assert torch.initial_seed() == 123 and torch.equal(torch.rand(3), expected)


def test_a_score_that_reads_a_metric_the_evaluator_lacks_is_named(tmp_path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"the score reads latency, which the evaluation of "
                       r"\S+ lacks \(it has accuracy, macs, params\)"):  # fmt: skip
        run_search(run, toy_config(score=Score.cnn(cost="latency")), progress=False,
                   evaluator_factory=lambda c: ToyEvaluator())  # fmt: skip
    assert not (run / "config.json").exists()  # the folder is free for the corrected search
    run_search(run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False)


def test_the_built_in_evaluator_refuses_a_cost_it_lacks_before_any_training(
    tmp_path, monkeypatch
) -> None:
    from autoshrink.evaluators import factory

    monkeypatch.setattr(factory, "proxy_task", lambda c: pytest.fail("read the data set"))
    with pytest.raises(ConfigError, match=r"score cost 'latency': the built-in cnn evaluator "
                       "gives macs, params, latency_ms, table_latency_ms"):  # fmt: skip
        run_search(tmp_path / "r", preset("demo", score=Score.cnn(cost="latency")), progress=False)
    for name in ("slope", "offset"):
        with pytest.raises(ConfigError, match=f"score {name} must be finite, got nan"):
            Score(**{name: float("nan")})
    for weight in (-1.0, math.inf, math.nan):
        with pytest.raises(ConfigError, match="score weight must be finite and >= 0, got"):
            Score(weight=weight)
    with pytest.raises(ConfigError, match='^score: "weight" must be a number, got "a"$'):
        Score(weight="a")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match='^score: "metric" must be a string, got 1$'):
        Score(metric=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "score", "says"),
    [
        ("cnn", Score(metric="acc"), "score metric 'acc': the built-in cnn evaluator gives "
         "accuracy, macs, params, latency_ms, table_latency_ms"),
        ("rnn", Score.cnn(), "score metric 'accuracy': the built-in rnn evaluator gives "
         "perplexity, macs, params, edges, edge_cost"),
    ],
)  # fmt: skip
def test_the_built_in_evaluator_refuses_a_metric_it_lacks_before_any_training(
    tmp_path, monkeypatch, task, score, says
) -> None:
    """It was refused only once the first candidate had trained (minutes with the paper's
    protocol), though a cost it lacks was refused at once."""
    from autoshrink.evaluators import factory

    for name in ("proxy_task", "rnn_evaluator"):
        monkeypatch.setattr(factory, name, lambda c: pytest.fail("read the data set"))
    config = preset("demo", task=task, score=score)
    with pytest.raises(ConfigError, match=f"^{re.escape(says)}$"):
        run_search(tmp_path / "r", config, progress=False)
    assert not (tmp_path / "r").exists()


def test_a_score_is_minus_infinity_without_its_metric_or_cost() -> None:
    # a candidate whose evaluator left out a metric ranks last; it is not a TypeError
    import dataclasses

    score = Score.cnn(weight=0.1)
    assert score({"accuracy": 0.9, "macs": 1e6}) == pytest.approx(0.9)
    assert score({"macs": 1e6}) == -math.inf and score({"accuracy": 0.9}) == -math.inf
    assert Score.cnn(weight=0)({"accuracy": 0.9}) == 0.9  # no cost term: the cost is not read
    assert score.missing({"macs": 1e6}) == ["accuracy"]
    with pytest.raises(TypeError):
        Score("accuracy")  # type: ignore[misc]  # keywords only: which field is which
    with pytest.raises(dataclasses.FrozenInstanceError):
        score.weight = 5.0  # type: ignore[misc]
    assert hash(score) == hash(Score.cnn(weight=0.1))


class DictEvaluator(ToyEvaluator):
    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        return super().evaluate(cell, seed).metrics  # type: ignore[return-value]


def test_an_evaluator_that_returns_no_evaluation_is_named(tmp_path) -> None:
    with pytest.raises(TypeError, match="DictEvaluator.evaluate returned a dict, not an "
                       "autoshrink.evaluators.base.Evaluation"):  # fmt: skip
        run_search(tmp_path / "run", toy_config(k=2), executor=InProcessExecutor(),
                   evaluator_factory=lambda c: DictEvaluator(), progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        (lambda: Evaluation(None), "metrics of type NoneType, not a dict of numbers"),  # type: ignore[arg-type]
        (lambda: Evaluation({"accuracy": "0.9"}), "metric 'accuracy' = '0.9': a metric is a n"),
        (lambda: Evaluation({1: 0.9}), "metric 1 = 0.9: a metric is a number named by a str"),
        (
            lambda: Evaluation({"accuracy": 0.9}, detail={"logits": np.zeros(2)}),
            "a detail that is no JSON \\(Object of type ndarray is not JSON serializable\\)",
        ),
        (  # the check passed it, then the journal's sorted keys failed with the trained result
            lambda: Evaluation({"accuracy": 0.9, "macs": 1e5}, detail={1: "a", "b": 2}),
            "a detail that is no JSON \\('<' not supported between instances of 'str' and 'int'\\)",
        ),
    ],
)
def test_an_evaluation_the_journal_cannot_hold_names_its_evaluator(
    tmp_path, evaluation, message
) -> None:
    """It stopped the search in ``json.dumps``'s or the journal reader's words, naming neither
    the evaluator nor the field."""

    class Odd(ToyEvaluator):
        def evaluate(self, cell: Cell, seed: int) -> Evaluation:
            return evaluation()

    with pytest.raises(TypeError, match=re.escape("<locals>.Odd.evaluate returned ") + message):
        run_search(tmp_path / "run", toy_config(k=2), evaluator_factory=lambda c: Odd(),
                   progress=False)  # fmt: skip
    good = Evaluation({"accuracy": np.float32(0.5), "latency": None, "macs": torch.tensor(3.0)})
    assert journal_problem(good) is None  # NumPy and torch scalars, a metric not measured


def test_an_evaluation_of_an_unknown_status_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"evaluation status 'success'; expected one of ok, "):
        Evaluation({"accuracy": 0.9}, status="success")  # a search took it for a failure


def test_a_configs_constraints_are_read_only_and_never_shared() -> None:
    import pickle

    with pytest.raises(TypeError, match="constraints are read-only; make another config"):
        preset("demo").constraints["macs"] = 2e5  # it reached every later preset("demo")
    with pytest.raises(TypeError, match="read-only"):
        PRESETS["demo"].constraints.update(macs=5)
    with pytest.raises(TypeError):
        PRESETS["mine"] = preset("demo")  # type: ignore[index]
    mine = {"macs": 1e6}
    b = preset("demo", constraints=mine)
    mine["macs"] = -5  # the caller's dict is copied, not kept
    assert b.constraints == {"macs": 1e6} and preset("demo").constraints == {}
    assert pickle.loads(pickle.dumps(b)) == b  # pool workers get the config pickled


#: Modules that docs/architecture.md says never import torch.
TORCH_FREE = [
    "autoshrink.graph",
    "autoshrink.journal",
    "autoshrink.replay",
    "autoshrink.run_folder",
    "autoshrink.objectives",
    "autoshrink.screening",
    "autoshrink.batch_checks",
    "autoshrink.config",
    "autoshrink.presets",
    "autoshrink.search",
    "autoshrink.search_loop",
    "autoshrink.report.run_report",
    "autoshrink.strategies.autoshrink",
    "autoshrink.strategies.regularized_evolution",
    "autoshrink.strategies.cell_baselines",
    "autoshrink.tabular.comparison",
    "autoshrink.cost.cells",
    "autoshrink.spaces.cells",
    "autoshrink.report.reading",
]


def test_the_modules_the_architecture_page_calls_torch_free_are() -> None:
    code = f"import sys; import {', '.join(TORCH_FREE)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_new_search_without_a_config_is_refused_before_its_folder_is_made(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"a new search in \S+ needs a config \(preset"):
        run_search(tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()  # an empty folder was left behind


def test_a_preset_refuses_settings_its_search_would_not_read() -> None:
    # the command line refused these; from Python they were saved and ignored
    with pytest.raises(ConfigError, match=r"^preset 'demo': not read by this search: "
                       "oneshot_epochs needs evaluator oneshot; zc_batch needs screening "
                       "zero-cost$"):  # fmt: skip
        preset("demo", strategy="random", oneshot_epochs=3, zc_batch=16)
    with pytest.raises(ConfigError, match="population_size needs strategy rea"):
        preset("demo", population_size=50)
    with pytest.raises(ConfigError, match="latency_macro needs a latency cost or constraint"):
        preset("demo", latency_macro="cifar-proxy")
    # the preset's own settings stay, and settings the search reads pass
    assert preset("demo", strategy="rea", population_size=8).patience == 5
    assert preset("demo", constraints={"latency_ms": 5.0}, latency_macro="cifar-proxy")


def test_an_rnn_search_to_0_edges_needs_a_cost_that_ranks_the_empty_cell() -> None:
    # E * nhid^2 is 0 at 0 edges; a params or macs cost was refused alike, though it ranks it
    from autoshrink.objectives import Score

    with pytest.raises(ConfigError, match="shrinks the 6-node rnn cell to 0 edges, which the"):
        preset("demo", task="rnn", keep_fraction=0.0)
    for cost in ("params", "macs"):
        config = preset("demo", task="rnn", keep_fraction=0.0, score=Score.rnn(cost=cost))
        assert config.keep_fraction == 0.0
    assert preset("demo", task="rnn", keep_fraction=0.0, score=Score.rnn(weight=0)).k == 3


def test_training_overrides_apply_to_the_training_given_beside_them() -> None:
    # the given training was dropped for the preset's, without a word
    from autoshrink.training.proxy_settings import ProxyTraining

    given = ProxyTraining(lr=0.01, epochs=9, batch_size=16)
    t = preset("demo", training=given, training_epochs=2).training
    assert (t.lr, t.batch_size, t.epochs) == (0.01, 16, 2)
    assert preset("demo", training=given).training == given


def test_presets_apply_an_override_of_none_as_given() -> None:
    # None was dropped: preset("demo", patience=None) kept the demo's early stop, so "none" could
    # not be asked for; get_recipe and singlepath_preset apply None as given too
    from autoshrink.singlepath.settings import singlepath_preset
    from autoshrink.training.recipes import get_recipe

    assert preset("demo").patience == 5 and preset("demo", patience=None).patience is None
    with pytest.raises(ConfigError, match='training: "epochs" must be an integer, got null'):
        preset("demo", training_epochs=None)
    assert singlepath_preset("demo").train_images == 1000
    assert singlepath_preset("demo", train_images=None).train_images is None
    assert get_recipe("shrinkcnn-imagenet").ema_decay is not None
    assert get_recipe("shrinkcnn-imagenet", ema_decay=None).ema_decay is None


def test_a_new_rea_search_refuses_a_tournament_larger_than_its_population(tmp_path) -> None:
    config = toy_config(strategy="rea", budget=4, population_size=2, tournament_size=3)
    with pytest.raises(ConfigError, match=r"tournament_size \(3\) must be at most "):
        run_search(tmp_path / "r", config, evaluator_factory=lambda c: ToyEvaluator())
    assert not (tmp_path / "r").exists()  # refused before the folder was made


def test_the_package_names_what_a_search_needs_and_imports_torch_only_for_them() -> None:
    import autoshrink
    from autoshrink import evaluators, objectives, presets, report, search, stop_signals

    assert autoshrink.run_search is search.run_search and autoshrink.preset is presets.preset
    assert autoshrink.Score is objectives.Score and autoshrink.read_run is report.reading.read_run
    assert autoshrink.Evaluation is evaluators.base.Evaluation
    assert autoshrink.SearchInterrupted is stop_signals.SearchInterrupted  # docs import it here
    assert set(autoshrink.__all__) <= set(dir(autoshrink))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        autoshrink.nothing  # noqa: B018
    code = "import sys, autoshrink; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_documented_custom_evaluator_and_strategy_print_what_the_page_says(tmp_path) -> None:
    import re

    page = (ROOT / "docs" / "search.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "PathCount" in b]
    assert len(blocks) == 2  # the evaluator, then the strategy that continues its example
    shown = [re.search(r"# (\d+ [\d.]+ \d+)\n$", b) for b in blocks]
    assert None not in shown
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", "".join(blocks)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.split("\n")[:2] == [m.group(1) for m in shown if m]


def test_run_singlepath_with_its_arguments_swapped_says_the_order(tmp_path) -> None:
    from autoshrink.singlepath.search import run_singlepath
    from autoshrink.singlepath.settings import singlepath_preset

    with pytest.raises(TypeError, match=r"settings must be a SearchSettings, got str \(the "):
        run_singlepath(singlepath_preset("demo"), str(tmp_path / "sp"))  # type: ignore[arg-type]
    assert not (tmp_path / "sp").exists()


def _library_calls() -> list[tuple[Any, str]]:
    """Calls of the library's public API with a bad argument, and what each must say."""
    import random

    from autoshrink.cost.cells import count
    from autoshrink.cost.rnn import count_rnn, shrinkrnn_ptb
    from autoshrink.data.imagefolder import load_image_folder
    from autoshrink.hardware.latency_settings import LatencySettings
    from autoshrink.hardware.table import extend_table
    from autoshrink.spaces.cells import balanced_ops, published_cell, start_cell
    from autoshrink.spaces.macros import StageSpec, cifar_proxy, get_macro, shrinkcnn_imagenet
    from autoshrink.spaces.nb201 import NB201Cell, NB201Size
    from autoshrink.strategies.autoshrink import AutoShrink

    rng = random.Random(0)
    cell = start_cell("cnn", 4, rng)
    stages = cifar_proxy().stages
    return [
        (lambda: balanced_ops(1, ("sep3x3",), rng), "a cell needs at least 2 nodes, got 1"),
        (lambda: start_cell("rnn", 1, rng), "a cell needs at least 2 nodes, got 1"),
        (lambda: start_cell("gnn", 4, rng), "unknown cell kind 'gnn'; expected 'cnn' or 'rnn'"),
        (lambda: published_cell("nasnet"), "unknown published cell 'nasnet'; expected one of"),
        (lambda: get_macro("cifar-proxy", depth=3), "macro cifar-proxy: "),
        (
            lambda: dataclasses.replace(cifar_proxy(), stem_stride=3),
            "macro cifar-proxy: stem_stride must be 1 or 2",
        ),
        (
            lambda: dataclasses.replace(
                cifar_proxy(), stages=(*stages, StageSpec(cells=0, channels=8, downsample=False))
            ),
            "macro cifar-proxy: every stage needs >= 1 cell and channel",
        ),
        (
            lambda: shrinkcnn_imagenet(depths=(1.5, 3, 4, 6, 4)),
            "macro shrinkcnn-imagenet: every stage needs >= 1 cell and channel (whole numbers); "
            "stage 0 has 1.5 cells of 12 channels",
        ),
        (  # said "every stage needs >= 1 cell and channel" of a macro that has none
            lambda: dataclasses.replace(cifar_proxy(), stages=()),
            "macro cifar-proxy: needs at least one stage, got none",
        ),
        (
            lambda: dataclasses.replace(cifar_proxy(), stages=({"cells": 1},)),
            "macro cifar-proxy: stage 0 must be a StageSpec, got dict",
        ),
        (
            lambda: dataclasses.replace(shrinkcnn_imagenet(), head_channels=-3),
            "macro shrinkcnn-imagenet: head_channels must be a whole number >= 1, got -3",
        ),
        (
            lambda: AutoShrink(cell, k=2, keep_fraction=1.0, rng=rng),
            "keep_fraction must be in [0, 1), got 1.0",
        ),
        (
            lambda: AutoShrink(cell, k=2, keep_fraction=0.1, rng=rng, patience=0),
            "patience must be >= 1 or None, got 0",
        ),
        (  # 1.5 waited two steps without a word
            lambda: AutoShrink(cell, k=2, keep_fraction=0.1, rng=rng, patience=1.5),
            "patience must be >= 1 or None, got 1.5",
        ),
        (  # a TypeError of '<=' between float and str
            lambda: AutoShrink(cell, k=2, keep_fraction="0.5", rng=rng),  # type: ignore[arg-type]
            "keep_fraction must be in [0, 1), got '0.5'",
        ),
        (  # an AttributeError on .num_edges
            lambda: AutoShrink(list(cell.ops), k=2, keep_fraction=0.1, rng=rng),  # type: ignore[arg-type]
            "AutoShrink starts from a Cell, got a list",
        ),
        (
            lambda: count(cell.to_dict(), cifar_proxy()),  # type: ignore[arg-type]
            "macro cifar-proxy needs a cnn cell, got a dict (Cell.from_dict(d) or Cell.load(path)",
        ),
        (
            lambda: count_rnn(list(cell.ops), shrinkrnn_ptb()),  # type: ignore[arg-type]
            "macro shrinkrnn-ptb needs an rnn cell, got a list (Cell.from_dict(d) or Cell.load(",
        ),
        (lambda: NB201Cell.from_string(42), "an arch string must be a str, got int"),
        (
            lambda: NB201Cell.from_dict({"arch": "x"}),
            "a NAS-Bench-201 cell dict needs space='nb201' and an 'arch' string",
        ),
        (lambda: NB201Cell.from_code(0).with_op(6, "none"), "edge number must be in 0..5, got 6"),
        (lambda: NB201Size.from_index(-1), "size index must be in 0..32767, got -1"),
        (lambda: LatencySettings(warmup=-1), "latency warmup must be >= 0, got -1"),
        (lambda: LatencySettings(rtol=0), "latency max_seconds and rtol must be finite and > 0"),
        (lambda: LatencySettings(max_seconds=0), "latency max_seconds and rtol must be finite"),
        (lambda: LatencySettings(max_seconds=math.inf), "latency max_seconds and rtol must be"),
        (
            lambda: extend_table(None, [cell], cifar_proxy()),
            "a new latency table needs measurement settings",
        ),
        (
            lambda: load_image_folder("/nonexistent", image_size=0),
            "image_size must be a positive number of pixels, got 0",
        ),
        (
            lambda: load_image_folder("/nonexistent", test_fraction=1.0),
            "test_fraction must lie strictly between 0 and 1, got 1.0",
        ),
    ]


def test_the_library_refuses_a_bad_argument_in_one_line() -> None:
    from autoshrink.errors import AutoshrinkError

    for call, says in _library_calls():
        with pytest.raises(AutoshrinkError) as caught:
            call()
        assert str(caught.value).startswith(says) and "\n" not in str(caught.value), says


@pytest.mark.parametrize(
    ("run_dir", "config", "says"),
    [
        ("r", "demo", r"config must be a SearchConfig \(preset\(\.\.\.\)\), got str"),
        ("r", {"k": 2}, r"config must be a SearchConfig \(preset\(\.\.\.\)\), got dict"),
        (toy_config(k=2), "r", r"run_dir must be a path, got SearchConfig \(the folder comes"),
    ],
)
def test_run_search_names_an_argument_of_the_wrong_type(
    tmp_path, monkeypatch, run_dir, config, says
) -> None:
    """A dict, a preset's name or the arguments swapped: an AttributeError on ``.strategy``
    (or pathlib's 'expected str, bytes or os.PathLike object') from deep inside."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match="^run_search\\(run_dir, config\\): " + says):
        run_search(run_dir, config, progress=False)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_an_executor_that_is_no_executor_is_named(tmp_path) -> None:
    """The executor's name ("pool"), as the command line takes it: an AttributeError on
    ``.close`` from run_search's cleanup, which hid what went wrong."""
    run = tmp_path / "run"
    with pytest.raises(TypeError, match=r"^run_search: executor must be an Executor "
                       r"\(executor_for\(\.\.\.\)\), got a str$"):  # fmt: skip
        run_search(run, toy_config(k=2), executor="pool", progress=False)  # type: ignore[arg-type]
    assert not run.exists()


def test_an_evaluator_factory_that_gives_no_evaluator_is_named(tmp_path) -> None:
    """An evaluator given where its factory goes, or a factory that returns None: a TypeError
    ('object is not callable') or an AttributeError on ``.evaluate`` from deep inside."""
    run = tmp_path / "run"
    with pytest.raises(TypeError, match=r"^run_search: evaluator_factory must be callable "
                       r"\(called with the config\), got a ToyEvaluator$"):  # fmt: skip
        run_search(run, toy_config(k=2), evaluator_factory=ToyEvaluator(), progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^run_search: strategy_factory must be callable "):
        run_search(run, toy_config(k=2, strategy="custom"), strategy_factory=3, progress=False)  # type: ignore[arg-type]
    assert not run.exists()

    def nothing(config: Any) -> Any:
        return None

    with pytest.raises(ConfigError, match=r"^evaluator_factory \S+nothing returned a NoneType, "
                       r"which lacks profile, evaluate \(see autoshrink.evaluators.base."
                       r"Evaluator\)$"):  # fmt: skip
        run_search(run, toy_config(k=2), evaluator_factory=nothing, progress=False)
    assert not (run / "config.json").exists()  # the folder is free for the corrected search
    run_search(run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False)


class CountsParams(ToyEvaluator):
    """Profiles ``params`` only: a constraint on ``macs`` cannot be checked on its profile."""

    def profile(self, cell: Cell) -> dict[str, float]:
        return {"params": float(cell.num_edges)}


@pytest.mark.parametrize(
    ("profile", "says"),
    [
        (lambda cell: {"params": 1.0}, "gives no macs (it gives params)"),
        (lambda cell: {"macs": math.nan}, "gives macs = nan, not a finite number"),
        (lambda cell: {"macs": "5"}, "gives macs = '5', not a finite number"),
        (lambda cell: None, "gives a NoneType, not a dict of metrics"),
    ],
)
def test_a_constraint_the_evaluators_profile_cannot_check_is_named(tmp_path, profile, says) -> None:
    """Such a constraint was left out without a word: every candidate passed it (a NaN compares
    false), so the search's best cell could break the limit the user set."""

    class Profiled(ToyEvaluator):
        def profile(self, cell: Cell) -> dict[str, float]:
            return profile(cell)

        def evaluate(self, cell: Cell, seed: int) -> Evaluation:
            return Evaluation({"accuracy": 1.0, "params": 1.0})

    run = tmp_path / "run"
    config = toy_config(k=2, score=Score.cnn(cost="params"), constraints={"macs": 1e8})
    with pytest.raises(ConfigError, match=r"^constraint macs: \S+Profiled.profile of cell "
                       rf"[0-9a-f]+ {re.escape(says)}; a hard constraint is checked on the "
                       r"profile, before training$"):  # fmt: skip
        run_search(run, config, evaluator_factory=lambda c: Profiled(), progress=False)
    assert not (run / "config.json").exists()  # the folder is free for the corrected search
    good = toy_config(k=2, score=Score.cnn(cost="params"), constraints={"params": 3.0})
    result = run_search(run, good, evaluator_factory=lambda c: CountsParams(), progress=False)
    assert result.best.metrics["params"] <= 3.0


@pytest.mark.parametrize(("constraints", "got"), [(None, "null"), ([1], "[1]"), ("macs", '"macs"')])
def test_constraints_that_are_no_dict_are_named(constraints, got) -> None:
    """They were dict()'s own TypeError ('cannot convert dictionary update sequence element'),
    naming no setting; a string of two letters made a constraint of them."""
    with pytest.raises(
        ConfigError, match=rf'^config: "constraints" must be an object, got {re.escape(got)}'
    ):
        preset("demo", constraints=constraints)


def test_a_step_whose_ok_candidates_have_no_score_is_not_said_to_have_failed(tmp_path) -> None:
    """An evaluator's "ok" evaluations without a finite metric stopped the search with "every
    candidate of step 1 failed (2 ok)", which --retry-failed (for "failed" ones) cannot help."""

    class NoAccuracyAfterStart(ToyEvaluator):
        def evaluate(self, cell: Cell, seed: int) -> Evaluation:
            out = super().evaluate(cell, seed)
            if cell.num_edges < 15:  # every candidate but the complete cell
                return Evaluation({**out.metrics, "accuracy": math.nan})
            return out

    result = run_search(tmp_path / "r", toy_config(k=2), progress=False,
                        evaluator_factory=lambda c: NoAccuracyAfterStart())  # fmt: skip
    assert result.stopped == (
        "no candidate of step 1 has a finite score (2 ok: a metric or cost the score reads is "
        "missing or not finite, or a cost is <= 0); the search cannot shrink from a cell "
        "without a score"
    )
