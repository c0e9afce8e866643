"""``autoshrink search --screening progressive``: the schedule, class difficulty, the screened
records, resume, the pool and batched executors, per-class accuracy, and bad input failing
before anything trains."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from autoshrink.config import SearchConfig
from autoshrink.data.images import ProxySplit
from autoshrink.errors import ConfigError
from autoshrink.executors.factory import build_executor
from autoshrink.objectives import Score
from autoshrink.presets import preset
from autoshrink.screening import (
    ClassDifficulty,
    ScreeningStage,
    default_stages,
    evaluator_classes,
    parse_stages,
    stage_evaluator,
    stages_from_json,
)
from autoshrink.search import run_search
from autoshrink.training.classification import evaluate, evaluate_classes


def prog_config(**kw) -> SearchConfig:
    settings = dict(
        dataset="digits",
        nodes=4,
        k=3,
        keep_fraction=0.0,
        seed=3,
        score=Score.cnn(),
        per_class=12,
        val_size=60,
        width=0.25,
        screening="progressive",
        screening_stages=(ScreeningStage(0.5, 1, 0.34),),
    )
    settings["training"] = preset("demo").training.__class__(epochs=2, batch_size=32, patience=2)
    return SearchConfig(**{**settings, **kw})


def records(run_dir, kind="candidate"):
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def strip_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# ------------------------------------------------------------------ the schedule
def test_stages_parse_from_the_command_line_and_from_json(tmp_path) -> None:
    assert parse_stages("5:2:0.5") == (ScreeningStage(5, 2, 0.5),)
    assert parse_stages("0.5:1:0.25, 8:3:0.5") == (
        ScreeningStage(0.5, 1, 0.25),
        ScreeningStage(8, 3, 0.5),
    )
    path = tmp_path / "stages.json"
    path.write_text(json.dumps([{"classes": 4, "epochs": 1, "keep": 0.5}]))
    assert parse_stages(str(path)) == (ScreeningStage(4, 1, 0.5),)
    for bad, match in [
        ("5:2", "CLASSES:EPOCHS:KEEP"),
        ("a:2:0.5", "not numbers"),
        ("5:2:0", "keeps no candidate"),
        ("1:2:0.5", "classes must be >= 2"),
        ("1.5:2:0.5", r"fraction must be in \(0, 1\]"),
        ("5:0:0.5", "epochs must be a whole number >= 1"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_stages(bad)
    with pytest.raises(ConfigError, match="non-empty list"):
        stages_from_json({"classes": 4})
    for content, match in [
        (b"\xff", "not UTF-8 text"),
        (b"[" * 100_000, "JSON nested too deep"),  # was a RecursionError
        (b"[{", "not valid JSON"),
        # a value out of range, or an entry that is no stage: the file and the stage named
        (
            b'[{"classes": 4, "epochs": 1, "keep": 0.5}, {"classes": "x", "epochs": 1, "keep": 1}]',
            "stage 2: screening stage: classes must be a number, got 'x'",
        ),
        (b"[3]", "stage 1 must be an object, got 3"),
        # JSON booleans are no numbers (Python would take true as 1)
        (
            b'[{"classes": 4, "epochs": true, "keep": 0.5}]',
            "stage 1: screening stage: epochs must be a whole number >= 1, got True",
        ),
        (
            b'[{"classes": 4, "epochs": 1, "keep": true}]',
            r"stage 1: screening stage: keep must be in \(0, 1\]",
        ),
        # said in Python's words ("__init__() missing 1 required positional argument")
        (
            b'[{"classes": 4, "epochs": 1}]',
            "stage 1 needs the keys classes, epochs, keep; missing keep",
        ),
        (
            b'[{"classes": 4, "epochs": 1, "keep": 1, "extra": 2}]',
            "stage 1 needs the keys classes, epochs, keep; unknown 'extra'",
        ),
    ]:
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=f"stages.json: {match}"):
            parse_stages(str(path))


def test_class_counts_and_survivors_round_up() -> None:
    assert ScreeningStage(0.5, 1, 0.25).class_count(10) == 5
    assert ScreeningStage(0.3, 1, 0.25).class_count(2) == 2  # at least two classes
    assert ScreeningStage(0.25, 1, 0.25).class_count(10) == 3
    assert [ScreeningStage(2, 1, 0.25).survivors(n) for n in (1, 4, 5, 10)] == [1, 1, 2, 3]
    with pytest.raises(ConfigError, match="names 12 classes; the data set has 10"):
        ScreeningStage(12, 1, 0.5).class_count(10)
    assert default_stages(20) == (ScreeningStage(0.5, 5, 0.25),)
    assert default_stages(3) == (ScreeningStage(0.5, 1, 0.25),)


def test_screening_needs_an_evaluator_of_classes_that_trains_on_some_of_them() -> None:
    class Classes:
        num_classes = 10

        def screening_stage(self, classes: list[int], epochs: int) -> tuple[list[int], int]:
            return classes, epochs

    assert evaluator_classes(Classes()) == 10
    assert stage_evaluator(Classes(), [0, 3], 2) == ([0, 3], 2)
    for evaluator in (object(), lambda cell: {}):  # a tabular lookup, say: no classes to pick
        with pytest.raises(ConfigError, match="needs an image classification proxy, not "):
            evaluator_classes(evaluator)
        with pytest.raises(ConfigError, match="cannot train on a subset of classes"):
            stage_evaluator(evaluator, [0, 3], 2)


def test_class_difficulty_averages_the_ok_records_easiest_first(tmp_path) -> None:
    recs = [
        {"key": "a", "status": "ok", "detail": {"class_accuracy": [0.9, 0.5, 1.0, None]}},
        {"key": "b", "status": "ok", "detail": {"class_accuracy": [0.7, 0.5, 1.0, 0.8]}},
        {"key": "c", "status": "diverged", "detail": {}},
        {"key": "d", "status": "ok", "detail": {}},  # no per-class figures: not counted
    ]
    d = ClassDifficulty.from_records(recs, 4)
    assert d.error == pytest.approx((0.2, 0.5, 0.0, 0.2))
    assert d.order == (2, 0, 3, 1)  # ties (0 and 3) by class index
    assert d.measured_on == ("a", "b")
    assert d.easiest(3) == [0, 2, 3]
    d.save(tmp_path / "d.json", [ScreeningStage(2, 1, 0.5)])
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["stages"][0]["class_ids"] == [0, 2]
    none = ClassDifficulty.from_records(recs[2:], 4)  # nothing measured: natural order
    assert none.order == (0, 1, 2, 3)
    # a class no record measured (no validation image of it) was error 0: the easiest
    unseen = [{"key": "e", "status": "ok", "detail": {"class_accuracy": [0.9, None, 0.6]}}]
    d = ClassDifficulty.from_records(unseen, 3)
    assert d.error == pytest.approx((0.1, 1.0, 0.4)) and d.order == (0, 2, 1)


def test_config_keeps_the_schedule_and_the_fingerprint_of_older_runs() -> None:
    plain = SearchConfig()
    assert "screening_stages" not in plain.search_settings()  # old run folders still resume
    cfg = prog_config()
    again = SearchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert prog_config(screening_stages=()).stages() == default_stages(2)
    with pytest.raises(ConfigError, match="need --screening progressive"):
        SearchConfig(screening_stages=(ScreeningStage(2, 1, 0.5),))
    with pytest.raises(ConfigError, match="not task 'rnn'"):
        preset("demo", task="rnn", screening="progressive")
    with pytest.raises(ConfigError, match="objective 'ood'"):
        prog_config(dataset="rotated-digits", objective="ood")


# ------------------------------------------------------------------ per-class accuracy
def test_class_accuracy_agrees_with_the_overall_accuracy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x, y = torch.randn(50, 3, 2, 2), torch.randint(0, 3, (50,))  # class 3 has no images
    loss, accuracy, per_class = evaluate_classes(model, x, y, batch_size=16)
    assert math.isnan(per_class[3])
    counts = torch.bincount(y, minlength=4).tolist()
    overall = sum(a * n for a, n in zip(per_class[:3], counts[:3], strict=True)) / 50
    assert overall == pytest.approx(accuracy)
    assert (loss, accuracy) == evaluate(model, x, y, 16)


def test_a_restricted_split_keeps_only_the_classes_and_their_labels() -> None:
    rng = np.random.default_rng(0)
    split = ProxySplit(
        rng.random((40, 1, 2, 2), dtype=np.float32),
        np.arange(40) % 4,
        rng.random((20, 1, 2, 2), dtype=np.float32),
        np.arange(20) % 4,
        4,
        (0.0,),
        (1.0,),
    )
    part = split.restricted([3, 1])
    assert set(part.train_y) == {1, 3} and len(part.train_y) == 20 and len(part.val_y) == 10
    assert np.array_equal(part.train_x, split.train_x[np.isin(split.train_y, [1, 3])])
    assert part.num_classes == 4


# ------------------------------------------------------------------ the search
def check_screened_run(run_dir, cfg: SearchConfig) -> list[dict]:
    cands, stages = records(run_dir), records(run_dir, "stage")
    difficulty = json.loads((run_dir / "class_difficulty.json").read_text())
    assert len(difficulty["easiest_first"]) == 10 and len(difficulty["stages"][0]["class_ids"]) == 5
    assert cands[0]["step"] == 0 and "class_accuracy" in cands[0]["detail"]
    assert difficulty["measured_on"] == [cands[0]["key"]]
    (stage,) = cfg.stages()
    for step in sorted({r["step"] for r in cands} - {0}):
        batch = [r for r in cands if r["step"] == step]
        screened = [r for r in batch if r["status"] == "screened"]
        survivors = [r for r in batch if r["status"] != "screened"]
        assert len(survivors) == stage.survivors(len(batch))
        staged = {r["key"]: r for r in stages if r["step"] == step}
        assert set(staged) == {r["key"] for r in batch}  # every candidate was staged once
        best_loser = max((staged[r["key"]]["score"] or -math.inf for r in screened), default=None)
        for r in survivors:  # survivors beat the losers in the stage
            assert best_loser is None or staged[r["key"]]["score"] >= best_loser
            assert r["detail"]["stages"][0]["score"] == pytest.approx(staged[r["key"]]["score"])
        for r in screened:  # a screened record counts its stage's images and seconds
            assert r["score"] is None and r["detail"]["screened_at_stage"] == 1
            assert r["detail"]["images_trained"] == staged[r["key"]]["detail"]["images_trained"]
            assert r["seconds"] == pytest.approx(staged[r["key"]]["seconds"])
    for r in stages:  # a stage trains on half of the classes: its images, one epoch
        assert r["detail"]["images_trained"] == 60 and r["detail"]["epochs"] == 1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["images_trained"] == sum(r["detail"]["images_trained"] for r in cands)
    for r in cands:  # a survivor's images: its full training's and its stage's
        if r["step"] > 0 and r["status"] == "ok":
            assert r["detail"]["images_trained"] == r["detail"]["epochs"] * 120 + 60
    assert result["best"]["key"] not in {r["key"] for r in cands if r["status"] == "screened"}
    assert result["screening"]["mode"] == "progressive"
    assert result["screening"]["this_session"]["screened_out"] == sum(
        r["status"] == "screened" for r in cands
    )
    return cands


def test_progressive_search_screens_each_step_and_resumes_without_retraining(
    tmp_path, one_thread
) -> None:
    cfg = prog_config()
    run_search(tmp_path / "full", cfg, progress=False)
    cands = check_screened_run(tmp_path / "full", cfg)
    assert any(r["status"] == "screened" for r in cands)
    # a search killed after some stage records: the resume trains only what is missing
    lines = (tmp_path / "full" / "journal.jsonl").read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "stage"][4]
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut" / "journal.jsonl").write_text("\n".join(lines[: cut + 1]) + "\n")
    (tmp_path / "cut" / "result.json").unlink()
    run_search(tmp_path / "cut", resume=True, progress=False)
    for kind in ("candidate", "stage"):  # no record twice, none lost, same results
        want = strip_seconds(records(tmp_path / "full", kind))
        assert strip_seconds(records(tmp_path / "cut", kind)) == want
    # screened_out is this session's count, as the other "this_session" figures (it was all)
    kept = [json.loads(line) for line in lines[: cut + 1]]
    before = sum(r["type"] == "candidate" and r["status"] == "screened" for r in kept)
    result = json.loads((tmp_path / "cut" / "result.json").read_text())
    total = sum(r["status"] == "screened" for r in cands)
    assert result["screening"]["this_session"]["screened_out"] == total - before


def test_a_first_batch_a_constraint_rejected_teaches_no_class_difficulty(tmp_path) -> None:
    # it was learnt from rejected records: every class at error 1 (then 0), the stages on
    # classes 0-4 by their ids, and no batch trained unscreened
    from autoshrink.evaluators.factory import build_evaluator
    from autoshrink.search_loop import make_strategy

    base = prog_config()
    complete = build_evaluator(base).profile(make_strategy(base).ask()[0].genotype)
    cfg = prog_config(constraints={"macs": 0.95 * complete["macs"]})
    run_search(tmp_path / "r", cfg, progress=False)
    cands = records(tmp_path / "r")
    assert cands[0]["status"] == "rejected"
    first = min(r["step"] for r in cands if r["status"] == "ok")
    learnt = [r["key"] for r in cands if r["step"] == first and r["status"] == "ok"]
    difficulty = json.loads((tmp_path / "r" / "class_difficulty.json").read_text())
    assert difficulty["measured_on"] == learnt
    assert not [r for r in cands if r["step"] <= first and r["status"] == "screened"]


def test_pool_and_batched_executors_screen_like_the_inprocess_search(tmp_path, one_thread) -> None:
    cfg = prog_config(nodes=3, k=2, screening_stages=(ScreeningStage(4, 1, 0.5),))
    run_search(tmp_path / "inproc", cfg, progress=False, executor=build_executor("inprocess"))
    run_search(tmp_path / "pool", cfg, progress=False, executor=build_executor("pool", 2))
    for kind in ("candidate", "stage"):
        want = sorted(strip_seconds(records(tmp_path / "inproc", kind)), key=lambda r: r["key"])
        got = sorted(strip_seconds(records(tmp_path / "pool", kind)), key=lambda r: r["key"])
        assert got == want
    run_search(tmp_path / "batched", cfg, progress=False, executor=build_executor("batched"))
    ref = {(r["key"], r["status"]) for r in records(tmp_path / "inproc")}
    assert {(r["key"], r["status"]) for r in records(tmp_path / "batched")} == ref
    staged = {r["key"]: r for r in records(tmp_path / "inproc", "stage")}
    for r in records(tmp_path / "batched", "stage"):
        assert r["metrics"]["accuracy"] == pytest.approx(staged[r["key"]]["metrics"]["accuracy"])


def test_bad_schedules_fail_before_anything_trains(tmp_path) -> None:
    cfg = prog_config(screening_stages=(ScreeningStage(11, 1, 0.5),))
    with pytest.raises(ConfigError, match="names 11 classes; the data set has 10"):
        run_search(tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run" / "journal.jsonl").exists() or not records(tmp_path / "run")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--screening-stages", "5:2:0"], "keeps no candidate"),
        (["--screening-stages", "5:2:0.5"], "need --screening progressive"),
        (["--screening", "progressive", "--screening-stages", "20:1:0.5"], "names 20 classes"),
        (["--screening", "sometimes"], "unknown screening 'sometimes'"),
    ],
)
def test_cli_refuses_bad_screening_in_one_line(tmp_path, args, message) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "autoshrink", "search", "--preset", "demo", "--no-progress",
         "--out", str(tmp_path / "run"), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_cli_search_screens_and_says_how_many_were_screened_out(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "autoshrink", "search", "--preset", "demo", "--no-progress",
         "--nodes", "4", "-k", "3", "--epochs", "1", "--per-class", "10", "--val-size", "40",
         "--screening", "progressive", "--executor", "inprocess", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["screening_stages"] == [{"classes": 0.5, "epochs": 1, "keep": 0.25}]
    screened = sum(r["status"] == "screened" for r in records(tmp_path / "r"))
    assert screened and f"({screened} screened out now)" in out.stdout


def test_a_survivors_record_counts_its_stages_images_and_seconds() -> None:
    from autoshrink.evaluators.base import Evaluation
    from autoshrink.screening import StageResult
    from autoshrink.search_records import with_stages

    full = Evaluation({"accuracy": 0.9}, seconds=5.0, detail={"images_trained": 100})
    stage = StageResult(0, "ok", 0.8, {"accuracy": 0.8}, images=40, seconds=2.0)
    merged = with_stages(full, [stage])
    assert merged.seconds == 7.0 and merged.detail["images_trained"] == 140
    assert merged.detail["stages"] == [stage.summary()]


def test_stage_sizes_difficulty_ties_and_images_read_back() -> None:
    from autoshrink.screening import ClassDifficulty, ScreeningStage, StageResult

    assert ScreeningStage(0.1, 1, 0.5).class_count(10) == 2  # at least two classes to tell
    assert ScreeningStage(0.5, 1, 0.5).class_count(10) == 5
    # errors equal to 6 decimals are a tie, broken by class order (not by float noise)
    rec = {"key": "k", "status": "ok", "detail": {"class_accuracy": [0.5, 0.5000004, 0.9]}}
    difficulty = ClassDifficulty.from_records([rec], 3)
    assert difficulty.order == (2, 0, 1) and difficulty.error == (0.5, 0.5, 0.1)
    stage = {"stage": 1, "status": "ok", "score": 0.5, "metrics": {}, "detail": {}}
    assert StageResult.from_record(stage).images == 0  # a stage that reports none trained none


def test_a_stage_keeps_its_best_scores_and_never_a_nan_one(tmp_path) -> None:
    """ProgressiveScreen.screen on scores written by hand: stage 1 keeps ceil(0.4 * 5) = 2 of
    a 0.3, b nan, c 0.9, d 0.5, e diverged, i.e. c and d; stage 2 keeps ceil(0.5 * 2) = 1 of
    c 0.2, d 0.6, i.e. d. A nan score ranks below every number (it compared as neither larger
    nor smaller and left the sort order to chance)."""
    from autoshrink.evaluators.base import Evaluation
    from autoshrink.screening import ProgressiveScreen

    class Classes:
        num_classes = 4

        def screening_stage(self, classes: list[int], epochs: int) -> tuple[list[int], int]:
            return classes, epochs

    given = {
        1: {0: 0.3, 1: math.nan, 2: 0.9, 3: 0.5, 4: None},  # None: the candidate diverged
        2: {2: 0.2, 3: 0.6},
    }
    stages = [ScreeningStage(2, 1, 0.4), ScreeningStage(4, 1, 0.5)]
    records: dict[tuple[str, int], dict] = {}
    screen = ProgressiveScreen(stages, Classes(), lambda m: m["accuracy"], records, tmp_path)
    screen.learn([])
    keys = ["a", "b", "c", "d", "e"]
    asked: list[list[int]] = []

    def run(evaluator, todo):
        stage = 1 if evaluator == ([0, 1], 1) else 2
        asked.append(list(todo))
        for i in todo:
            acc = given[stage][i]
            yield (
                i,
                Evaluation({"accuracy": acc}) if acc is not None else Evaluation({}, "diverged"),
            )

    def journal(i, stage, evaluation, score):
        records[keys[i], stage] = {
            "stage": stage,
            "status": evaluation.status,
            "score": score,
            "metrics": evaluation.metrics,
            "detail": {},
        }

    alive, results = screen.screen(keys, [0, 1, 2, 3, 4], run, journal)
    assert asked == [[0, 1, 2, 3, 4], [2, 3]]
    assert alive == [3]
    assert results[4][0].score == -math.inf and len(results[0]) == 1
    assert [r.score for r in results[3]] == [0.5, 0.6]
