"""One-shot evaluation: a step's candidates start from the current cell's trained weights.

CNN cells (weights cut by :func:`~autoshrink.nn.inherit.inherit_cnn`) and RNN cells (edge
matrices inherited by :func:`~autoshrink.nn.inherit.inherit_rnn`).

``autoshrink search --evaluator oneshot``. The complete cell (step 0) is trained with the full
proxy protocol, as the standalone evaluator does. Every later candidate -- the current cell
minus one edge -- starts from the current cell's weights cut down to it
(:func:`autoshrink.nn.inherit.inherit_cnn`), is fine-tuned for ``epochs`` epochs (0: batch-norm
statistics recomputed, no training; :func:`autoshrink.training.inherited.finetune`) and
validated. The winner's fine-tuned weights become the next step's starting weights.

Weights live in the run folder, ``oneshot/`` (safetensors, the cell in the metadata):

- ``current.safetensors``: the current cell's weights, the parent of the step being evaluated;
- ``candidates/<key>.safetensors``: each candidate's weights once it is evaluated, written by
  whichever process evaluated it (pool and Ray workers get this folder's path, not tensors),
  before the search journals it.

:class:`WeightTrail` runs in the search's process: before a step it checks that
``current.safetensors`` holds the cell the journal says is current (a resume with a missing or
foreign checkpoint stops with a :class:`~autoshrink.errors.ConfigError` before anything is
trained), and after the step it promotes the winner's file to ``current.safetensors`` and
deletes the other candidates' files.

A winner can have no weights from its step: the journal already held its record (the same
cell, reached by another removal path, was a candidate of an earlier step, with another
parent), so the step reused that record instead of evaluating it again; or every candidate was
rejected by a constraint and none was trained. Its fine-tuned weights of that earlier step are
gone (a step deletes its losers' files), or never were. :class:`WeightTrail` then *derives*
them: the winner is fine-tuned from this step's parent (``current.safetensors``) exactly as a
candidate of the step would be, seeded as its journal record says, and those weights become
the next parent. Its journal record -- the score the strategy ranked -- is not touched. The
derivation depends only on the parent's weights and the seed, so an uninterrupted and a
resumed search derive the same weights.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence, Set
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from autoshrink.atomic_write import save_tensors
from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluation
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator, Tensors
from autoshrink.evaluators.rnn_proxy import RNNProxyEvaluator
from autoshrink.graph import Cell
from autoshrink.journal import Journal, record_type
from autoshrink.nn.cnn import build_network
from autoshrink.nn.inherit import check_subcell, inherit_cnn, inherit_rnn
from autoshrink.nn.state_fit import misfit
from autoshrink.nn.tied_weights import TIED, retie, to_file
from autoshrink.run_folder import JOURNAL
from autoshrink.strategies.base import Proposal
from autoshrink.training.classification import TrainOutcome
from autoshrink.training.inherited import finetune, finetune_lm
from autoshrink.training.language import LMOutcome

log = logging.getLogger(__name__)

FORMAT = "autoshrink.oneshot-weights/1"
FOLDER, CURRENT, CANDIDATES = "oneshot", "current.safetensors", "candidates"


def save_cell_weights(path: Path, cell: Cell, model: nn.Module) -> None:
    """Write ``model``'s state (the network of ``cell``) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, ties = to_file(model.state_dict())  # an RNN's tied decoder weight: stored once
    meta = {"format": FORMAT, "key": cell.key, "cell": cell.to_json(), **ties}
    save_tensors(path, tensors, meta)


