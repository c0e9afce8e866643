"""A strategy of one's own (``strategy="custom"`` with ``run_search``'s ``strategy_factory``):
it runs, journals, resumes from a cut journal, and the run folder insists on its factory."""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.search import run_search
from autoshrink.strategies.base import AskTellBase, Observation, Proposal, preferred
from test_search import ToyEvaluator, strip_seconds, toy_config


class DropOneAtRandom(AskTellBase):
    """Scores the start cell, then each step tries ``k`` random single-edge removals of the
    kept cell and keeps the best, down to ``config.budget`` edges (a setting it reads)."""

    def __init__(self, config: SearchConfig, start: Cell, rng: random.Random) -> None:
        super().__init__(rng)
        self.cell, self.k, self.floor = start, config.k, config.budget or 1
        self.end_reason: str | None = None

    @property
    def max_steps(self) -> int:
        return self.cell.num_edges

    def describe(self) -> str:
        return f"step {self.step}"

    def ask(self) -> list[Proposal]:
        if not self._pending and self.step == 0:
            self._pending = [Proposal(self.cell, 0)]
        elif not self._pending and self.cell.num_edges > self.floor:
            edges = self._rng.sample(self.cell.edges, min(self.k, self.cell.num_edges))
            self._pending = [Proposal(self.cell.remove_edge(e), self.step) for e in edges]
        elif not self._pending:
            self.end_reason = f"{self.floor} edges left"
        return list(self._pending)

    def tell(self, observations: Sequence[Observation]) -> None:
        self._accept(observations)
        self.cell = max(observations, key=preferred).proposal.genotype
        self.step += 1


def drop_one(config: SearchConfig, start: Cell, rng: random.Random) -> DropOneAtRandom:
    return DropOneAtRandom(config, start, rng)


def also_drop_one(config: SearchConfig, start: Cell, rng: random.Random) -> DropOneAtRandom:
    return DropOneAtRandom(config, start, rng)


def custom(**kw: object) -> SearchConfig:
    return toy_config(strategy="custom", k=3, budget=4, **kw)


def toy(config: SearchConfig) -> ToyEvaluator:
    return ToyEvaluator()


def test_a_custom_strategy_runs_and_resumes_a_cut_journal_without_retraining(tmp_path) -> None:
    full = run_search(
        tmp_path / "full", custom(), evaluator_factory=toy, strategy_factory=drop_one,
        progress=False,
    )  # fmt: skip
    assert full.start is not None and full.start.proposal.genotype.num_edges == 15  # step 0
    assert full.cell.num_edges >= 4 and full.ended == "4 edges left"
    saved = json.loads((tmp_path / "full" / "fingerprint.json").read_text())
    assert saved["strategy"] == f"{__name__}.drop_one" and saved["evaluator"] == f"{__name__}.toy"
    lines = (tmp_path / "full" / "journal.jsonl").read_text().splitlines()
    part = tmp_path / "part"
    part.mkdir()
    for name in ("config.json", "fingerprint.json"):
        shutil.copy(tmp_path / "full" / name, part / name)
    (part / "journal.jsonl").write_text("\n".join(lines[:7]) + "\n")  # killed after 7 records
    ev = ToyEvaluator()
    resumed = run_search(
        part, resume=True, evaluator_factory=lambda c: ev, strategy_factory=drop_one,
        progress=False,
    )  # fmt: skip
    assert ev.calls == len(lines) - 7 and resumed.cell == full.cell
    journal = strip_seconds(tmp_path / "full" / "journal.jsonl")
    assert strip_seconds(part / "journal.jsonl") == journal


