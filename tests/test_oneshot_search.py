"""`--evaluator oneshot`: step 0 trained in full, candidates fine-tuned from the current cell's
weights, weights checkpointed in the run folder, resume and its checks, images trained."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from autoshrink.errors import ConfigError
from autoshrink.evaluators.factory import build_evaluator
from autoshrink.evaluators.oneshot import read_cell_weights, weights_cell
from autoshrink.executors.pool import LocalPoolExecutor
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.search import run_search

TRAIN = 4 * 10  # per_class 4, 10 digit classes


def config(**kw):
    settings = dict(
        nodes=4,
        k=2,
        keep_fraction=0.34,
        patience=None,
        per_class=4,
        val_size=40,
        training_epochs=2,
        threads=1,
        evaluator="oneshot",
    )
    return preset("demo", **{**settings, **kw})


def journal(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines()]
    return [r for r in rows if r["type"] == "candidate"]


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = tmp_path_factory.mktemp("oneshot") / "run"
    result = run_search(run, config(), progress=False)
    return run, result


def test_step0_is_trained_like_standalone_and_candidates_inherit(full, tmp_path):
    run, result = full
    rows = journal(run)
    alone = run_search(
        tmp_path / "alone", config(evaluator="standalone", keep_fraction=0.9), progress=False
    )
    (step0,) = [r for r in rows if r["step"] == 0]
    (ref,) = [r for r in journal(alone.run_dir) if r["step"] == 0]
    assert (
        step0["metrics"] == ref["metrics"] and step0["detail"]["epochs"] == ref["detail"]["epochs"]
    )
    assert step0["detail"]["inherited"] is False
    later = [r for r in rows if r["step"] > 0]
    assert len({r["step"] for r in later}) >= 2
    # each step's candidates have the previous step's winner as parent and train 1 epoch
    winners = {0: step0["key"]}
    for step in sorted({r["step"] for r in later}):
        cands = [r for r in later if r["step"] == step]
        assert {r["detail"]["parent"] for r in cands} == {winners[step - 1]}
        assert all(r["detail"]["inherited"] and r["detail"]["epochs"] == 1 for r in cands)
        best = max(cands, key=lambda r: (r["score"], -r["edges"]))
        winners[step] = best["key"]
    # images trained: the complete cell's epochs plus one epoch per later candidate
    expected = (step0["detail"]["epochs"] + len(later)) * TRAIN
    assert json.loads((run / "result.json").read_text())["images_trained"] == expected
    assert result.images_trained == expected
    # the last winner's weights are the current ones; candidate files are cleaned up
    cell, tensors = read_cell_weights(run / "oneshot" / "current.safetensors")
    assert cell.key == winners[max(winners)]
    assert tensors and list((run / "oneshot" / "candidates").iterdir()) == []


def test_zero_epochs_only_recomputes_bn(tmp_path):
    result = run_search(tmp_path / "r", config(oneshot_epochs=0), progress=False)
    rows = journal(result.run_dir)
    later = [r for r in rows if r["step"] > 0]
    assert later and all(r["detail"]["epochs"] == 0 for r in later)
    assert all(r["detail"]["stop_reason"] == "inherited" for r in later)
    assert all(r["detail"]["bn_images"] == TRAIN for r in later)
    step0 = rows[0]
    assert result.images_trained == step0["detail"]["epochs"] * TRAIN


def test_zero_epochs_of_language_fine_tuning_validate_the_inherited_weights():
    import numpy as np

    from autoshrink.graph import Cell
    from autoshrink.nn.rnn import RNNModel
    from autoshrink.training.inherited import finetune_lm
    from test_rnn_search import QUICK

    model = RNNModel(Cell.complete("rnn", ("input", "tanh", "relu")), 20, emsize=8, nhid=8)
    with torch.no_grad():  # the tied encoder and decoder at zero: every token equally likely
        model.encoder.weight.zero_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    valid = np.arange(400) % 20
    out = finetune_lm(model, valid, valid, QUICK, epochs=0)
    assert out.best_perplexity == pytest.approx(20.0)  # exp(ln 20): uniform over 20 tokens
    assert (out.epochs, out.diverged, out.stop_reason) == (0, False, "inherited")
    assert out.history == [{"epoch": 0, "val_perplexity": out.best_perplexity}]
    assert all(v.equal(before[k]) for k, v in model.state_dict().items())  # nothing trained
    with torch.no_grad():  # all on token 0, which the text never holds: worse than chance
        model.decoder.bias[0] = 50.0
    unseen = 1 + np.arange(400) % 19
    out = finetune_lm(model, unseen, unseen, QUICK, epochs=0)
    assert out.diverged and out.stop_reason == "diverged" and math.isnan(out.best_perplexity)
    with torch.no_grad():
        model.decoder.bias[0] = float("nan")
    out = finetune_lm(model, valid, valid, QUICK, epochs=0)
    assert out.diverged and out.stop_reason == "diverged" and math.isnan(out.best_perplexity)


class Interrupt(Exception):
    pass


class StopAfter:
    """Wraps the one-shot evaluator; raises on the n-th evaluation (a crash mid-step)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def profile(self, cell):
        return self.inner.profile(cell)

    def evaluate(self, cell, seed):
        self.n -= 1
        if self.n < 0:
            raise Interrupt
        return self.inner.evaluate(cell, seed)