def _metadata(path: Path) -> dict[str, str]:
    """The metadata of a one-shot weight file; ConfigError if unreadable or another kind."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{path}: not a readable weight file ({err})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a one-shot weight file (format {meta.get('format')!r})")
    if "cell" not in meta:
        raise ConfigError(f"{path}: a one-shot weight file without its cell in its metadata")
    return meta


def weights_cell(path: Path) -> Cell:
    """The cell whose weights ``path`` holds (from its metadata); ConfigError if unreadable."""
    return Cell.from_json(_metadata(path)["cell"], str(path))


def read_cell_weights(path: Path) -> tuple[Cell, dict[str, torch.Tensor]]:
    """The cell and the tensors of a weight file written by :func:`save_cell_weights` (tied
    weights back under each of their keys; files without a map of ties stored copies)."""
    meta = _metadata(path)
    cell = Cell.from_json(meta["cell"], str(path))
    tensors = load_file(str(path))
    try:
        return cell, retie(tensors, json.loads(meta.get(TIED, "{}")))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: malformed tied-weights map ({err})") from None


def is_complete(cell: Cell) -> bool:
    """Whether ``cell`` has every edge ``i -> j`` (the cell a search starts from)."""
    n = cell.num_nodes
    return cell.num_edges == n * (n - 1) // 2


class OneShotEvaluator:
    """Evaluate candidates from their parent's weights (see the module docstring).

    Args:
        inner: the standalone proxy evaluator (CNN or RNN): data, network, proxy protocol,
            device, threads.
        epochs: fine-tuning epochs of a candidate (0: no training; CNNs get their batch-norm
            statistics recomputed).
        folder: the run's ``oneshot/`` folder (set by :func:`bind_weight_trail`); ``None``
            until the search binds it.
    """

    def __init__(
        self,
        inner: CNNProxyEvaluator | RNNProxyEvaluator,
        epochs: int,
        folder: Path | None = None,
    ) -> None:
        if epochs < 0:
            raise ConfigError(f"oneshot epochs must be >= 0, got {epochs}")
        self.inner = inner
        self.epochs = epochs
        self.folder = folder

    def profile(self, genotype: Cell) -> dict[str, float]:
        """The inner evaluator's cost metrics (weights play no part in them)."""
        return self.inner.profile(genotype)

    @property
    def num_classes(self) -> int | None:
        """The classes of a CNN proxy task (``None`` for the RNN task)."""
        return getattr(self.inner, "num_classes", None)

    @property
    def device(self) -> str:
        """The device the inner evaluator trains on (a Ray task asks for a GPU by it)."""
        return self.inner.device

    def check_weights(self, cell: Cell, tensors: Mapping[str, torch.Tensor], source: Path) -> None:
        """Raise a :class:`ConfigError` naming ``source`` unless ``tensors`` (its weights) are
        those of ``cell``'s network, by name and shape (:func:`~autoshrink.nn.state_fit.misfit`;
        the network is built on the meta device: no memory, no random draws): weights of the
        same cell for another macro, width or vocabulary would fail every candidate's training."""
        inner = self.inner
        with torch.device("meta"):
            net = (
                inner.network(cell)
                if isinstance(inner, RNNProxyEvaluator)
                else build_network(cell, inner.macro)
            )
        what = misfit(net, tensors)
        if what is not None:
            raise ConfigError(
                f"{source}: its tensors are not those of cell {cell.key}'s network in this "
                f"search ({what}); another macro, width or data set's weights?"
            )

    def screening_stage(self, classes: Sequence[int], epochs: int) -> OneShotEvaluator:
        """A progressive screening stage (:mod:`autoshrink.screening`) of one-shot evaluation:
        candidates inherit their parent's weights as always and are fine-tuned for at most
        ``epochs`` epochs (never more than this evaluator's) on the images of ``classes``."""
        if not isinstance(self.inner, CNNProxyEvaluator):
            raise ConfigError("progressive screening stages are for CNN cells, not RNN cells")
        stage_epochs = min(epochs, self.epochs)
        inner = self.inner.screening_stage(classes, max(1, stage_epochs))
        return OneShotEvaluator(inner, stage_epochs, self.folder)

    def weights_folder(self) -> Path:
        """The run's ``oneshot/`` folder (a ConfigError until the search binds it)."""
        if self.folder is None:
            raise ConfigError("the one-shot evaluator needs a run folder (bind_weight_trail)")
        return self.folder

    def evaluate(self, genotype: Cell, seed: int) -> Evaluation:
        """Train ``genotype`` from ``seed``: the complete cell (step 0) from scratch, any other
        cell fine-tuned from its parent's weights (``current.safetensors``) -- or, while no
        cell has weights yet (a constraint rejected the complete cell and every cell since,
        which :class:`WeightTrail` checks), from scratch too.

        An ``"ok"`` candidate's weights are saved to ``candidates/<key>.safetensors``; ``detail``
        says whether it was ``inherited`` and from which ``parent``.
        """
        folder = self.weights_folder()
        detail: dict[str, Any] = {"inherited": False}
        current = folder / CURRENT
        if is_complete(genotype) or not current.is_file():  # the full protocol, from scratch
            evaluation, model = self.inner.fit(genotype, seed)
        else:
            parent, tensors = read_cell_weights(current)
            check_subcell(parent, genotype)
            evaluation, model = self._inherited(parent, tensors, genotype, seed)
            detail = {"inherited": True, "parent": parent.key}
        if model is not None and evaluation.status == "ok":
            save_cell_weights(folder / CANDIDATES / f"{genotype.key}.safetensors", genotype, model)
        return replace(evaluation, detail={**evaluation.detail, **detail})

    def _inherited(
        self, parent: Cell, tensors: dict[str, torch.Tensor], child: Cell, seed: int
    ) -> tuple[Evaluation, nn.Module | None]:
        """Fit ``child`` from ``parent``'s weights ``tensors``."""
        inner = self.inner
        if isinstance(inner, RNNProxyEvaluator):
            corpus, settings = inner.corpus, inner.training

            def build_lm() -> nn.Module:
                trained_lm = inner.build(parent, seed)
                trained_lm.load_state_dict(tensors)
                return inherit_rnn(trained_lm, parent, child)[0]

            def train_lm(model: nn.Module) -> LMOutcome:
                return finetune_lm(
                    model, corpus.train, corpus.valid, settings, self.epochs, inner.device
                )

            return inner.fit(child, seed, build_lm, train_lm)
        macro, settings_cnn = inner.macro, inner.training

        def build() -> nn.Module:
            trained_net = build_network(parent, macro)
            trained_net.load_state_dict(tensors)
            return inherit_cnn(trained_net, parent, child, macro)[0]

        def train(model: nn.Module, tr: Tensors, val: Tensors, g: torch.Generator) -> TrainOutcome:
            return finetune(model, tr, val, settings_cnn, self.epochs, g)

        evaluation, model = inner.fit(child, seed, build, train)
        if self.epochs == 0:
            evaluation.detail["bn_images"] = len(inner.split.train_y)
        return evaluation, model


