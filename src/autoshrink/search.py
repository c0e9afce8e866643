"""The search loop: joins a strategy, an evaluator, an executor and the score; keeps the journal.

:func:`run_search` runs (or resumes) one search in a run folder -- AutoShrink, or a baseline
on the same cell space (``strategy`` ``random`` or ``rea``):

- ``config.json``: the resolved :class:`~autoshrink.config.SearchConfig`;
- ``journal.jsonl``: one record per evaluated candidate, written the moment it finishes;
- ``best_cell.json`` + its picture, and ``result.json``, when the search ends.

Resuming replays the journal: the strategy is rebuilt from the seed and told the recorded
results in order, so it asks for exactly the same candidates, and only those without a record
are trained. Each candidate's seed is derived from the run seed and the cell's canonical key,
so its result does not depend on the order or the process it runs in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from autoshrink.config import SearchConfig
from autoshrink.errors import JournalError
from autoshrink.evaluators.base import Evaluation, Evaluator
from autoshrink.executors.base import Executor, InProcessExecutor, Job, RetryListener
from autoshrink.graph import Cell
from autoshrink.journal import Journal, finite_or_none
from autoshrink.objectives import Score
from autoshrink.report.picture import render
from autoshrink.spaces.cells import start_cell
from autoshrink.strategies.autoshrink import AutoShrink
from autoshrink.strategies.base import CellStrategy, Observation, Proposal
from autoshrink.strategies.cell_baselines import CellEvolution, RandomCellSearch

log = logging.getLogger(__name__)

CONFIG, JOURNAL, RESULT, BEST_CELL = "config.json", "journal.jsonl", "result.json", "best_cell.json"


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search: the best observation and where things were written."""

    best: Observation
    start: Observation | None
    run_dir: Path
    evaluations: int
    trained: int
    seconds: float
    images_trained: int | None = None  # over the whole journal; None: not an image task

    @property
    def cell(self) -> Cell:
        return self.best.proposal.genotype


