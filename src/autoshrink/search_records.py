"""The journal records a search writes, and what it reads back from them.

A candidate's record (:func:`record`), a re-proposed cell's (:func:`reuse_record`), a retry's
event (:func:`retry_listener`), a hard constraint's verdict before training
(:func:`violation`; :func:`unchecked_constraint`: a profile it cannot read) and the checked
profile kept in the record (:func:`as_checked`), a screened survivor's stages folded into its
record (:func:`with_stages`), and the observation a strategy is told of a record
(:func:`observe`).
The schemas they are checked against on reading live in :mod:`autoshrink.journal`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from autoshrink.config import SearchConfig
from autoshrink.evaluators.base import Evaluation
from autoshrink.executors.base import RetryListener
from autoshrink.json_values import finite_or_none
from autoshrink.ranges import is_number
from autoshrink.screening import StageResult
from autoshrink.strategies.base import Observation, Proposal


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


def reuse_record(proposal: Proposal, index: int, first_step: int) -> dict[str, Any]:
    """The journal record of a proposal that step ``first_step`` evaluated already
    (:class:`~autoshrink.journal.ReuseRecord`): its result is that step's record's."""
    return {
        "type": "reuse",
        "step": proposal.step,
        "index": index,
        "key": proposal.genotype.key,
        "removed_edge": proposal.meta.get("removed_edge"),
        "cell": proposal.genotype.to_dict(),
        "first_step": first_step,
    }


def unchecked_constraint(metrics: object, config: SearchConfig) -> tuple[str, str] | None:
    """The first hard constraint of ``config`` that a profile ``metrics`` cannot be checked
    against, and what the profile gives of it: no mapping, no such metric, or a value that is
    no finite number (a NumPy or torch scalar is one). ``None`` when every constraint can be
    checked. Unchecked, such a constraint let every candidate pass."""
    for name in sorted(config.constraints):
        if not isinstance(metrics, Mapping):
            return name, f"gives a {type(metrics).__name__}, not a dict of metrics"
        if name not in metrics:
            return name, f"gives no {name} (it gives {', '.join(map(str, metrics)) or 'none'})"
        if not is_number(finite_or_none(metrics[name])):
            return name, f"gives {name} = {metrics[name]!r}, not a finite number"
    return None


def violation(metrics: Mapping[str, float], config: SearchConfig) -> Evaluation | None:
    """A ``"rejected"`` evaluation when a candidate whose :meth:`Evaluator.profile` is
    ``metrics`` breaks a hard constraint, else ``None``.

    Constraints map a profiled metric (``macs``, ``params``, ...) to its largest allowed value;
    they are checked on the profile, so a rejected candidate is never trained.
    """
    broken = [
        f"{name} {metrics[name]:.6g} > max {limit:.6g}"
        for name, limit in sorted(config.constraints.items())
        if name in metrics and metrics[name] > limit
    ]
    if not broken:
        return None
    return Evaluation(dict(metrics), "rejected", 0.0, {"reason": "; ".join(broken)})


def as_checked(evaluation: Evaluation, checked: Mapping[str, float] | None) -> Evaluation:
    """``evaluation`` with the metrics of ``checked`` -- the constrained metrics of the
    profile its constraints were checked on -- in place of its own: a measured latency taken
    again by a pool worker would differ from the one the check passed, and the journal must
    hold the value checked."""
    if not checked or evaluation.status != "ok":
        return evaluation
    kept = {k: v for k, v in checked.items() if k in evaluation.metrics}
    return replace(evaluation, metrics={**evaluation.metrics, **kept})


def all_rejected(records: Iterable[dict[str, Any]]) -> str:
    """``"; every candidate broke a hard constraint (...)"`` naming the first one's reason,
    when every record is ``"rejected"``; else ``""``."""
    records = list(records)
    if not records or any(r["status"] != "rejected" for r in records):
        return ""
    reason = records[0].get("detail", {}).get("reason", "?")
    return (  # the folder holds this run, whose constraints a resume keeps
        f"; every candidate broke a hard constraint ({reason}): loosen it, and search into "
        "another folder"
    )


def retry_listener(
    append: Callable[[dict[str, Any]], None],
    proposals: list[Proposal],
    todo: list[int],
    seeds: list[int],
) -> RetryListener:
    """The ``on_retry`` listener of a step: it journals each retry as
    ``{"type": "event", "event": "retry", ...}`` (resume skips records that are not candidates).
    """

    def on_retry(job: int, attempt: int, reason: str) -> None:
        i = todo[job]
        append(
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


def with_stages(evaluation: Evaluation, stages: list[StageResult]) -> Evaluation:
    """A survivor's full evaluation with its stage results in ``detail["stages"]``, their
    images added to ``detail["images_trained"]`` and their seconds to its seconds: a record
    counts what its candidate cost."""
    detail = dict(evaluation.detail)
    detail["stages"] = [r.summary() for r in stages]
    if "images_trained" in detail:
        detail["images_trained"] += sum(r.images for r in stages)
    seconds = evaluation.seconds + sum(r.seconds for r in stages)
    return replace(evaluation, detail=detail, seconds=seconds)