def interrupted(tmp_path: Path, n: int) -> Path:
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        run_search(
            run,
            config(),
            evaluator_factory=lambda c: StopAfter(build_evaluator(c), n),
            progress=False,
        )
    return run


def test_resume_mid_step_matches_an_uninterrupted_run(full, tmp_path):
    run = interrupted(tmp_path, 4)  # step 0, step 1 (2 candidates), 1 of step 2
    assert len(journal(run)) == 4
    run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert strip(journal(run)) == strip(journal(full[0]))


def test_resume_with_missing_or_foreign_weights_stops_before_training(full, tmp_path):
    run = interrupted(tmp_path, 4)
    before = (run / "journal.jsonl").read_text()
    current = run / "oneshot" / "current.safetensors"
    saved = current.read_bytes()
    current.unlink()
    with pytest.raises(ConfigError, match="current.safetensors: missing; step 2"):
        run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert (run / "journal.jsonl").read_text() == before
    # a weight file of another cell: the final cell's
    shutil.copy(full[0] / "oneshot" / "current.safetensors", current)
    with pytest.raises(ConfigError, match="holds cell .* but the journal's current cell"):
        run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert (run / "journal.jsonl").read_text() == before
    current.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="current.safetensors: not a readable weight file"):
        run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert (run / "journal.jsonl").read_text() == before
    # the right cell, other tensors (a run of another width or data set): every candidate of
    # the step was journalled "failed" (a size mismatch) and the search went on without them
    current.write_bytes(saved)
    with safe_open(str(current), framework="pt") as f:
        meta = f.metadata()
    # copies: safetensors before 0.8 maps the file, and writing over it under the tensors
    # loaded from it ended the process with a bus error
    tensors = {k: v.clone() for k, v in load_file(str(current)).items()}
    wrong = {**tensors, "classifier.weight": torch.zeros(3, 2), "extra": torch.zeros(1)}
    for bad, said in [
        (wrong, r"\(shape of classifier.weight is \[3, 2\], the network's \[10, \d+\]\)"),
        (
            {k: v for k, v in tensors.items() if k != "classifier.bias"},
            r"\(missing \['classifier.bias'\]\)",
        ),
        ({**tensors, "extra": torch.zeros(1)}, r"\(unexpected \['extra'\]\)"),
    ]:
        save_file(bad, str(current), metadata=meta)
        with pytest.raises(ConfigError, match=f"its tensors are not those of cell .*{said}"):
            run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
        assert (run / "journal.jsonl").read_text() == before
    save_file(tensors, str(current), metadata={k: v for k, v in meta.items() if k != "cell"})
    with pytest.raises(ConfigError, match="file without its cell in its metadata"):  # KeyError
        run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    current.write_bytes(saved)
    run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert strip(journal(run)) == strip(journal(full[0]))


class StopAtProfile:
    """Wraps an evaluator; raises on the n-th cost profile (a kill between two steps, before
    the next one's constraint check)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def profile(self, cell):
        self.n -= 1
        if self.n < 0:
            raise Interrupt
        return self.inner.profile(cell)

    def evaluate(self, cell, seed):
        return self.inner.evaluate(cell, seed)


def test_a_resume_refused_for_its_weights_journals_no_rejection_first(tmp_path):
    """The step's constraint rejections were journalled before its weights were checked, so
    a refused resume ("nothing is trained and the journal is untouched") grew the journal."""
    cfg = config(constraints={"macs": 70000})  # rejects the complete cell and one per step
    run = tmp_path / "run"
    with pytest.raises(Interrupt):  # step 0 and step 1 profiled; stopped at step 2's first
        run_search(
            run,
            cfg,
            evaluator_factory=lambda c: StopAtProfile(build_evaluator(c), 3),
            progress=False,
        )
    assert [(r["step"], r["status"]) for r in journal(run)] == [
        (0, "rejected"),
        (1, "rejected"),
        (1, "ok"),
    ]
    before = (run / "journal.jsonl").read_text()
    (run / "oneshot" / "current.safetensors").unlink()
    with pytest.raises(ConfigError, match="current.safetensors: missing; step 2"):
        run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert (run / "journal.jsonl").read_text() == before


def test_retry_failed_trains_again_only_what_has_its_parents_weights(tmp_path, monkeypatch, caplog):
    """``--resume --retry-failed``, which a search stopped by a failed step says to run, was
    refused ("holds cell ..., but the journal's current cell at step 1 is ..."): a failed
    candidate of an earlier step needs its parent's weights, which a one-shot search does not
    keep. Those stay failed; the last step's candidates, children of the current cell, train."""
    from autoshrink.evaluators import oneshot

    real, calls = oneshot.finetune, {"n": 0}

    def flaky(*args, **kwargs):  # one of step 1's three candidates, all of step 2's
        calls["n"] += 1
        if calls["n"] in {2, 4, 5, 6}:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(oneshot, "finetune", flaky)
    run = tmp_path / "run"
    first = run_search(run, config(nodes=5, k=3, keep_fraction=0.0), progress=False)
    assert first.stopped.startswith("every candidate of step 2 failed")
    monkeypatch.setattr(oneshot, "finetune", real)
    with caplog.at_level(logging.WARNING):
        again = run_search(run, resume=True, retry_failed=True, progress=False)
    assert again.stopped is None and again.trained > 3
    last = {r["key"]: r for r in journal(run)}
    assert [r["step"] for r in last.values() if r["status"] == "failed"] == [1]
    assert [r["status"] for r in last.values() if r["step"] == 2] == ["ok"] * 3
    assert "1 failed candidate(s) of step 1 stay failed" in caplog.text


