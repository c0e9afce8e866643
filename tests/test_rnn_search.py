"""AutoShrink on RNN cells end to end: config, determinism, resume, and the command line."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file, safe_open

from autoshrink.config import SearchConfig
from autoshrink.data.text import Vocabulary, load_text
from autoshrink.errors import ConfigError, DataError
from autoshrink.evaluators.factory import build_evaluator
from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
from autoshrink.graph import Cell
from autoshrink.journal import Journal
from autoshrink.nn.rnn import RNNModel
from autoshrink.objectives import Score
from autoshrink.presets import preset
from autoshrink.search import run_search
from autoshrink.search_loop import make_strategy
from autoshrink.training.proxy_settings import ProxyTraining, RNNProxyTraining
from test_rnn_text import one_thread, write_tiny_corpus  # noqa: F401 (autouse)

QUICK = RNNProxyTraining(nhid=8, epochs=1, batch_size=16, bptt=10, eval_batch_size=4)


def tiny_config(root: Path) -> SearchConfig:
    """4 nodes (6 edges) shrunk to 3 edges, K = 2: 7 candidates of one quick epoch each."""
    return replace(
        preset("demo", task="rnn"),
        data_dir=str(root),
        nodes=4,
        k=2,
        keep_fraction=0.5,
        patience=None,
        threads=1,
        training=QUICK,
    )


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path / "tiny", n_train=60, n_eval=20)


def scores(run_dir: Path) -> dict[str, float]:
    return {r["key"]: r["score"] for r in Journal(run_dir / "journal.jsonl").records()}


def test_presets_follow_the_method() -> None:
    paper = preset("paper", task="rnn")
    assert (paper.nodes, paper.k, paper.keep_fraction) == (6, 10, 0.25)
    assert make_strategy(paper).target_edges == 4  # round(15 * 0.25)
    t = paper.training
    assert (t.nhid, t.train_lines, t.valid_lines) == (100, 4000, 300)
    assert (t.lr, t.batch_size, t.bptt, t.clip, t.epochs, t.patience) == (20, 128, 35, 0.25, 10, 4)
    assert paper.score == Score(
        metric="perplexity", slope=-0.25, offset=200.0, cost="edge_cost", weight=1.0
    )
    # score = 0.25 * (200 - ppl) - (log10(E * nhid^2) - 6): ppl 100, E = 10, nhid = 100
    assert paper.score({"perplexity": 100.0, "edge_cost": 1e5}) == pytest.approx(25.0 + 1.0)
    assert preset("demo", task="rnn").task == "rnn"
    assert preset("demo").task == "cnn"  # the cnn presets are untouched


def test_rnn_config_round_trips_and_rejects_a_cnn_training() -> None:
    config = preset("paper", task="rnn", data_dir="/data/ptb")
    again = SearchConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and isinstance(again.training, RNNProxyTraining)
    with pytest.raises(ConfigError, match="task 'rnn' needs training=RNNProxyTraining"):
        SearchConfig(task="rnn")
    with pytest.raises(ConfigError, match="task 'cnn' needs training=ProxyTraining"):
        SearchConfig(training=RNNProxyTraining())
    assert isinstance(SearchConfig().training, ProxyTraining)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['training.width'\]"):
        SearchConfig.from_dict({"task": "rnn", "training": {"width": 1}})


def test_an_rnn_config_refuses_the_settings_of_cnn_searches() -> None:
    config = preset("demo", task="rnn", data_dir="/data/ptb")
    with pytest.raises(ConfigError, match=r"^width, zc_batch: settings of cnn searches only"):
        replace(config, width=0.5, zc_batch=8)
    with pytest.raises(ConfigError, match=r"^latency: settings of cnn searches only"):
        replace(config, latency=replace(config.latency, batch=4))
    assert replace(config, width=1.0) == config  # at its default: nothing to ignore


def test_the_factory_builds_the_rnn_evaluator(corpus_dir: Path) -> None:
    ev = build_evaluator(tiny_config(corpus_dir))
    assert isinstance(ev, RNNProxyEvaluator) and ev.corpus.ntokens == 14


def test_the_search_neither_reads_nor_warns_about_the_test_split(corpus_dir: Path, caplog) -> None:
    (corpus_dir / "test.txt").unlink()  # its one unseen word would have warned
    with caplog.at_level(logging.WARNING):
        ev = build_evaluator(tiny_config(corpus_dir))
    assert isinstance(ev, RNNProxyEvaluator) and ev.corpus.test is None
    assert "test" not in caplog.text


def test_search_is_deterministic_and_picks_the_best_cell(tmp_path: Path, corpus_dir: Path) -> None:
    config = tiny_config(corpus_dir)
    a = run_search(tmp_path / "a", config, progress=False)
    b = run_search(tmp_path / "b", config, progress=False)
    assert scores(tmp_path / "a") == scores(tmp_path / "b")
    assert a.cell == b.cell and a.cell.kind == "rnn"
    assert a.evaluations == 7  # the complete cell, then 3 steps of K = 2 (6 -> 3 edges)
    recs = Journal(tmp_path / "a" / "journal.jsonl").records()
    best = max(recs, key=lambda r: (r["score"], -r["edges"]))
    assert a.best.proposal.genotype.key == best["key"]
    assert Cell.load(tmp_path / "a" / "best_cell.json") == a.cell
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["task"] == "rnn" and result["best"]["metrics"]["perplexity"] > 1
    assert all(r["metrics"]["edge_cost"] == r["edges"] * 64 for r in recs)


class Crash(Exception):
    pass


def test_a_killed_search_resumes_to_the_same_best_cell(tmp_path: Path, corpus_dir: Path) -> None:
    config = tiny_config(corpus_dir)
    whole = run_search(tmp_path / "whole", config, progress=False)

    def crashing(cfg: SearchConfig):
        ev = build_evaluator(cfg)
        calls = {"n": 0}
        evaluate = ev.evaluate

        def evaluate_then_crash(genotype, seed):
            calls["n"] += 1
            if calls["n"] > 3:
                raise Crash("killed")
            return evaluate(genotype, seed)

        ev.evaluate = evaluate_then_crash
        return ev

    with pytest.raises(Crash):
        run_search(tmp_path / "run", config, evaluator_factory=crashing, progress=False)
    assert len(Journal(tmp_path / "run" / "journal.jsonl").records()) == 3
    resumed = run_search(
        tmp_path / "run", resume=True, progress=False, evaluator_factory=build_evaluator
    )  # the crash only wrapped it
    assert resumed.trained == 4 and resumed.cell == whole.cell
    assert scores(tmp_path / "run") == scores(tmp_path / "whole")


def test_search_cli_end_to_end_and_resume(cli, tmp_path: Path, corpus_dir: Path) -> None:
    out = tmp_path / "run"
    args = [
        "search", "--task", "rnn", "--data", corpus_dir, "--preset", "demo", "--out", out,
        "--nodes", "4", "-k", "2", "--keep-fraction", "0.5", "--epochs", "1",
        "--batch-size", "16", "--executor", "inprocess", "--no-progress",
    ]  # fmt: skip
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert "perplexity" in stdout and "rnn cell" in stdout
    assert re.search(r"\ncomplete cell score -?\d+\.\d{4} \(perplexity \d+\.\d\d\)\n", stdout)
    assert "no score" not in stdout
    assert Cell.load(out / "best_cell.json").kind == "rnn"
    # result.json names the proxy language model: count gives the journal's params and MACs
    result = json.loads((out / "result.json").read_text())
    net, metrics = result["network"], result["best"]["metrics"]
    nhid = json.loads((out / "config.json").read_text())["training"]["nhid"]
    assert net["macro"] == "shrinkrnn-ptb" and net["nhid"] == nhid and net["vocab"] > 1
    code, counted, err = cli("count", out / "best_cell.json", "--nhid", str(net["nhid"]),
                             "--vocab", str(net["vocab"]), "--json")  # fmt: skip
    assert code == 0, err
    assert (json.loads(counted)["params"], json.loads(counted)["macs"]) == (
        metrics["params"],
        metrics["macs"],
    )
    code, stdout, _ = cli("search", "--resume", out, "--executor", "inprocess", "--no-progress")
    assert code == 0 and "0 trained now" in stdout


def test_a_resume_on_other_text_is_refused_before_it_trains(
    cli, tmp_path: Path, corpus_dir: Path
) -> None:
    """``--resume RUN --data DIR`` of a folder with other text (here the training lines in
    reverse: other word ids, same sizes) trained the rest of the search on it, beside the
    journal's candidates of the run's own text; the moved text itself resumes."""
    whole = run_search(tmp_path / "whole", tiny_config(corpus_dir), progress=False)
    run = tmp_path / "run"  # the whole run, killed after its third candidate
    shutil.copytree(tmp_path / "whole", run)
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    (run / "journal.jsonl").write_text("".join(lines[:3]))
    for name in ("result.json", "best_cell.json", "best_cell.png"):
        (run / name).unlink(missing_ok=True)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        text = (corpus_dir / name).read_text().splitlines()
        (other / name).write_text("\n".join(text[::-1] if name == "train.txt" else text) + "\n")
    before = (run / "journal.jsonl").read_bytes()
    flags = ["--executor", "inprocess", "--no-progress"]
    code, _, err = cli("search", "--resume", run, "--data", other, *flags)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{run / 'journal.jsonl'}: its candidates were trained on other data than {other}" in err
    assert (run / "journal.jsonl").read_bytes() == before
    moved = corpus_dir.rename(tmp_path / "moved")
    code, _, err = cli("search", "--resume", run, "--data", moved, *flags)
    assert code == 0, err
    assert (
        scores(run) == scores(tmp_path / "whole")
        and Cell.load(run / "best_cell.json") == whole.cell
    )


def test_search_cli_bad_input(cli, tmp_path: Path) -> None:
    code, _, err = cli("search", "--task", "rnn", "--preset", "demo", "--out", tmp_path / "x")
    assert code == 2 and "--task rnn needs --data DIR" in err and err.count("\n") == 1
    cnn_only = ["--dataset", "cifar10", "--width", "2", "--zc-batch", "8"]  # saved silently before
    code, _, err = cli(
        "search", "--task", "rnn", *cnn_only, "--data", tmp_path, "--out", tmp_path / "x"
    )
    assert (
        code == 2 and "--dataset, --width, --zc-batch: only for --task cnn, not --task rnn" in err
    )
    assert not (tmp_path / "x").exists()
    code, _, err = cli(
        "search", "--task", "rnn", "--data", tmp_path / "nope", "--out", tmp_path / "y",
        "--executor", "inprocess", "--no-progress",
    )  # fmt: skip
    assert code == 2 and "no such folder" in err and err.count("\n") == 1


def test_count_cli_gives_23_0m_for_shrinkrnn(cli) -> None:
    cell = Path(__file__).resolve().parents[1] / "src/autoshrink/cells/shrinkrnn.json"
    code, out, _ = cli("count", cell, "--macro", "shrinkrnn-ptb", "--json")
    assert code == 0 and json.loads(out)["params"] == 23_000_700
    assert (json.loads(out)["nhid"], json.loads(out)["vocab"]) == (745, 10000)
    # the defaults, given: 10k words, nhid 745; and sizes a cnn macro does not take
    code, again, _ = cli("count", cell, "--nhid", "745", "--vocab", "10000", "--json")
    assert code == 0 and json.loads(again) == json.loads(out)
    code, _, err = cli("count", cell, "--macro", "cifar-proxy", "--nhid", "32")
    assert code == 2 and "--nhid: settings of an RNN language model; cifar-proxy has none" in err
    code, _, err = cli("count", cell, "--macro", "cifar-proxy")  # said "got a rnn cell"
    assert code == 2 and "macro cifar-proxy needs a cnn cell, got an rnn cell" in err
    code, _, err = cli("count", cell.with_name("shrinkcnn.json"), "--macro", "shrinkrnn-ptb")
    assert code == 2 and "macro shrinkrnn-ptb needs an rnn cell, got a cnn cell" in err
    code, _, err = cli("count", cell, "--nhid", "0")  # named emsize, which nhid sets
    assert code == 2 and "shrinkrnn-ptb: nhid must be a whole number >= 1, got 0" in err
    code, _, err = cli("count", cell, "--vocab", "1")  # was counted: a model none can build
    assert code == 2 and "shrinkrnn-ptb: a language model needs a vocabulary of >= 2 words" in err


@pytest.mark.parametrize("command", ["latency", "export"])
def test_latency_and_export_say_they_take_cnn_cells(cli, tmp_path: Path, command: str) -> None:
    """They named a macro the user never gave (latency), or blamed the weights (export)."""
    cell = Path(__file__).resolve().parents[1] / "src/autoshrink/cells/shrinkrnn.json"
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"")
    more = ["--weights", weights, "--out", tmp_path / "x"] if command == "export" else []
    code, out, err = cli(command, cell, *more)
    assert (code, out) == (2, "") and err == (
        f"autoshrink: error: {command} takes a cnn cell or an mbconv architecture; {cell} holds "
        "an rnn cell\n"
    )
    assert not (tmp_path / "x").exists()


def test_train_cli_rnn_saves_weights_and_perplexities(cli, tmp_path: Path, corpus_dir) -> None:
    cell = Path(__file__).resolve().parents[1] / "src/autoshrink/cells/shrinkrnn.json"
    out = tmp_path / "train"
    code, stdout, stderr = cli(
        "train", cell, "--task", "rnn", "--data", corpus_dir, "--nhid", "8", "--epochs", "2",
        "--batch-size", "8", "--test-batch-size", "4", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert "validation perplexity" in stdout and "test perplexity" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["batch_size"] == 8 and metrics["recipe"]["lr"] == 20.0
    assert 1 < metrics["val_perplexity"] < 10 * 14 and metrics["test_perplexity"] > 1
    state = load_file(str(out / "weights.safetensors"))
    assert "decoder.weight" not in state  # tied: stored once as encoder.weight
    model = RNNModel(Cell.load(cell), 14, emsize=8, nhid=8)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["decoder.weight"] and not unexpected
    assert sum(p.numel() for p in model.parameters()) == metrics["params"]
    with safe_open(str(out / "weights.safetensors"), framework="pt") as f:
        ties = json.loads(f.metadata()["tied"])
    assert ties == {"decoder.weight": "encoder.weight"}  # what retie() puts back
    corpus = load_text(corpus_dir)  # the weights' rows are the words of vocab.txt, in order
    assert Vocabulary.load(out / "vocab.txt") == corpus.vocab and corpus.ntokens == 14


def test_train_cli_rnn_bad_input(cli, tmp_path: Path, corpus_dir: Path) -> None:
    cnn = Path(__file__).resolve().parents[1] / "src/autoshrink/cells/shrinkcnn.json"
    code, _, err = cli("train", cnn, "--task", "rnn", "--data", corpus_dir, "--out", tmp_path / "o")
    assert code == 2 and err.strip() == (
        f"autoshrink: error: {cnn}: --task rnn needs an rnn cell, got a cnn cell"
    )
    assert not (tmp_path / "o").exists()  # refused before the text is read
    rnn = cnn.with_name("shrinkrnn.json")
    code, _, err = cli("train", rnn, "--task", "rnn")
    assert code == 2 and "needs --data DIR" in err


def test_bad_rnn_settings_fail_before_any_training(corpus_dir: Path) -> None:
    with pytest.raises(ConfigError, match="lr must be finite and > 0, got 0"):
        RNNProxyTraining(lr=0)
    with pytest.raises(ConfigError, match="divergence_factor must be finite and > 0, got nan"):
        RNNProxyTraining(divergence_factor=float("nan"))
    with pytest.raises(ConfigError, match="weight_decay must be finite and >= 0, got -1"):
        RNNProxyTraining(weight_decay=-1)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        preset("demo", task="rnn", training_epochs=0)
    huge = replace(tiny_config(corpus_dir), training=replace(QUICK, batch_size=5000))
    with pytest.raises(DataError, match="too few for batch size 5000"):
        build_evaluator(huge)


def test_the_training_settings_of_each_task_typed():
    rnn, cnn = preset("demo", task="rnn"), preset("demo")
    assert rnn.rnn_training is rnn.training and cnn.cnn_training is cnn.training
    with pytest.raises(ConfigError, match="a task 'rnn' search has no ProxyTraining settings"):
        _ = rnn.cnn_training
    with pytest.raises(ConfigError, match="a task 'cnn' search has no RNNProxyTraining"):
        _ = cnn.rnn_training