def candidate_seed(run_seed: int, key: str) -> int:
    """The training seed of a candidate: a hash of the run seed and the cell's canonical key."""
    digest = hashlib.sha256(f"{run_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_strategy(config: SearchConfig) -> CellStrategy:
    """The strategy of ``config`` (AutoShrink or a baseline), its start cell drawn from the seed.

    All strategies of one seed share the start cell, so they search the same space.
    """
    rng = random.Random(config.seed)
    activation = config.activation if config.task == "cnn" else None
    start = start_cell(config.task, config.nodes, rng, activation)
    if config.strategy == "autoshrink":
        return AutoShrink(
            start,
            k=config.k,
            keep_fraction=config.keep_fraction,
            patience=config.patience,
            score_start=config.score_start,
            rng=rng,
        )
    budget = config.budget or config.default_budget()
    # AutoShrink never goes below its edge target: the baselines search the same cells
    min_edges = max(1, round(start.num_edges * config.keep_fraction))
    if config.strategy == "random":
        return RandomCellSearch(
            start, budget=budget, batch_size=config.k, rng=rng, min_edges=min_edges
        )
    return CellEvolution(
        start,
        budget=budget,
        batch_size=config.k,
        rng=rng,
        min_edges=min_edges,
        population_size=config.population_size,
        tournament_size=config.tournament_size,
    )


def prepare_run_dir(run_dir: Path, config: SearchConfig | None, resume: bool) -> SearchConfig:
    """Create a run folder for ``config`` or, with ``resume``, read the config it holds."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG).is_file():
            raise JournalError(f"{run_dir}: not a run folder (no {CONFIG}); nothing to resume")
        return SearchConfig.load(run_dir / CONFIG)
    if config is None:
        raise JournalError("a new search needs a config")
    if (run_dir / JOURNAL).exists():
        raise JournalError(
            f"{run_dir} already holds a search; resume it with --resume or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / CONFIG)
    return config


def record(
    proposal: Proposal, index: int, seed: int, evaluation: Evaluation, score: float
) -> dict[str, Any]:
    """The journal record of one evaluated candidate (``meta``: the strategy's notes on the
    proposal besides ``removed_edge``, e.g. a baseline's origin and parent; only when any)."""
    cell = proposal.genotype
    meta = {k: v for k, v in proposal.meta.items() if k != "removed_edge"}
    return {
        "type": "candidate",
        "step": proposal.step,
        "index": index,
        "key": cell.key,
        "edges": cell.num_edges,
        "removed_edge": proposal.meta.get("removed_edge"),
        "cell": cell.to_dict(),
        "seed": seed,
        "status": evaluation.status,
        "score": score,
        "metrics": evaluation.metrics,
        "detail": evaluation.detail,
        "seconds": round(evaluation.seconds, 4),
    } | ({"meta": meta} if meta else {})


def violation(evaluator: Evaluator, proposal: Proposal, config: SearchConfig) -> Evaluation | None:
    """A ``"rejected"`` evaluation when the candidate breaks a hard constraint, else ``None``.

    Constraints map a profiled metric (``macs``, ``params``, ...) to its largest allowed value;
    they are checked on :meth:`Evaluator.profile`, so a rejected candidate is never trained.
    """
    if not config.constraints:
        return None
    metrics = evaluator.profile(proposal.genotype)
    broken = [
        f"{name} {metrics[name]:.6g} > max {limit:.6g}"
        for name, limit in sorted(config.constraints.items())
        if name in metrics and metrics[name] > limit
    ]
    if not broken:
        return None
    return Evaluation(metrics, "rejected", 0.0, {"reason": "; ".join(broken)})


def retry_listener(
    journal: Journal,
    proposals: list[Proposal],
    todo: list[int],
    seeds: list[int],
) -> RetryListener:
    """The ``on_retry`` listener of a step: it journals each retry as
    ``{"type": "event", "event": "retry", ...}`` (resume skips records that are not candidates).
    """

    def on_retry(job: int, attempt: int, reason: str) -> None:
        i = todo[job]
        journal.append(
            {
                "type": "event",
                "event": "retry",
                "step": proposals[i].step,
                "index": i,
                "key": proposals[i].genotype.key,
                "seed": seeds[i],
                "attempt": attempt,
                "reason": reason,
            }
        )

    return on_retry


def observe(proposal: Proposal, rec: dict[str, Any]) -> Observation:
    """An observation from a journal record (``null`` score -> ``-inf``)."""
    score = rec["score"]
    metrics = {k: (float("nan") if v is None else v) for k, v in rec["metrics"].items()}
    return Observation(
        proposal, float("-inf") if score is None else float(score), metrics, rec["status"]
    )


def run_search(
    run_dir: Path,
    config: SearchConfig | None = None,
    *,
    resume: bool = False,
    evaluator_factory: Callable[[SearchConfig], Evaluator] | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run a new search described by ``config`` in ``run_dir``, or resume the one there.

    ``evaluator_factory`` builds the evaluator from the config (default: proxy training on the
    config's data set, see :func:`autoshrink.evaluators.factory.build_evaluator`).
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    config = prepare_run_dir(run_dir, config, resume)
    journal = Journal(run_dir / JOURNAL)
    done = {rec["key"]: rec for rec in journal.records() if rec.get("type") == "candidate"}
    if done:
        log.info("resuming %s: %d candidates already in the journal", run_dir, len(done))
    if evaluator_factory is None:
        from autoshrink.evaluators.factory import build_evaluator as evaluator_factory
    evaluator = evaluator_factory(config)
    from autoshrink.evaluators.oneshot import bind_weight_trail, images_trained  # imports torch

    trail = bind_weight_trail(evaluator, run_dir)  # one-shot: weights in run_dir/oneshot
    executor = executor or InProcessExecutor()
    score_fn: Score = config.score
    strategy = make_strategy(config)
    start_obs: Observation | None = None
    evaluations = trained = 0
    steps_bar = tqdm(
        total=strategy.max_steps, desc=f"{config.strategy} steps", unit="step", disable=not progress
    )
    try:
        while proposals := strategy.ask():
            seeds = [candidate_seed(config.seed, p.genotype.key) for p in proposals]
            for i, p in enumerate(proposals):  # hard constraints: reject before training
                if p.genotype.key not in done and (why := violation(evaluator, p, config)):
                    rec = record(p, i, seeds[i], why, float("-inf"))
                    journal.append(rec)
                    done[rec["key"]] = json.loads(json.dumps(finite_or_none(rec)))
            todo = [i for i, p in enumerate(proposals) if p.genotype.key not in done]
            jobs = [Job(proposals[i].genotype, seeds[i]) for i in todo]
            if trail is not None:
                trail.before_step(strategy, proposals, len(todo))
            bar = tqdm(
                total=len(proposals),
                initial=len(proposals) - len(todo),
                desc=strategy.describe(),
                unit="cand",
                leave=False,
                disable=not progress,
            )
            on_retry = retry_listener(journal, proposals, todo, seeds)
            for j, evaluation in executor.run(evaluator, jobs, on_retry):
                i = todo[j]
                score = score_fn(evaluation.metrics) if evaluation.status == "ok" else -math.inf
                rec = record(proposals[i], i, seeds[i], evaluation, score)
                journal.append(rec)
                done[rec["key"]] = json.loads(json.dumps(finite_or_none(rec)))
                trained += 1
                bar.update(1)
            bar.close()
            observations = [observe(p, done[p.genotype.key]) for p in proposals]
            evaluations += len(observations)
            if proposals[0].step == 0:
                start_obs = observations[0]
            strategy.tell(observations)
            if trail is not None:
                trail.after_step(strategy, proposals)
            steps_bar.update(1)
            best = strategy.best
            steps_bar.set_postfix(best=f"{best.score:.4f}" if best else "-")
    finally:
        steps_bar.close()
        executor.close()
    best = strategy.best
    if best is None:
        raise JournalError(f"{run_dir}: no candidate finished with a finite score")
    result = SearchResult(
        best,
        start_obs,
        run_dir,
        evaluations,
        trained,
        time.perf_counter() - t0,
        images_trained(done.values(), evaluator),
    )
    write_result(result, config)
    return result


def write_result(result: SearchResult, config: SearchConfig) -> None:
    """Write ``best_cell.json``, its picture and ``result.json`` into the run folder."""
    run_dir, best = result.run_dir, result.best
    result.cell.save(run_dir / BEST_CELL)
    picture = render(
        result.cell, run_dir / "best_cell.png", title=f"best cell, score {best.score:.4f}"
    )

    def summary(obs: Observation | None) -> dict[str, Any] | None:
        if obs is None:
            return None
        return {
            "key": obs.proposal.genotype.key,
            "step": obs.proposal.step,
            "edges": obs.proposal.genotype.num_edges,
            "score": obs.score,
            "metrics": dict(obs.metrics),
            "cell": obs.proposal.genotype.to_dict(),
        }

    out = {
        "format": "autoshrink.result/1",
        "task": config.task,
        "best": summary(best),
        "start": summary(result.start),
        "evaluations": result.evaluations,
        "trained_this_session": result.trained,
        "seconds_this_session": round(result.seconds, 3),
        "picture": picture.name,
    }
    if result.images_trained is not None:
        out["images_trained"] = result.images_trained
    (run_dir / RESULT).write_text(json.dumps(finite_or_none(out), indent=2) + "\n")