def test_pool_workers_read_the_parent_weights_from_the_run_folder(full, tmp_path):
    result = run_search(tmp_path / "pool", config(), executor=LocalPoolExecutor(2), progress=False)
    key = lambda r: (r["step"], r["index"])  # noqa: E731 - workers finish in any order
    assert sorted(strip(journal(result.run_dir)), key=key) == sorted(
        strip(journal(full[0])), key=key
    )


def test_bad_oneshot_settings(cli, tmp_path):
    code, _, err = cli(
        "search",
        "--evaluator",
        "oneshot",
        "--oneshot-epochs",
        "-1",
        "--out",
        tmp_path / "x",
        "--no-progress",
    )
    assert code == 2 and err.strip() == "autoshrink: error: oneshot_epochs must be >= 0, got -1"
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="needs strategy autoshrink .*, not 'rea'$"):
        config(strategy="rea")
    with pytest.raises(ConfigError, match="needs score_start true"):
        config(score_start=False)


def test_rnn_cells_inherit_their_edge_matrices(tmp_path):
    from dataclasses import replace

    from autoshrink.graph import Cell
    from autoshrink.nn.inherit import inherit_rnn
    from autoshrink.nn.rnn import RNNModel
    from test_rnn_search import QUICK
    from test_rnn_text import write_tiny_corpus

    parent = Cell.complete("rnn", ("input", "tanh", "relu", "sigmoid"))
    child = parent.remove_edge((0, 1))  # node 1 dead: edges 1->2, 1->3 go too
    trained = RNNModel(parent, 20, emsize=8, nhid=8)
    cut, _ = inherit_rnn(trained, parent, child)
    assert sorted(cut.rnn.edges) == ["e0_2", "e0_3", "e2_3"]
    for name in ("e0_2", "e2_3"):
        assert cut.rnn.edges[name].equal(trained.rnn.edges[name])
    assert cut.rnn.w0.equal(trained.rnn.w0) and cut.encoder.weight.equal(trained.encoder.weight)

    corpus = write_tiny_corpus(tmp_path / "tiny", n_train=60, n_eval=20)
    config = replace(
        preset("demo", task="rnn"), data_dir=str(corpus), nodes=4, k=2, keep_fraction=0.5,
        patience=None, threads=1, training=QUICK, evaluator="oneshot", oneshot_epochs=1,
    )  # fmt: skip
    result = run_search(tmp_path / "rnn", config, progress=False)
    rows = journal(result.run_dir)
    later = [r for r in rows if r["step"] > 0]
    assert rows[0]["detail"]["inherited"] is False
    assert later and all(r["detail"]["inherited"] and r["detail"]["epochs"] == 1 for r in later)
    assert result.images_trained is None
    current = result.run_dir / "oneshot" / "current.safetensors"
    assert weights_cell(current).kind == "rnn"
    assert "decoder.weight" not in load_file(str(current))  # the tied decoder: stored once
    tensors = read_cell_weights(current)[1]
    assert tensors["decoder.weight"] is tensors["encoder.weight"]  # and tied again on loading


