"""``autoshrink search --screening zero-cost``: the ranked AutoShrink step, the ranker's wiring,
resume, ``images_trained`` in result.json, and bad input failing before anything trains."""

from __future__ import annotations

import json
import random

import pytest
import torch

from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError
from autoshrink.evaluators.factory import proxy_task
from autoshrink.evaluators.zero_cost import screening_batch
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.objectives import Score
from autoshrink.search import run_search
from autoshrink.search_loop import candidate_seed
from autoshrink.spaces.cells import start_cell
from autoshrink.strategies.autoshrink import AutoShrink
from autoshrink.zero_cost import proxy
from test_search import GOOD, ToyEvaluator, candidates, strip_seconds


def test_ranked_step_takes_the_k_best_of_the_whole_shrink_space() -> None:
    start = start_cell("cnn", 6, random.Random(0), "relu")
    # rank: how many GOOD edges a candidate keeps -- removing a non-GOOD edge keeps all 4
    strategy = AutoShrink(
        start,
        k=3,
        keep_fraction=0.0,
        rng=random.Random(0),
        score_start=False,
        rank=lambda cells: [float(len(GOOD & set(c.edges))) for c in cells],
    )
    picks = strategy.ask()
    want = [e for e in start.edges if e not in GOOD][:3]  # ties keep the shrink-space order
    assert [tuple(p.meta["removed_edge"]) for p in picks] == want
    assert all(p.meta["screen_score"] == 4.0 for p in picks)


def zc_config(**kw) -> SearchConfig:
    settings = dict(
        dataset="digits",
        nodes=4,
        k=2,
        keep_fraction=0.0,
        seed=1,
        score=Score.cnn(),
        per_class=10,
        val_size=30,
        width=0.25,
        screening="zero-cost",
        zc_proxy="synflow",
        zc_batch=16,
    )
    return SearchConfig(**{**settings, **kw})


def test_zero_cost_search_trains_the_top_k_and_resumes_identically(tmp_path, one_thread) -> None:
    cfg = zc_config()
    full = run_search(
        tmp_path / "full", cfg, evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    records = candidates(tmp_path / "full" / "journal.jsonl")
    # independently: score every removal of the step-0 cell and check the trained ones are
    # the K best (the ranker's seeds are the candidates' training seeds)
    split, macro = proxy_task(cfg)
    x, y = screening_batch(split, cfg.zc_batch, cfg.seed)
    start = Cell.from_dict(records[0]["cell"])
    values = {}
    for edge in start.edges:
        cell = start.remove_edge(edge)
        torch.manual_seed(candidate_seed(cfg.seed, cell.key))
        values[cell.key] = proxy("synflow")(build_network(cell, macro), x, y)
    best = sorted(values.values(), reverse=True)[: cfg.k]
    step1 = [r for r in records if r["step"] == 1]
    assert sorted((r["meta"]["screen_score"] for r in step1), reverse=True) == pytest.approx(best)
    assert all(values[r["key"]] == pytest.approx(r["meta"]["screen_score"]) for r in step1)
    result = json.loads((tmp_path / "full" / "result.json").read_text())
    assert result["screening"]["mode"] == "zero-cost"
    assert result["screening"]["this_session"]["cells_scored"] >= len(start.edges)
    # resume from a cut journal: the same proposals, the same journal
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    lines = (tmp_path / "full" / "journal.jsonl").read_text().splitlines()
    (part / "journal.jsonl").write_text("\n".join(lines[:2]) + "\n")
    resumed = run_search(
        part, resume=True, evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    assert resumed.cell == full.cell
    assert strip_seconds(part / "journal.jsonl") == strip_seconds(
        tmp_path / "full" / "journal.jsonl"
    )


def test_result_counts_the_images_every_candidate_trained_on(tmp_path, one_thread) -> None:
    from autoshrink.training.proxy_settings import ProxyTraining

    cfg = zc_config(
        nodes=3, k=1, per_class=5, training=ProxyTraining(epochs=2, patience=1), screening="none"
    )
    run_search(tmp_path / "r", cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "r" / "journal.jsonl").open()]
    epochs = sum(r["detail"]["epochs"] for r in records if r["type"] == "candidate")
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["images_trained"] == epochs * 5 * 10  # 5 images of each of 10 digits
    assert result["screening"] == {"mode": "none"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--screening", "eventually"], "unknown screening 'eventually'"),
        (["--screening", "zero-cost", "--zc-proxy", "fisher"], "unknown zero-cost proxy 'fisher'"),
        (["--zc-proxy", "synflow"], "--zc-proxy needs --screening zero-cost"),  # was ignored
        (["--screening", "zero-cost", "--strategy", "random"], "does not apply"),
        (["--screening", "zero-cost", "--zc-batch", "1"], "zc_batch must be >= 2"),
    ],
)
def test_bad_screening_input_exits_2_before_training(cli, tmp_path, args, message) -> None:
    code, out, err = cli("search", "--out", tmp_path / "run", *args)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err
    assert not (tmp_path / "run").exists()


def test_config_rejects_zero_cost_for_rnn() -> None:
    with pytest.raises(ConfigError, match="does not apply to task 'rnn'"):
        from autoshrink.presets import preset

        preset("demo", task="rnn", screening="zero-cost")


@pytest.mark.parametrize("threads", [1, 2])
def test_the_ranker_scores_on_the_searchs_threads(threads: int) -> None:
    # --threads reached the candidates' training but not the scoring: on a busy 2-core box the
    # ranker ran at torch's own count, 6.8 s a cell against 0.03 s on one thread
    from autoshrink.evaluators.factory import build_ranker
    from autoshrink.presets import preset

    config = preset("demo", screening="zero-cost", threads=threads, per_class=10, val_size=20)
    ranker = build_ranker(config, lambda key: 0)
    seen: list[int] = []
    ranker._proxy = lambda net, x, y: seen.append(torch.get_num_threads()) or 1.0
    before = torch.get_num_threads()
    torch.set_num_threads(3 - threads)  # the other count, given back after
    try:
        ranker([start_cell("cnn", 4, random.Random(0))])
        assert seen == [threads] and torch.get_num_threads() == 3 - threads
    finally:
        torch.set_num_threads(before)
