"""Progressive screening (``--screening progressive``, DA-NAS; docs/screening.md).

Each batch a strategy asks for -- an AutoShrink step's K removals, a baseline's batch -- goes
through a schedule of :class:`ScreeningStage` before the full proxy protocol: in a stage every
remaining candidate trains for a few epochs on the images of the data set's *easiest* classes
only, is scored by the search's own score (accuracy on those classes against the cost term),
and only the best ``keep`` fraction goes on. The survivors of the last stage get the full
protocol, so their scores mean what a plain search's do. A candidate that loses a stage is
journalled with ``"status": "screened"``, its stage and its stage metrics; it scores ``-inf``
and can never be the best.

Class difficulty is measured once per search from what the search trains anyway: the
per-class validation error of the first batch (AutoShrink's complete cell at step 0), which is
trained unscreened; :class:`ClassDifficulty` is written to ``class_difficulty.json`` in the
run folder. Stage results are journalled (``"type": "stage"``) the moment they finish, so a
resumed search retrains nothing and screens exactly as before. Stages run through the
search's executor, so the pool, Ray and the GPU batched engine (a stage's candidates train
stacked) work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_json
from autoshrink.errors import ConfigError
from autoshrink.ranges import is_number
from autoshrink.user_files import read_json_file

DIFFICULTY = "class_difficulty.json"


@dataclass(frozen=True)
class ScreeningStage:
    """One stage of a progressive screen.

    Args:
        classes: the easiest classes the stage trains and validates on: a count (an ``int``
            >= 2) or a fraction of the data set's classes (a ``float`` in (0, 1], rounded up,
            at least 2).
        epochs: most epochs of the stage's training (the proxy protocol's other settings).
        keep: the fraction of the stage's candidates that go on (rounded up, at least 1).
    """

    classes: int | float
    epochs: int
    keep: float

    def __post_init__(self) -> None:
        if not is_number(self.classes):
            raise ConfigError(f"screening stage: classes must be a number, got {self.classes!r}")
        if isinstance(self.classes, int) and self.classes < 2:
            raise ConfigError(f"screening stage: classes must be >= 2, got {self.classes}")
        if isinstance(self.classes, float) and not 0.0 < self.classes <= 1.0:
            raise ConfigError(
                f"screening stage: a class fraction must be in (0, 1], got {self.classes}"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(
                f"screening stage: epochs must be a whole number >= 1, got {self.epochs!r}"
            )
        if not is_number(self.keep) or not 0.0 < self.keep <= 1.0:
            raise ConfigError(
                f"screening stage: keep must be in (0, 1] (a schedule that keeps no candidate "
                f"cannot choose one), got {self.keep!r}"
            )

    def class_count(self, num_classes: int) -> int:
        """How many classes the stage uses on a data set of ``num_classes`` classes."""
        if isinstance(self.classes, int):
            if self.classes > num_classes:
                raise ConfigError(
                    f"screening stage names {self.classes} classes; the data set has {num_classes}"
                )
            return self.classes
        return min(num_classes, max(2, math.ceil(self.classes * num_classes - 1e-9)))

    def survivors(self, candidates: int) -> int:
        """How many of ``candidates`` go on to the next stage."""
        return max(1, math.ceil(self.keep * candidates - 1e-9))


def default_stages(epochs: int) -> tuple[ScreeningStage, ...]:
    """The default schedule for a proxy protocol of ``epochs`` epochs: one stage on the easier
    half of the classes for a quarter of the epochs, keeping a quarter of the candidates.

    Chosen before any measurement, for the image budget: a stage costs each candidate about
    1/8 of a full training and a quarter survive (rounded up), so a step of K candidates trains
    ``K / (K / 8 + ceil(K / 4))`` times fewer images than plain: 2.4x with K = 10, 2.7x with
    K = 4 (at most 8/3), 1.6x with K = 2 and nothing saved with K = 1 (0.9x) -- as long as the
    survivors' early stops are like plain's.
    """
    return (ScreeningStage(0.5, max(1, round(epochs / 4)), 0.25),)


def parse_stages(text: str) -> tuple[ScreeningStage, ...]:
    """``--screening-stages``: ``CLASSES:EPOCHS:KEEP`` stages joined by commas (``5:2:0.5``;
    a CLASSES with a dot is a fraction), or the path of a JSON file holding a list of
    ``{"classes": ..., "epochs": ..., "keep": ...}`` objects."""
    path = Path(text)
    if text.endswith(".json") or path.is_file():
        return stages_from_json(read_json_file(path, ConfigError, "screening stages"), text)
    stages = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) != 3:
            raise ConfigError(
                f"screening stage {part.strip()!r}: expected CLASSES:EPOCHS:KEEP, e.g. 5:2:0.5"
            )
        try:
            classes = float(fields[0]) if "." in fields[0] else int(fields[0])
            epochs, keep = int(fields[1]), float(fields[2])
        except ValueError:
            raise ConfigError(f"screening stage {part.strip()!r}: not numbers") from None
        stages.append(ScreeningStage(classes, epochs, keep))
    return tuple(stages)


def stages_from_json(items: Any, source: str = "screening_stages") -> tuple[ScreeningStage, ...]:
    """Stages from their JSON form (a list of objects), as ``config.json`` keeps them."""
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: expected a non-empty list of screening stages")
    stages = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: stage {i + 1} must be an object, got {item!r}")
        names = [f.name for f in fields(ScreeningStage)]
        missing = [n for n in names if n not in item]
        unknown = [n for n in item if n not in names]
        if missing or unknown:
            raise ConfigError(
                f"{source}: stage {i + 1} needs the keys {', '.join(names)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(map(repr, unknown))}" if unknown else "")
            )
        try:
            stages.append(ScreeningStage(**item))
        except (TypeError, ConfigError) as err:  # a value out of range: say which file has it
            raise ConfigError(f"{source}: stage {i + 1}: {err}") from None
    return tuple(stages)


@dataclass(frozen=True)
class ClassDifficulty:
    """Validation error per class, and the classes from easiest to hardest (ties: index)."""

    error: tuple[float, ...]
    order: tuple[int, ...]
    measured_on: tuple[str, ...]  # the canonical keys of the candidates it averages

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], num_classes: int) -> ClassDifficulty:
        """The mean per-class error of the ``"ok"`` records that report ``class_accuracy``; a
        class none of them measured (no validation image of it) counts as the hardest (error
        1), so a stage does not pick it as easy; without any record every class counts as
        equally hard (the natural order)."""
        rows = [
            (r["key"], r["detail"]["class_accuracy"])
            for r in records
            if r["status"] == "ok" and len(r["detail"].get("class_accuracy") or ()) == num_classes
        ]
        error = []
        for c in range(num_classes):
            seen = [1.0 - acc[c] for _, acc in rows if acc[c] is not None and math.isfinite(acc[c])]
            error.append(round(sum(seen) / len(seen), 6) if seen else 1.0)  # ties stay ties
        order = tuple(sorted(range(num_classes), key=lambda c: (error[c], c)))
        return cls(tuple(error), order, tuple(k for k, _ in rows))

    def easiest(self, n: int) -> list[int]:
        """The ``n`` easiest classes, in class order."""
        return sorted(self.order[:n])

    def save(self, path: Path, stages: Sequence[ScreeningStage]) -> None:
        """Write the difficulty to ``path`` as JSON: the error per class, the classes easiest first,
        the candidates it was measured on, and each of ``stages`` with the ``class_ids`` it trains
        on."""
        out = {
            "format": "autoshrink.class_difficulty/1",
            "error": [round(e, 6) for e in self.error],
            "easiest_first": list(self.order),
            "measured_on": list(self.measured_on),
            "stages": [
                asdict(s) | {"class_ids": self.easiest(s.class_count(len(self.error)))}
                for s in stages
            ],
        }
        write_json(path, out)


#: ``run(stage_evaluator, indices)`` trains the batch's candidates ``indices`` with it and
#: yields ``(index, evaluation)`` as each finishes (the search's executor).
RunStage = Callable[[Any, list[int]], Iterator[tuple[int, Any]]]


def stage_evaluator(evaluator: Any, classes: list[int], epochs: int) -> Any:
    """``evaluator``'s twin for a screening stage (its ``screening_stage`` method)."""
    make = getattr(evaluator, "screening_stage", None)
    if make is None:
        raise ConfigError(
            f"progressive screening needs an image classification proxy; "
            f"{type(evaluator).__name__} cannot train on a subset of classes"
        )
    return make(classes, epochs)