def test_ray_tasks_read_the_parent_weights_from_the_run_folder(full, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')
    from autoshrink.executors.ray_executor import RayExecutor

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(num_cpus=2, include_dashboard=False)
    except Exception as err:  # e.g. "node timed out during startup" on an overloaded machine
        pytest.skip(f"a local Ray node did not start: {err}")
    try:
        result = run_search(tmp_path / "ray", config(), executor=RayExecutor(), progress=False)
    finally:
        ray.shutdown()
    key = lambda r: (r["step"], r["index"])  # noqa: E731
    assert sorted(strip(journal(result.run_dir)), key=key) == sorted(
        strip(journal(full[0])), key=key
    )


@pytest.mark.parametrize("screening", ["progressive", "zero-cost"])
def test_oneshot_composes_with_screening_and_resumes(tmp_path, screening):
    from autoshrink.screening import ScreeningStage

    stages = (ScreeningStage(4, 1, 0.5),) if screening == "progressive" else ()
    zc = {"zc_batch": 8} if screening == "zero-cost" else {}  # progressive reads no zc_batch
    cfg = config(k=3, per_class=6, screening=screening, screening_stages=stages, **zc)
    run = tmp_path / "run"
    run_search(run, cfg, progress=False)
    rows = journal(run)
    later = [r for r in rows if r["step"] > 0]
    assert later and all(r["detail"]["inherited"] for r in later if r["status"] == "ok")
    if screening == "progressive":
        screened = [r for r in later if r["status"] == "screened"]
        assert screened and all(r["detail"]["stages"][0]["status"] == "ok" for r in screened)
        stage_rows = [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines()]
        assert all(r["detail"]["inherited"] for r in stage_rows if r["type"] == "stage")
    else:
        assert all("screen_score" in r["meta"] for r in later)
    # a crash at the first full evaluation of step 2 (its stages journalled): the resume
    # gives the uninterrupted run's journal
    crashed = tmp_path / "crashed"

    class StopAfterStaged(StopAfter):
        num_classes = property(lambda self: self.inner.num_classes)

        def screening_stage(self, classes, epochs):
            return self.inner.screening_stage(classes, epochs)

    with pytest.raises(Interrupt):
        run_search(
            crashed,
            cfg,
            evaluator_factory=lambda c: StopAfterStaged(build_evaluator(c), 3),
            progress=False,
        )
    run_search(crashed, resume=True, progress=False, evaluator_factory=build_evaluator)
    every = [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (crashed / "journal.jsonl").read_text().splitlines()]
    assert strip(again) == strip(every)


def test_stacked_fine_tuning_matches_one_by_one(tmp_path, one_thread):
    """The batched executor fine-tunes a step's candidates stacked: in float64, the same
    evaluations and the same saved weights as the one-by-one one-shot evaluator."""
    from dataclasses import replace

    import numpy as np
    import torch

    from autoshrink.evaluators.batched import BatchedCNNEvaluator
    from autoshrink.evaluators.batched_oneshot import BatchedOneShotEvaluator
    from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
    from autoshrink.evaluators.oneshot import CANDIDATES, CURRENT, OneShotEvaluator
    from autoshrink.evaluators.oneshot import save_cell_weights as save
    from autoshrink.graph import Cell

    base = build_evaluator(config(per_class=8)).inner
    s = base.split
    split = replace(s, train_x=s.train_x.astype(np.float64), val_x=s.val_x.astype(np.float64))
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        proxy = CNNProxyEvaluator(split, base.macro, base.training)
        parent = Cell.complete("cnn", ("input", "sep3x3", "conv1x1", "sep3x3"), "relu")
        _, model = proxy.fit(parent, 11)
        cells = [parent.remove_edge(e) for e in parent.edges[:3]]
        seeds = [3, 4, 5]
        results, folders = {}, {}
        for name in ("alone", "stacked"):
            folders[name] = tmp_path / name
            (folders[name] / CANDIDATES).mkdir(parents=True)
            save(folders[name] / CURRENT, parent, model)
            one = OneShotEvaluator(proxy, 1, folders[name])
            if name == "alone":
                results[name] = [one.evaluate(c, s) for c, s in zip(cells, seeds, strict=True)]
            else:
                assert BatchedOneShotEvaluator.applies(one)
                results[name] = BatchedOneShotEvaluator(one).evaluate_many(cells, seeds)
    finally:
        torch.set_default_dtype(before)
    for cell, a, b in zip(cells, results["alone"], results["stacked"], strict=True):
        assert b.detail.pop("batch") == 3
        assert a.status == b.status == "ok" and a.detail == b.detail
        assert b.metrics == pytest.approx(a.metrics, rel=1e-9)
        wa = read_cell_weights(folders["alone"] / CANDIDATES / f"{cell.key}.safetensors")[1]
        wb = read_cell_weights(folders["stacked"] / CANDIDATES / f"{cell.key}.safetensors")[1]
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.allclose(wa[name], wb[name], atol=1e-9, rtol=1e-7), name
        inherited = read_cell_weights(folders["alone"] / CURRENT)[1]  # the weights did move
        assert not torch.allclose(wa["stem.0.weight"], inherited["stem.0.weight"])
    assert not BatchedOneShotEvaluator.applies(OneShotEvaluator(proxy, 0))
    on_gpu = CNNProxyEvaluator(split, base.macro, base.training, device="cuda")
    assert BatchedCNNEvaluator.from_proxy(on_gpu).stacks_single
    one_on_gpu = OneShotEvaluator(on_gpu, 1, tmp_path / "gpu")
    assert not BatchedOneShotEvaluator(one_on_gpu).stacks_single  # step 0: from scratch, alone


def test_a_oneshot_search_on_the_batched_executor_stacks_each_step(tmp_path, one_thread):
    from autoshrink.executors.factory import build_executor

    run_search(tmp_path / "b", config(k=3), executor=build_executor("batched"), progress=False)
    later = [r for r in journal(tmp_path / "b") if r["step"] > 0 and r["status"] == "ok"]
    assert later and all(r["detail"]["inherited"] for r in later)
    assert any(r["detail"]["batch"] > 1 for r in later)
    assert (tmp_path / "b" / "oneshot" / "current.safetensors").is_file()


def test_an_rnn_oneshot_evaluator_has_no_screening_stages(tmp_path):
    from autoshrink.data.text import load_text
    from autoshrink.evaluators.oneshot import OneShotEvaluator
    from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
    from test_rnn_search import QUICK
    from test_rnn_text import write_tiny_corpus

    corpus = load_text(write_tiny_corpus(tmp_path / "tiny", n_train=60, n_eval=20))
    evaluator = OneShotEvaluator(RNNProxyEvaluator(corpus, QUICK), epochs=1)
    with pytest.raises(ConfigError, match="progressive screening stages are for CNN cells"):
        evaluator.screening_stage([0, 1], 1)


# A winner that the journal already held: the same cell, reached by another removal path, lost
# in an earlier step (with another parent), so its weights of that step were deleted. On this
# proxy (5 nodes, K = 3, seed 29) the winner of step 3 is step 2's candidate 4432757...; with
# K = 2, seed 24, step 6's only candidate is step 5's loser 93df11f0 (nothing trains in step 6).
REUSED = {"k3-seed29": dict(nodes=5, k=3, seed=29), "k2-seed24": dict(nodes=5, k=2, seed=24)}


def reused_config(name: str):
    return config(keep_fraction=0.0, **REUSED[name])


def reused_winners(rows: list[dict]) -> list[tuple[int, str]]:
    """``(step, key)`` of each step whose winner's record is from an earlier step: the next
    step's candidates name their parent."""
    first = {r["key"]: r["step"] for r in reversed(rows)}
    parents = {r["step"]: r["detail"]["parent"] for r in rows if r["step"] > 0}
    return [(s - 1, key) for s, key in sorted(parents.items()) if first[key] < s - 1]


def tensors_of(path: Path) -> dict:
    return read_cell_weights(path)[1]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.fixture(scope="module")
def reused(tmp_path_factory):
    run = tmp_path_factory.mktemp("reused") / "run"
    return run, run_search(run, reused_config("k3-seed29"), progress=False)


@pytest.mark.parametrize("name", sorted(REUSED))
def test_a_winner_reused_from_an_earlier_step_gets_weights_and_the_search_finishes(
    name, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="autoshrink.evaluators.oneshot")
    run = tmp_path / "run"
    result = run_search(run, reused_config(name), progress=False)  # was: ConfigError
    rows = journal(run)
    assert reused_winners(rows), "the proxy no longer reuses a winner: pick another seed"
    assert result.best is not None and (run / "result.json").is_file()
    cell, _ = read_cell_weights(run / "oneshot" / "current.safetensors")
    assert cell.key == rows[-1]["key"]  # the last step's winner (its single candidate)
    assert list((run / "oneshot" / "candidates").iterdir()) == []
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    derived = [r.getMessage() for r in caplog.records if "deriving its weights" in r.getMessage()]
    assert [m.split()[3] for m in derived] == [key for _, key in reused_winners(rows)]


def kill_and_resume(tmp_path, monkeypatch, caplog, n: int | None):
    """The k3-seed29 search stopped at its ``n``-th evaluation, or (``None``) in the middle of
    deriving the reused winner's weights (its step's records journalled), then resumed."""
    from autoshrink.evaluators.oneshot import WeightTrail

    run = tmp_path / "run"
    if n is None:
        derive, derived = WeightTrail.derive, []

        def stop(self, cell, parent, step):
            derive(self, cell, parent, step)  # the weights written, not yet promoted
            derived.append(cell.key)
            raise Interrupt

        with monkeypatch.context() as m, pytest.raises(Interrupt):
            m.setattr(WeightTrail, "derive", stop)
            run_search(run, reused_config("k3-seed29"), progress=False)
        (key,) = derived
        assert (run / "oneshot" / "candidates" / f"{key}.safetensors").is_file()
        assert weights_cell(run / "oneshot" / "current.safetensors").key != key
    else:
        with pytest.raises(Interrupt):
            run_search(
                run,
                reused_config("k3-seed29"),
                evaluator_factory=lambda c: StopAfter(build_evaluator(c), n),
                progress=False,
            )
    before = len(journal(run))
    caplog.clear()
    result = run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    wrapped = f"{run}: its candidates were scored by test_oneshot_search.kill_and_resume.<locals>"
    assert warned == (
        [] if n is None else [f"{wrapped}.<lambda>; the built-in evaluator scores the rest"]
    )
    return run, result, before


@pytest.mark.parametrize("n", [7, 8, 9, None], ids=["before", "mid", "after", "deriving"])
def test_a_killed_search_with_a_reused_winner_resumes_to_the_uninterrupted_result(
    n, reused, tmp_path, monkeypatch, caplog
):
    full_run, full_result = reused
    run, result, before = kill_and_resume(tmp_path, monkeypatch, caplog, n)
    assert strip(journal(run)) == strip(journal(full_run))
    assert result.trained == len(journal(run)) - before  # nothing journalled trains again
    assert result.best.proposal.genotype.key == full_result.best.proposal.genotype.key
    assert same_tensors(
        tensors_of(run / "oneshot" / "current.safetensors"),
        tensors_of(full_run / "oneshot" / "current.safetensors"),
    )
    assert list((run / "oneshot" / "candidates").iterdir()) == []


def test_a_resume_of_a_finished_oneshot_search_warns_nothing(full, caplog):
    run, _ = full
    current = run / "oneshot" / "current.safetensors"
    held = tensors_of(current)
    caplog.clear()
    result = run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator)
    assert result.trained == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert same_tensors(tensors_of(current), held)