def test_a_resumed_steps_bar_starts_at_the_candidates_the_journal_holds(
    tmp_path, monkeypatch
) -> None:
    import autoshrink.search_loop

    run_search(
        tmp_path / "full", custom(), evaluator_factory=toy, strategy_factory=drop_one,
        progress=False,
    )  # fmt: skip
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    lines = (part / "journal.jsonl").read_text().splitlines()
    (part / "journal.jsonl").write_text("\n".join(lines[:6]) + "\n")  # 2 of step 2's 3 cells
    (part / "result.json").unlink()
    bars: list[tuple[int, int]] = []
    real = autoshrink.search_loop.tqdm

    def recorded(*args: object, **kwargs: object) -> object:
        if kwargs.get("unit") == "cand":
            bars.append((kwargs["total"], kwargs["initial"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(autoshrink.search_loop, "tqdm", recorded)
    run_search(part, resume=True, evaluator_factory=toy, strategy_factory=drop_one, progress=False)
    assert bars[:4] == [(1, 1), (3, 3), (3, 2), (3, 0)]  # steps 0-2 replayed, then new ones


def test_a_custom_run_resumes_only_with_its_own_factory(tmp_path, cli) -> None:
    run = tmp_path / "r"
    run_search(run, custom(), evaluator_factory=toy, strategy_factory=drop_one, progress=False)
    before = (run / "journal.jsonl").read_bytes()
    made_by = r"made by the strategy_factory \S*test_custom_strategy\.drop_one; resume it with "
    with pytest.raises(ConfigError, match=made_by + "that one, from Python"):
        run_search(run, resume=True, evaluator_factory=toy, progress=False)
    with pytest.raises(ConfigError, match=made_by + r"that one, not with \S*\.also_drop_one \("):
        run_search(
            run, resume=True, evaluator_factory=toy, strategy_factory=also_drop_one,
            progress=False,
        )  # fmt: skip
    code, _, err = cli("search", "--resume", run)  # the command line has no factory to give
    assert code == 2 and "the command line cannot give one" in err
    assert re.search(made_by, err), err  # it named no factory, only "a strategy_factory"
    assert (run / "journal.jsonl").read_bytes() == before
    again = run_search(
        run, resume=True, evaluator_factory=toy, strategy_factory=drop_one, progress=False
    )
    assert again.trained == 0


def test_a_built_in_run_refuses_a_strategy_factory_on_resume(tmp_path) -> None:
    run = tmp_path / "r"
    run_search(run, toy_config(k=2), evaluator_factory=toy, progress=False)
    with pytest.raises(ConfigError, match="the built-in one its config names; resume it without"):
        run_search(
            run, resume=True, evaluator_factory=toy, strategy_factory=drop_one, progress=False
        )


@pytest.mark.parametrize(
    "config, factory, message",
    [
        (custom(), None, "strategy 'custom' is made by a strategy_factory"),
        (toy_config(), drop_one, "the config's strategy is 'autoshrink'"),
        (
            custom(),
            lambda config, start, rng: object(),
            r"returned a object, which lacks ask, tell, best, max_steps, describe, end_reason",
        ),
    ],
)
def test_a_strategy_factory_and_the_config_must_agree(tmp_path, config, factory, message):
    run = tmp_path / "r"
    with pytest.raises(ConfigError, match=message):
        run_search(run, config, evaluator_factory=toy, strategy_factory=factory, progress=False)
    assert not run.exists()


def test_a_custom_strategy_may_read_every_strategy_setting() -> None:
    config = preset("demo", strategy="custom", patience=2, population_size=4, budget=9)
    assert (config.patience, config.population_size, config.budget) == (2, 4, 9)
    with pytest.raises(ConfigError, match="patience needs strategy autoshrink"):
        preset("demo", strategy="random", patience=2)


def test_the_command_line_offers_the_built_in_strategies_only(capsys, tmp_path: Path) -> None:
    from autoshrink.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["search", "--strategy", "custom", "--out", str(tmp_path / "r")])
    assert stop.value.code == 2 and "invalid choice: 'custom'" in capsys.readouterr().err


def test_an_older_folder_resumed_with_a_wrong_factory_keeps_no_fingerprint(tmp_path) -> None:
    run = tmp_path / "r"
    run_search(run, toy_config(k=2), evaluator_factory=toy, progress=False)
    (run / "fingerprint.json").unlink()  # a folder made before there were fingerprints
    with pytest.raises(ConfigError, match="the config's strategy is 'autoshrink'"):
        run_search(run, resume=True, evaluator_factory=toy, strategy_factory=drop_one,
                   progress=False)  # fmt: skip
    assert not (run / "fingerprint.json").exists()  # nothing recorded of the refused factory
    again = run_search(run, resume=True, evaluator_factory=toy, progress=False)
    assert again.trained == 0 and json.loads((run / "fingerprint.json").read_text())[
        "strategy"] is None  # fmt: skip


def test_a_stopped_baseline_keeps_no_cell_to_say_of(tmp_path) -> None:
    from autoshrink.report.folder import write_report

    run = tmp_path / "random"
    run_search(run, toy_config(strategy="random", k=3, budget=7), evaluator_factory=toy,
               progress=False)  # fmt: skip
    (run / "result.json").unlink()  # stopped before its end
    assert "step in progress" not in write_report(run).read_text()  # batches keep no cell


class Misbehaving(DropOneAtRandom):
    """DropOneAtRandom with one fault of a user's own strategy, by name."""

    fault = ""

    def ask(self) -> list[Proposal]:
        batch = super().ask()
        if not batch:
            return batch
        step = batch[0].step
        if self.fault == "every step is step 0":
            return [Proposal(p.genotype, 0) for p in batch]
        if self.fault == "steps from -1":
            return [Proposal(p.genotype, p.step - 1) for p in batch]
        if self.fault == "float steps":
            return [Proposal(p.genotype, float(p.step)) for p in batch]
        if self.fault == "bool steps":
            return [Proposal(p.genotype, bool(p.step)) for p in batch]
        if self.fault == "a genotype of text":
            return [Proposal(p.genotype.to_json(), p.step) for p in batch]
        if self.fault == "step 0 another cell" and step == 0:
            self._pending = [Proposal(self.cell.remove_edge(self.cell.edges[0]), 0)]
            return list(self._pending)
        if self.fault == "a removed edge as text" and step == 1:
            self._pending = [Proposal(p.genotype, step, {"removed_edge": "0-1"}) for p in batch]
            return list(self._pending)
        if self.fault == "step 0 of three cells" and step == 0:
            extra = [self.cell.remove_edge(e) for e in self.cell.edges[:2]]
            self._pending = batch + [Proposal(c, 0) for c in extra]
            return list(self._pending)
        if self.fault == "a cell twice" and step == 1:
            self._pending = batch + batch[:1]
            return list(self._pending)
        if self.fault == "never ends" and step >= 1:
            self._pending = [Proposal(self.cell, step)]  # the same cell again and again
            return list(self._pending)
        if self.fault == "asks nothing":
            return []
        if self.fault == "other ops" and step == 1:
            first = batch[0].genotype
            other = [("sep3x3" if op == "conv3x3" else "conv3x3") for op in first.ops[1:]]
            ops = [first.ops[0], *other]  # the same topology, every other node's op changed
            self._pending = [Proposal(first.with_ops(ops), step), *batch[1:]]
            return list(self._pending)
        return batch

    def tell(self, observations: Sequence[Observation]) -> None:
        if self.fault == "never ends":
            self._accept(observations)
            self.step += 1
            return
        super().tell(observations)


@pytest.mark.parametrize(
    "fault, message",
    [
        ("every step is step 0", "strategy custom: step 0 follows step 0: steps must increase"),
        ("steps from -1", "strategy custom: step -1 is negative: steps count from 0"),
        ("float steps", r"strategy custom: a proposal's step is 0.0 \(float\), not an int"),
        ("bool steps", r"strategy custom: a proposal's step is False \(bool\), not an int"),
        ("a genotype of text", "strategy custom: a proposal's genotype is a str, not a Cell"),
        ("step 0 another cell", r"strategy custom: step 0 proposes cell \w+, not the start c"),
        ("step 0 of three cells", "strategy custom: step 0 holds 3 cells: it is the start cell's"),
        ("a cell twice", "strategy custom: step 1 proposes cell "),
        ("never ends", r"strategy custom: step \d+ is batch \d+, beyond its max_steps \(15\)"),
        ("asks nothing", "strategy custom: its first ask\\(\\) gave no cell to evaluate"),
        ("other ops", r"strategy custom: step 1 proposes cell \w+, which is no sub-DAG of the st"),
    ],
)
def test_a_strategy_that_breaks_the_journals_rules_is_stopped_in_one_line(
    tmp_path, fault, message
) -> None:
    def make(config: SearchConfig, start: Cell, rng: random.Random) -> Misbehaving:
        strategy = Misbehaving(config, start, rng)
        strategy.fault = fault
        return strategy

    run = tmp_path / "r"
    with pytest.raises(ConfigError, match=message):
        run_search(run, custom(), evaluator_factory=toy, strategy_factory=make, progress=False)
    if (run / "journal.jsonl").exists():  # what it journalled before is kept
        assert all(json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines())


def test_a_note_the_journal_could_not_read_back_is_refused_before_it_is_written(
    tmp_path,
) -> None:
    """A custom strategy's ``removed_edge`` note of text once gave a journal that its own
    reader refused: the run ended, then ``--resume`` and the report failed."""
    from autoshrink.errors import JournalError

    def make(config: SearchConfig, start: Cell, rng: random.Random) -> Misbehaving:
        strategy = Misbehaving(config, start, rng)
        strategy.fault = "a removed edge as text"
        return strategy

    run = tmp_path / "r"
    with pytest.raises(JournalError, match='could not be read back: "removed_edge" must be a l'):
        run_search(run, custom(), evaluator_factory=toy, strategy_factory=make, progress=False)
    from autoshrink.report.reading import read_run

    assert len(read_run(run).candidates) == 1  # the start cell's record, read back


def test_an_interrupted_custom_run_says_how_to_resume_it_from_python(tmp_path) -> None:
    from autoshrink.stop_signals import SearchInterrupted

    class Stops(ToyEvaluator):
        def evaluate(self, cell: Cell, seed: int):  # type: ignore[no-untyped-def]
            if self.calls == 3:
                raise KeyboardInterrupt  # from code, not a signal
            return super().evaluate(cell, seed)

    stops = Stops()
    run = tmp_path / "r"
    with pytest.raises(SearchInterrupted) as info:
        run_search(run, custom(), evaluator_factory=lambda c: stops, strategy_factory=drop_one,
                   progress=False)  # fmt: skip
    here = __name__
    evaluator = f"{here}.test_an_interrupted_custom_run_says_how_to_resume_it_from_python"
    assert str(info.value) == (
        f"search interrupted; 3 candidates are in {run / 'journal.jsonl'}; continue with: "
        f"run_search({str(run)!r}, resume=True, evaluator_factory=..., strategy_factory=...) "
        f"with the run's (evaluator_factory {evaluator}.<locals>.<lambda>, strategy_factory "
        f"{here}.drop_one)"
    )


def test_an_interrupted_run_of_a_custom_evaluator_names_it_not_the_command_line(
    tmp_path,
) -> None:
    """A built-in strategy scored by a custom evaluator: the command line cannot resume it."""
    from autoshrink.stop_signals import SearchInterrupted

    class Stops(ToyEvaluator):
        def evaluate(self, cell: Cell, seed: int):  # type: ignore[no-untyped-def]
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().evaluate(cell, seed)

    run = tmp_path / "r"
    with pytest.raises(SearchInterrupted) as info:
        run_search(run, toy_config(), evaluator_factory=lambda c: Stops(),
                   progress=False)  # fmt: skip
    assert "autoshrink search --resume" not in str(info.value)
    assert str(info.value).endswith(
        f"continue with: run_search({str(run)!r}, resume=True, evaluator_factory=...) with the "
        f"run's (evaluator_factory {__name__}.test_an_interrupted_run_of_a_custom_evaluator_"
        "names_it_not_the_command_line.<locals>.<lambda>)"
    )


def test_a_batch_breaking_the_rules_is_named_exactly() -> None:
    from dataclasses import replace

    from autoshrink.batch_checks import check_batch, same_quality
    from autoshrink.spaces.cells import published_cell

    start = published_cell("shrinkcnn")
    e = start.edges
    a, b = replace(start, edges=e[:2] + e[3:]), replace(start, edges=e[:3] + e[4:])
    with pytest.raises(ConfigError, match=r"^strategy x: one batch holds steps \[1, 2\]$"):
        check_batch([Proposal(a, 1), Proposal(b, 2)], 0, 2, 15, "x", start)
    with pytest.raises(ConfigError, match=f"^strategy x: step 1 proposes cell {a.key} twice$"):
        check_batch([Proposal(a, 1), Proposal(b, 1), Proposal(a, 1)], 0, 2, 15, "x", start)
    # two scored candidates of one accuracy: only their cost told them apart
    tied = [Observation(Proposal(c, 1), 0.0, {"accuracy": 0.1}) for c in (a, b)]
    assert same_quality(tied, "accuracy") == 0.1 and same_quality(tied[:1], "accuracy") is None


@pytest.mark.parametrize("max_steps", [None, "10", 2.5, 0, -1, True, float("inf")])
def test_a_max_steps_that_bounds_no_batches_is_named(tmp_path, max_steps) -> None:
    """``None`` ("no limit") or a str stopped the search with the comparison's TypeError; 0 or
    -1 with 'step 0 is batch 1, beyond its max_steps (0)'; inf let a strategy that never ends
    fill the journal, which the bound is there to stop."""

    bound = max_steps

    class Unbounded(DropOneAtRandom):
        max_steps = bound  # type: ignore[assignment]

    def make(config: SearchConfig, start: Cell, rng: random.Random) -> Unbounded:
        return Unbounded(config, start, rng)

    run = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"^strategy_factory \S+make returned a strategy whose "
                       rf"max_steps is {re.escape(repr(max_steps))}; it must be an int >= 1, "
                       r"the most batches it asks for \(step 0 included\)$"):  # fmt: skip
        run_search(run, custom(), evaluator_factory=toy, strategy_factory=make, progress=False)
    assert not run.exists()


class NotesAtStep1(DropOneAtRandom):
    """DropOneAtRandom whose step-1 proposals carry ``meta`` (set per test)."""

    meta: object = None

    def ask(self) -> list[Proposal]:
        batch = super().ask()
        if batch and batch[0].step == 1:
            self._pending = [Proposal(p.genotype, 1, self.meta) for p in batch]  # type: ignore[arg-type]
            return list(self._pending)
        return batch


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ({"origin": {1, 2}}, "a proposal's meta is no JSON (Object of type set is not JSON serial"),
        ({"logits": np.zeros(2)}, "a proposal's meta is no JSON (Object of type ndarray is not"),
        ([1, 2], "a proposal's meta is a list, not a dict"),
        ({1: "a", "b": 2}, "a proposal's meta is no JSON ('<' not supported between instances"),
    ],
)
def test_a_note_that_is_no_json_is_refused_before_its_candidates_train(
    tmp_path, meta, says
) -> None:
    """It was json's own TypeError ('Object of type set is not JSON serializable'), or an
    AttributeError on ``.items``, raised when the first trained candidate was journalled:
    naming neither the strategy nor the note, and its training lost."""
    evaluator = ToyEvaluator()

    def make(config: SearchConfig, start: Cell, rng: random.Random) -> NotesAtStep1:
        strategy = NotesAtStep1(config, start, rng)
        strategy.meta = meta
        return strategy

    run = tmp_path / "r"
    with pytest.raises(ConfigError, match=f"^strategy custom: {re.escape(says)}"):
        run_search(run, custom(), evaluator_factory=lambda c: evaluator, strategy_factory=make,
                   progress=False)  # fmt: skip
    assert evaluator.calls == 1  # the start cell: the batch of the note was not trained
    assert len(candidates_of(run)) == 1


def candidates_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
