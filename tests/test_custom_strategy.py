"""A strategy of one's own (``strategy="custom"`` with ``run_search``'s ``strategy_factory``):
it runs, journals, resumes from a cut journal, and the run folder insists on its factory."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from autoshrink.config import SearchConfig, preset
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
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