def test_the_weight_trail_derives_a_reused_winner_from_the_step_parent(tmp_path, caplog):
    """At the WeightTrail level: step 1's loser C (removing 0->1 kills node 1, and 1->2 with
    it) is step 2's candidate again, from step 1's winner W; it wins there on its step-1
    record. Its weights become W's weights fine-tuned to C with C's recorded seed -- what a
    candidate of step 2 gets -- and a replay of the steps (a resume) changes and says nothing."""
    from types import SimpleNamespace

    from autoshrink.evaluators.oneshot import (
        CANDIDATES,
        CURRENT,
        OneShotEvaluator,
        bind_weight_trail,
        find_oneshot,
    )
    from autoshrink.graph import Cell
    from autoshrink.strategies.base import Proposal

    oneshot = find_oneshot(build_evaluator(config()))
    run = tmp_path / "run"
    run.mkdir()
    trail = bind_weight_trail(oneshot, run)  # the evaluator's folder: run/oneshot
    parent = Cell.complete("cnn", ("input", "sep3x3", "conv1x1", "sep3x3"), "relu")
    c, w = parent.remove_edge((0, 1)), parent.remove_edge((1, 2))
    d = w.remove_edge((2, 3))
    assert w.remove_edge((0, 1)) == c and c.key != d.key
    seeds = {parent.key: 1, c.key: 11, w.key: 12, d.key: 13}
    steps = [([parent], [parent], parent), ([parent], [c, w], w), ([w], [c, d], c)]

    def step(n: int, train: bool) -> None:
        (before,), cells, winner = steps[n]
        proposals = [Proposal(x, n) for x in cells]
        todo = [x for x in cells if train and (n < 2 or x != c)]  # c: journalled in step 1
        trail.before_step(SimpleNamespace(current=before), proposals, len(todo))
        with open(run / "journal.jsonl", "a") as f:
            for x in todo:
                assert oneshot.evaluate(x, seeds[x.key]).status == "ok"
                rec = {"type": "candidate", "step": n, "key": x.key, "seed": seeds[x.key]}
                f.write(json.dumps(rec | {"status": "ok", "detail": {}}) + "\n")
        trail.after_step(SimpleNamespace(current=winner), proposals)

    step(0, train=True)
    step(1, train=True)
    trained_w = tmp_path / "w.safetensors"  # W's fine-tuned weights, step 2's parent
    shutil.copy(oneshot.folder / CURRENT, trained_w)
    step(2, train=True)
    current = oneshot.folder / CURRENT
    assert weights_cell(current).key == c.key
    assert list((oneshot.folder / CANDIDATES).iterdir()) == []
    held = tensors_of(current)
    # the reference: C evaluated as a candidate of step 2, from W's weights, with its seed
    ref = OneShotEvaluator(oneshot.inner, oneshot.epochs, tmp_path / "ref")
    (tmp_path / "ref").mkdir()
    shutil.copy(trained_w, tmp_path / "ref" / CURRENT)
    ref.evaluate(c, seeds[c.key])
    assert same_tensors(held, tensors_of(tmp_path / "ref" / CANDIDATES / f"{c.key}.safetensors"))
    assert not same_tensors(held, tensors_of(trained_w))
    # a resume replays the steps, trains nothing: the weights stay, nothing is logged
    caplog.clear()
    for n in range(3):
        step(n, train=False)
    assert same_tensors(tensors_of(current), held)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("journalled", [True, False])