class WeightTrail:
    """The search-side keeper of ``oneshot/current.safetensors`` (see the module docstring).

    Args:
        folder: the run's ``oneshot/`` folder (the journal is ``journal.jsonl`` beside it).
        evaluator: the search's one-shot evaluator; it derives the weights of a winner that
            has none from its step (``None``: such a step is only logged).
    """

    def __init__(self, folder: Path, evaluator: OneShotEvaluator | None = None) -> None:
        self.folder = folder
        self.evaluator = evaluator
        self._parent: Cell | None = None  # the cell the step being run shrinks

    @property
    def current(self) -> Path:
        """The current cell's weight file, ``oneshot/current.safetensors``."""
        return self.folder / CURRENT

    def before_step(self, strategy: Any, proposals: Sequence[Proposal], todo: int) -> None:
        """Check, before a step trains ``todo`` of its ``proposals``, that the current weights
        are those of ``strategy.current`` (the cell the step shrinks). Step 0 needs none, nor
        a step before which no candidate has trained (a constraint rejected every cell so
        far): its candidates train from scratch."""
        step, parent = proposals[0].step, strategy.current
        self._parent = None if step == 0 else parent
        if step == 0 or todo == 0:
            return
        if not self.current.is_file():
            if not self._any_trained(before=step):
                return
            raise ConfigError(
                f"{self.current}: missing; step {step} needs the weights of cell {parent.key} "
                "(the journal's current cell) to evaluate its candidates"
            )
        held, tensors = read_cell_weights(self.current)
        if held.key != parent.key:
            raise ConfigError(
                f"{self.current} holds cell {held.key}, but the journal's current cell at step "
                f"{step} is {parent.key}"
            )
        if self.evaluator is not None:
            self.evaluator.check_weights(parent, tensors, self.current)

    def stranded(
        self, strategy: Any, proposals: Sequence[Proposal], retrying: Set[str]
    ) -> list[str]:
        """The keys of ``proposals`` that ``--retry-failed`` would train again (``retrying``)
        but cannot: ``current.safetensors`` holds another cell than their parent,
        ``strategy.current`` (a failed candidate of an earlier step: only the current cell's
        weights are kept). Logged; their ``"failed"`` records stand
        (:meth:`~autoshrink.replay.Replay.keep_failed`)."""
        keys = [p.genotype.key for p in proposals if p.genotype.key in retrying]
        step, parent = proposals[0].step, strategy.current
        if not keys or step == 0 or not self.current.is_file():  # missing: before_step says it
            return []
        held = weights_cell(self.current)
        if held.key == parent.key:
            return []
        log.warning(
            "%s: %d failed candidate(s) of step %d stay failed: a one-shot search keeps only "
            "the current cell's weights (%s's), not their parent %s's",
            self.folder,
            len(keys),
            step,
            held.key,
            parent.key,
        )
        return keys

    def after_step(self, strategy: Any, proposals: Sequence[Proposal]) -> None:
        """Make the step's winner (``strategy.current`` after ``tell``) the next parent and
        delete the other candidates' files.

        The winner's file is moved to ``current.safetensors``. Without a file, when
        ``current.safetensors`` still holds the step's parent, the winner's weights are
        derived from it (:meth:`derive`). Otherwise the step was replayed by a resume and
        its weights were promoted when it first ran (``current.safetensors`` holds the winner
        or a later cell): nothing to do. A missing or foreign ``current.safetensors`` is
        refused by :meth:`before_step` of the next step that trains.
        """
        won_cell: Cell = strategy.current
        parent, self._parent = self._parent, None
        candidates = self.folder / CANDIDATES
        won = candidates / f"{won_cell.key}.safetensors"
        if (
            not won.is_file()
            and parent is not None
            and parent.key != won_cell.key  # a step that stopped the search has no winner
            and self.current.is_file()
            and weights_cell(self.current).key == parent.key
        ):
            self.derive(won_cell, parent, proposals[0].step)
        if won.is_file():
            os.replace(won, self.current)
        for p in proposals:
            (candidates / f"{p.genotype.key}.safetensors").unlink(missing_ok=True)

    def derive(self, cell: Cell, parent: Cell, step: int) -> None:
        """Write the weights of ``cell``, the winner of ``step`` that has none from it, to its
        candidate file: fine-tuned from ``parent``'s weights (``current.safetensors``) as a
        candidate of the step is, with the seed of its journal record. The record is not
        changed; the weights are not journalled (a resume that stops between the step's
        records and its promotion derives them again, equal)."""
        if self.evaluator is None:
            log.warning("no weights for the step's winner %s in %s", cell.key, self.folder)
            return
        rec = self._record(cell.key)
        seed = int(rec["seed"])
        log.info(
            "step %d's winner %s was not fine-tuned in this step (its record: step %s, %s); "
            "deriving its weights from cell %s with its seed %d",
            step,
            cell.key,
            rec["step"],
            rec["status"],
            parent.key,
            seed,
        )
        evaluation = self.evaluator.evaluate(cell, seed)
        if not (self.folder / CANDIDATES / f"{cell.key}.safetensors").is_file():
            raise ConfigError(
                f"cannot derive the weights of step {step}'s winner {cell.key}: fine-tuning it "
                f"from cell {parent.key} with seed {seed} ended {evaluation.status!r} "
                f"({evaluation.detail.get('error', 'no weights')}); the search cannot go on "
                "from this cell"
            )

    def _candidates(self) -> list[dict[str, Any]]:
        """The candidate records of the run's journal (beside ``oneshot/``)."""
        records = Journal(self.folder.parent / JOURNAL).records()
        return [r for r in records if record_type(r) == "candidate"]

    def _any_trained(self, before: int) -> bool:
        """Whether some candidate of a step before step ``before`` trained to weights (an
        ``"ok"`` record): those of a step a resume goes on with trained from scratch too, and
        ``current.safetensors`` is written only when a step ends."""
        return any(r.get("status", "ok") == "ok" and r["step"] < before for r in self._candidates())

    def _record(self, key: str) -> dict[str, Any]:
        """The last journal record of candidate ``key``; a ConfigError if there is none."""
        found = [r for r in self._candidates() if r["key"] == key]
        if not found:
            raise ConfigError(
                f"{self.folder.parent / JOURNAL}: no record of the step's winner {key}"
            )
        return found[-1]


def find_oneshot(evaluator: Any) -> OneShotEvaluator | None:
    """The :class:`OneShotEvaluator` inside ``evaluator`` (wrappers such as
    :class:`~autoshrink.evaluators.costed.CostedEvaluator` keep theirs in ``inner``), or
    ``None``."""
    while evaluator is not None:
        if isinstance(evaluator, OneShotEvaluator):
            return evaluator
        evaluator = getattr(evaluator, "inner", None)
    return None


def bind_weight_trail(evaluator: Any, run_dir: Path) -> WeightTrail | None:
    """Point a one-shot ``evaluator`` at ``run_dir/oneshot``; its :class:`WeightTrail`, or
    ``None`` for other evaluators."""
    found = find_oneshot(evaluator)
    if found is None:
        return None
    found.folder = (Path(run_dir) / FOLDER).resolve()  # made by the first weights saved there
    return WeightTrail(found.folder, found)