def evaluator_classes(evaluator: Any) -> int:
    """The number of classes of ``evaluator``'s proxy task."""
    n = getattr(evaluator, "num_classes", None)
    if n is None:
        raise ConfigError(
            f"progressive screening needs an image classification proxy, not "
            f"{type(evaluator).__name__}"
        )
    return int(n)


@dataclass
class StageResult:
    """A candidate's result in one stage, as journalled."""

    stage: int
    status: str
    score: float
    metrics: dict[str, float]
    images: int
    seconds: float

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> StageResult:
        """The result in a journal ``"stage"`` record (a ``null`` score is ``-inf``, a ``null``
        metric ``nan``)."""
        score = rec["score"]
        return cls(
            rec["stage"],
            rec["status"],
            -math.inf if score is None else float(score),
            {k: (math.nan if v is None else v) for k, v in rec["metrics"].items()},
            int(rec["detail"].get("images_trained", 0)),
            float(rec.get("seconds", 0.0)),
        )

    def summary(self) -> dict[str, Any]:
        """Stage, status, score and metrics: a record's entry in ``detail["stages"]``."""
        return {
            "stage": self.stage,
            "status": self.status,
            "score": self.score,
            "metrics": self.metrics,
        }


class ProgressiveScreen:
    """Runs a schedule of stages on each batch of a search (after the first, which trains
    unscreened and measures the class difficulty); see the module docstring.

    ``stage_records`` holds the journal's ``"stage"`` records by ``(key, stage)`` (a resumed
    search reuses them); ``score`` is the search's score of a metrics dict.
    """

    def __init__(
        self,
        stages: Sequence[ScreeningStage],
        evaluator: Any,
        score: Callable[[dict[str, float]], float],
        stage_records: dict[tuple[str, int], dict[str, Any]],
        run_dir: Path,
    ) -> None:
        self.stages = tuple(stages)
        self.evaluator = evaluator
        self.num_classes = evaluator_classes(evaluator)
        for s in self.stages:  # too many classes: fail before anything trains
            s.class_count(self.num_classes)
        self.score = score
        self.stage_records = stage_records
        self.run_dir = run_dir
        self.difficulty: ClassDifficulty | None = None
        self._evaluators: list[Any] = []

    @property
    def ready(self) -> bool:
        """Whether the class difficulty is known (the first batch is done)."""
        return self.difficulty is not None

    def learn(self, records: Iterable[dict[str, Any]]) -> None:
        """Measure the class difficulty from the first batch's records; write it."""
        self.difficulty = ClassDifficulty.from_records(records, self.num_classes)
        self.difficulty.save(self.run_dir / DIFFICULTY, self.stages)
        self._evaluators = [
            stage_evaluator(
                self.evaluator,
                self.difficulty.easiest(s.class_count(self.num_classes)),
                s.epochs,
            )
            for s in self.stages
        ]

    def screen(
        self,
        keys: list[str],
        entrants: list[int],
        run: RunStage,
        journal_stage: Callable[[int, int, Any, float], None],
    ) -> tuple[list[int], dict[int, list[StageResult]]]:
        """Screen the batch's candidates ``entrants`` (positions into ``keys``).

        ``run`` trains what the journal lacks; ``journal_stage(index, stage, evaluation,
        score)`` journals each stage result as it finishes. Returns the survivors (in batch
        order) and each entrant's stage results; the losers are the entrants not among the
        survivors, each with its last stage last.
        """
        assert self.ready, "learn() the class difficulty first"
        results: dict[int, list[StageResult]] = {i: [] for i in entrants}
        alive = list(entrants)
        for number, (stage, evaluator) in enumerate(
            zip(self.stages, self._evaluators, strict=True), 1
        ):
            todo = [i for i in alive if (keys[i], number) not in self.stage_records]
            for i, evaluation in run(evaluator, todo):
                ok = evaluation.status == "ok"
                score = self.score(evaluation.metrics) if ok else -math.inf
                journal_stage(i, number, evaluation, score)
            for i in alive:
                results[i].append(StageResult.from_record(self.stage_records[keys[i], number]))

            def rank(i: int) -> float:
                score = results[i][-1].score
                return -math.inf if math.isnan(score) else score

            ranked = sorted(alive, key=lambda i: -rank(i))  # stable: ties keep batch order
            alive = sorted(ranked[: stage.survivors(len(alive))])
        return alive, results

    def summary(self) -> dict[str, Any]:
        """What the screen did this session (for ``result.json``)."""
        return {
            "stages": [asdict(s) for s in self.stages],
            "class_difficulty": DIFFICULTY,
        }