def test_a_derivation_without_weights_stops_the_search_in_one_line(tmp_path, journalled):
    """A winner whose derived fine-tune diverges has no weights to go on from: a ConfigError
    naming the step, the cell and the status, before the next step trains; so has a winner
    the journal holds no record of (no seed to derive it with)."""
    from types import SimpleNamespace

    from autoshrink.evaluators.base import Evaluation
    from autoshrink.evaluators.oneshot import CURRENT, WeightTrail, save_cell_weights
    from autoshrink.graph import Cell
    from autoshrink.nn.cnn import build_network
    from autoshrink.strategies.base import Proposal

    parent = Cell.complete("cnn", ("input", "sep3x3", "conv1x1", "sep3x3"), "relu")
    cell = parent.remove_edge((0, 1))
    run = tmp_path / "run"
    macro = build_evaluator(config()).inner.macro
    save_cell_weights(run / "oneshot" / CURRENT, parent, build_network(parent, macro))
    rec = {"type": "candidate", "step": 1, "key": cell.key, "seed": 5, "status": "ok"}
    (run / "journal.jsonl").write_text(
        json.dumps(rec | {"detail": {}}) + "\n" if journalled else ""
    )
    diverges = SimpleNamespace(evaluate=lambda c, seed: Evaluation({}, "diverged"))
    trail = WeightTrail(run / "oneshot", diverges)
    proposals = [Proposal(cell, 2)]
    trail.before_step(SimpleNamespace(current=parent), proposals, 0)
    said = f"step 2's winner {cell.key}: .* ended 'diverged'"
    if not journalled:
        said = f"run/journal.jsonl: no record of the step's winner {cell.key}$"
    with pytest.raises(ConfigError, match=said):
        trail.after_step(SimpleNamespace(current=cell), proposals)
    assert weights_cell(run / "oneshot" / CURRENT).key == parent.key


@pytest.mark.parametrize("executor", ["inprocess", "batched"])
def test_while_a_constraint_rejects_every_cell_candidates_train_from_scratch(
    tmp_path, executor, caplog
):
    # the first cells under the limit had no parent weights to inherit: the search stopped
    # with "current.safetensors: missing" and no resume could get past it
    from autoshrink.search_loop import make_strategy

    base = config(nodes=5, k=3, keep_fraction=0.3)
    complete = build_evaluator(base).profile(make_strategy(base).ask()[0].genotype)
    cfg = config(nodes=5, k=3, keep_fraction=0.3, constraints={"macs": 0.85 * complete["macs"]})
    run = tmp_path / "run"
    from autoshrink.executors.factory import build_executor

    with caplog.at_level(logging.WARNING):  # the stacks no longer fail first and retry in halves
        result = run_search(run, cfg, executor=build_executor(executor), progress=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    rows = journal(run)
    assert rows[0]["status"] == "rejected" and result.best is not None
    trained = [r for r in rows if r["status"] == "ok"]
    first = min(r["step"] for r in trained)
    assert all(not r["detail"]["inherited"] for r in trained if r["step"] == first)
    assert all(r["detail"]["inherited"] for r in trained if r["step"] > first)
    assert (
        run_search(run, resume=True, progress=False, evaluator_factory=build_evaluator).trained == 0
    )
    if executor != "inprocess":
        return
    # stopped after the first candidate that trained: the resume said "current.safetensors:
    # missing" (that record counted as weights, which are written only when a step ends)
    calls = {"n": 0}

    def stops_at_the_second(c):
        evaluator = build_evaluator(c)
        evaluate = evaluator.evaluate

        def counted(cell, seed):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return evaluate(cell, seed)

        evaluator.evaluate = counted
        return evaluator

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_search(cut, cfg, evaluator_factory=stops_at_the_second, progress=False)
    assert [r["status"] for r in journal(cut)].count("ok") == 1
    again = run_search(cut, resume=True, progress=False, evaluator_factory=stops_at_the_second)
    assert strip(journal(cut)) == strip(rows) and again.best.proposal.genotype.key == (
        result.best.proposal.genotype.key
    )


def test_a_weight_file_that_is_not_one_shot_weights_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "autoshrink.weights/1"})
    with pytest.raises(ConfigError, match="not a one-shot weight file .format 'autoshrink.weig"):
        weights_cell(path)
    save_file({"x": torch.zeros(2)}, str(path))  # no metadata
    with pytest.raises(ConfigError, match=r"w.safetensors: not a one-shot weight file \(format No"):
        read_cell_weights(path)
    path.write_bytes(b"\x00" * 5)
    with pytest.raises(ConfigError, match="w.safetensors: not a readable weight file"):
        weights_cell(path)


def test_a_one_shot_evaluator_refuses_negative_epochs_and_needs_its_run_folder(tmp_path):
    from autoshrink.evaluators.oneshot import OneShotEvaluator, bind_weight_trail

    inner = build_evaluator(config(evaluator="standalone"))
    with pytest.raises(ConfigError, match="oneshot epochs must be >= 0, got -1"):
        OneShotEvaluator(inner, -1)
    evaluator = OneShotEvaluator(inner, 0)
    with pytest.raises(ConfigError, match=r"needs a run folder \(bind_weight_trail\)"):
        evaluator.weights_folder()
    assert bind_weight_trail(inner, tmp_path) is None  # a standalone evaluator keeps no trail
    assert bind_weight_trail(evaluator, tmp_path) is not None
    assert evaluator.weights_folder() == (tmp_path / "oneshot").resolve()


def test_the_complete_cell_trains_from_scratch_even_beside_a_parents_weights(full, tmp_path):
    """Only a sub-cell of the current cell inherits; the complete cell (the start of any
    trajectory) is trained with the full protocol, as the standalone evaluator trains it."""
    from autoshrink.evaluators.oneshot import bind_weight_trail

    run, _ = full
    shutil.copytree(run / "oneshot", tmp_path / "oneshot")
    (step0,) = [r for r in journal(run) if r["step"] == 0]
    evaluator = build_evaluator(config())
    bind_weight_trail(evaluator, tmp_path)
    assert weights_cell(tmp_path / "oneshot" / "current.safetensors").key != step0["key"]
    complete = Cell.from_dict(step0["cell"])
    assert complete.num_edges == complete.num_nodes * (complete.num_nodes - 1) // 2
    out = evaluator.evaluate(complete, step0["seed"])
    assert out.detail["inherited"] is False and "parent" not in out.detail
    assert out.metrics == step0["metrics"]


def test_recomputed_bn_statistics_are_the_average_over_the_training_images():
    """recompute_bn_statistics with 3 batches of 4: running_mean is the mean of the batch means
    (= the mean over all 12 images), running_var the mean of the unbiased batch variances, as
    computed here with torch's own reductions on the conv's output; the weights, the momentum
    and the eval mode are as before (a momentum left at 0.1 blended them with the reset 0 / 1;
    without the reset, the parent's 100 batches outweighed the 3 new ones)."""
    from torch import nn

    from autoshrink.training.inherited import recompute_bn_statistics

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)
    model = nn.Sequential(conv, bn).eval()
    bn.running_mean.fill_(5.0)  # the statistics of a parent trained for 100 batches
    bn.running_var.fill_(9.0)
    bn.num_batches_tracked.fill_(100)
    x = torch.randn(12, 2, 6, 6) * 2 + 1
    weights = {k: v.clone() for k, v in model.named_parameters()}
    recompute_bn_statistics(model, x, 4)
    with torch.no_grad():
        h = conv(x).view(3, 4, 3, 4, 4).transpose(1, 2).reshape(3, 3, -1)  # [batch, ch, values]
    torch.testing.assert_close(bn.running_mean, h.mean(-1).mean(0))
    torch.testing.assert_close(bn.running_var, h.var(-1, unbiased=True).mean(0))
    assert bn.momentum == 0.1 and not model.training
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in weights.items())


def test_zero_epochs_of_fine_tuning_validate_with_recomputed_statistics():
    """finetune(epochs=0): one batch of all 12 images, so running_mean is the per-channel
    mean of the conv's output over them (not the parent's 5), no weight moves, and the stop
    reason says the weights are as inherited."""
    from torch import nn

    from autoshrink.training.inherited import finetune
    from autoshrink.training.proxy_settings import ProxyTraining

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)
    model = nn.Sequential(conv, bn, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    bn.running_mean.fill_(5.0)
    x, y = torch.randn(12, 2, 6, 6), torch.randint(0, 2, (12,))
    out = finetune(model, (x, y), (x[:4], y[:4]), ProxyTraining(batch_size=16), 0,
                   torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        want = conv(x).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, want)
    assert (out.stop_reason, out.epochs) == ("inherited", 0) and not model.training


def test_a_screening_stage_of_one_shot_never_fine_tunes_longer_than_a_candidate():
    """OneShotEvaluator.screening_stage: a stage of 3 epochs over a one-shot evaluator of 1
    fine-tunes 1 (the stage cannot cost more than the full protocol it screens for), one of 3
    over 5 fine-tunes 3; over 0 epochs it recomputes statistics only (its inner stage asks
    for at least 1 epoch, which it does not train)."""
    from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
    from autoshrink.evaluators.oneshot import OneShotEvaluator

    inner = CNNProxyEvaluator.__new__(CNNProxyEvaluator)  # only its screening_stage is read
    inner.screening_stage = lambda classes, epochs: ("stage", list(classes), epochs)  # type: ignore[method-assign]
    for own, asked, want, inner_epochs in ((1, 3, 1, 1), (5, 3, 3, 3), (0, 3, 0, 1)):
        stage = OneShotEvaluator(inner, own).screening_stage([0, 2], asked)
        assert (stage.epochs, stage.inner) == (want, ("stage", [0, 2], inner_epochs))
