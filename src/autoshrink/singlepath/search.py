"""The Single-Path search: train the supernet once, weights and thresholds together, against
cross-entropy plus a latency term; the thresholds' decisions are the architecture.

:func:`run_singlepath` does, into an output folder:

1. the latency model of the space on the user's device at the *deployment* size
   (:func:`autoshrink.singlepath.latency_model.prepare_model`; ``latency_table.json`` and its
   calibration, reused when present);
2. ``epochs`` epochs of SGD on the weights of a :class:`~autoshrink.singlepath.superkernel.SuperNet`
   at the (small) search size; after ``warmup_epochs`` the thresholds learn too (Adam) and the
   loss gains the latency term: ``λ·log(latency)`` (the paper's), or with a target
   ``λ·max(0, log(latency / target))``, where ``latency`` is the blend of the measured table
   by the indicators (:meth:`~autoshrink.singlepath.latency_model.LatencyModel.blended`);
3. after every epoch: the validation accuracy of the supernet under its hard decisions (which
   *is* the derived network with the supernet's weights), a line of ``decisions.jsonl`` (every
   layer's choice, thresholds and weight norms) and a checkpoint (``checkpoints/``,
   safetensors + JSON; ``resume=True`` continues from the newest after a kill);
4. at the end: ``architecture.json`` (``autoshrink.mbconv/1`` at the deployment size),
   ``weights.safetensors`` (the derived network with the supernet's weights) and
   ``result.json`` with the predicted latency and the latency measured right then by the same
   backend and settings, the validation accuracy, wall time and images trained.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_json
from autoshrink.cost.mobilenetv2 import MobileNetV2Spec
from autoshrink.devices import own_generators, torch_threads
from autoshrink.errors import ConfigError, JournalError, TrainingError
from autoshrink.hardware.latency import measure_module
from autoshrink.outputs import check_output_file, claim_folder, held_folder
from autoshrink.singlepath.data import SearchData, load_search_data
from autoshrink.singlepath.found import restore_found, save_found
from autoshrink.singlepath.latency_model import LatencyModel, load_run_model, prepare_model
from autoshrink.singlepath.result import (
    ARCH,
    DECISIONS,
    MODEL,
    RESULT,
    SETTINGS,
    TABLE,
    WEIGHTS,
    SinglePathResult,
    finished_result,
)
from autoshrink.singlepath.settings import SearchSettings, check_same_settings
from autoshrink.singlepath.space import build_arch, count_arch, macro_slots
from autoshrink.singlepath.supernet_training import SupernetTraining
from autoshrink.training.checkpoint import (
    CHECKPOINTS,
    checkpoint_to_resume,
    latest_epoch,
    restored_history,
    restoring,
    save_checkpoint,
    write_log,
)
from autoshrink.training.classification import evaluate

log = logging.getLogger(__name__)
#: The files a search writes into its folder, none of them someone else's (its latency table
#: and calibration are read, then extended).
WRITES = (ARCH, RESULT, DECISIONS, SETTINGS, WEIGHTS, CHECKPOINTS, MODEL)
#: What the end of a search reads of every epoch's row of a resumed history.
HISTORY_NUMBERS = ("train_loss", "val_accuracy", "seconds", "eval_seconds", "images")


def run_singlepath(
    out: str | Path,
    settings: SearchSettings,
    *,
    resume: bool = False,
    table: str | Path | None = None,
) -> SinglePathResult:
    """Run (or resume) a search into ``out`` (the argument order of
    :func:`autoshrink.search.run_search`); see the module docstring for the files.
    ``table``: the latency table to read and complete (default ``out/latency_table.json``).
    Torch runs on ``settings.train_threads`` threads meanwhile, from the seed's random state
    (the thread count and the generator state before are restored)."""
    if not isinstance(settings, SearchSettings):  # the order of an earlier name's arguments
        raise TypeError(
            f"run_singlepath(out, settings): settings must be a SearchSettings, got "
            f"{type(settings).__name__} (the folder comes first, as in "
            "autoshrink.search.run_search)"
        )
    out = Path(out)
    claim_folder(out, "singlepath", resume=resume, writes=WRITES)  # before anything is made
    # one search per folder; the folders made for it go again when a refused start left them
    # empty (a measured table or a checkpoint stays)
    with held_folder(out, resume=resume), torch_threads(settings.train_threads), own_generators():
        return _run_singlepath(  # the search seeds the generators
            out, settings, resume=resume, table=None if table is None else Path(table)
        )


def _train_epochs(
    out: Path,
    s: SearchSettings,
    search: SupernetTraining,
    model: LatencyModel,
    data: SearchData,
    *,
    resume: bool,
) -> list[dict[str, Any]]:
    """Train the supernet from its newest checkpoint (or from the start) to the last epoch,
    with a checkpoint and a line of ``decisions.jsonl`` after each; the epochs' rows."""
    ckpt_dir = out / CHECKPOINTS
    history: list[dict[str, Any]] = []
    start = 1
    # settings.json holds what the run is; a fresh start finds no checkpoints (claim_folder
    # refuses a folder holding an earlier run's, or checkpoints no Single-Path search wrote)
    ckpt = checkpoint_to_resume(ckpt_dir, resume)
    if ckpt is not None:
        with restoring(ckpt, ckpt_dir):  # the history first: nothing is loaded from a damaged one
            history = restored_history(ckpt, HISTORY_NUMBERS)
            search.restore(ckpt.tensors, ckpt.state)
        start = ckpt.epoch + 1
        write_log(out / DECISIONS, history)  # a kill between checkpoint and log lost its line
    for epoch in range(start, s.epochs + 1):
        t1 = time.perf_counter()
        stats = search.train_epoch(epoch)
        seconds = time.perf_counter() - t1
        if not math.isfinite(float(stats["train_loss"] or 0.0)):
            kept = f"the checkpoint of epoch {epoch - 1}" if epoch > 1 else "no checkpoint"
            raise TrainingError(
                f"the supernet's training diverged at epoch {epoch} (loss "
                f"{stats['train_loss']}): try a lower --batch-size or lr; {out} keeps {kept}"
            )
        arch = search.net.derive()
        _, accuracy = evaluate(search.net, data.val_x, data.val_y, 256)  # the derived network
        search.net.train()
        row = {
            "epoch": epoch,
            **stats,
            "val_accuracy": accuracy,
            "predicted_ms": model.predict(arch.with_settings(image_size=s.deploy_size)),
            "seconds": seconds,
            "eval_seconds": time.perf_counter() - t1 - seconds,
            "layers": search.decisions_row(),
        }
        history.append(row)
        tensors, rests = search.snapshot()
        save_checkpoint(ckpt_dir, epoch, tensors, {"history": history, "optimizers": rests})
        write_log(out / DECISIONS, history)
        log.info(
            "epoch %d/%d: loss %.4f, val accuracy %.4f, predicted %.2f ms, %s (%.1fs)",
            epoch,
            s.epochs,
            row["train_loss"],
            row["val_accuracy"],
            row["predicted_ms"],
            arch.key,
            seconds,
        )
    return history


def _write_found(
    out: Path,
    s: SearchSettings,
    search: SupernetTraining,
    model: LatencyModel,
    data: SearchData,
    history: list[dict[str, Any]],
    calibration: dict[str, float] | None,
    table_seconds: float,
    measured: int,
) -> SinglePathResult:
    """Write the network the search found (its architecture and weights), measure its latency
    at the deployment size, and write ``result.json``."""
    arch = save_found(out, s, search.net, data.mean, data.std)
    shape = (s.latency.batch, arch.in_channels, s.deploy_size, s.deploy_size)
    measured_result = measure_module(build_arch(arch).eval(), [shape], s.latency)
    predicted = model.predict(arch)
    over = None if s.latency_target_ms is None else predicted / s.latency_target_ms - 1
    if over is not None and over > 0:  # the target is a penalty, not a limit
        log.warning(
            "the found network's predicted latency %.2f ms is %.0f%% over the target %g ms: "
            "the target only weighs the loss (--lambda %g); a larger --lambda or more --epochs "
            "push harder",
            predicted,
            100 * over,
            s.latency_target_ms,
            s.lam,
        )
    counts = count_arch(arch)
    summary = {
        "architecture": ARCH,
        "layers": list(arch.layers),
        "predicted_ms": predicted,
        "measured_ms": measured_result.median_ms,
        "measured_iqr_ms": measured_result.iqr_ms,
        "relative_error": (predicted - measured_result.median_ms) / measured_result.median_ms,
        "latency_target_ms": s.latency_target_ms,
        "over_target": over,  # predicted / target - 1 (> 0: the target was missed)
        "lambda": s.lam,
        "val_accuracy": history[-1]["val_accuracy"],
        "val_accuracy_note": "the derived network with the supernet's weights, not retrained",
        "params": counts.params,
        "macs": counts.macs,
        "search_seconds": sum(r["seconds"] + r["eval_seconds"] for r in history),
        "table_seconds_this_run": table_seconds,
        "table_blocks_measured_this_run": measured,
        "images_trained": sum(r["images"] for r in history),
        "epochs": s.epochs,
        "dataset": s.dataset,
        "normalisation": {"mean": list(data.mean), "std": list(data.std)},
        "search_size": s.search_size,
        "deploy_size": s.deploy_size,
        "latency_settings": s.latency.to_dict(),
        "calibration": calibration,
        "latency_environment": measured_result.environment,
    }
    write_json(out / RESULT, summary)
    return SinglePathResult(summary, history)


@contextmanager
def _taken_back_on_error(out: Path, resume: bool) -> Iterator[None]:
    """Around a new search's start: an :class:`OSError` (a full disk) before its first
    checkpoint takes back the settings and latency model it wrote (and the empty checkpoint
    folder), so that the same command may start again there; a measured table stays."""
    try:
        yield
    except OSError:
        if not resume and latest_epoch(out / CHECKPOINTS) is None:
            with suppress(OSError):  # a read-only disk: the first error is the one said
                for name in (SETTINGS, MODEL):
                    (out / name).unlink(missing_ok=True)
                (out / CHECKPOINTS).rmdir()
        raise


def _run_singlepath(
    out: Path, s: SearchSettings, *, resume: bool, table: Path | None
) -> SinglePathResult:
    claim_folder(out, "singlepath", resume=resume, writes=WRITES)  # again, held
    if table is not None:
        check_output_file(table, "--latency-table")
    if resume and (out / SETTINGS).is_file():
        check_same_settings(out / SETTINGS, s)
        if (out / RESULT).is_file():  # the search ended: nothing to train, measure or write
            ended = finished_result(out)  # read first: a damaged one is an error, not "kept"
            log.info("%s: the search had ended; %s is kept as it was", out, RESULT)
            restore_found(out, s, ended.summary)  # where deleted or damaged since
            return ended
        if not (out / MODEL).is_file() and latest_epoch(out / CHECKPOINTS) is not None:
            raise JournalError(  # written before epoch 1: the table's model may differ by now
                f"{out}: checkpoints without the {MODEL} the search trained them against: "
                "resuming with the table's model as it is now would change the search midway; "
                f"put {MODEL} back or start a fresh --out"
            )
    elif resume and latest_epoch(out / CHECKPOINTS) is not None:  # settings.json removed
        raise JournalError(
            f"{out}: checkpoints without the {SETTINGS} of the search that wrote them: which "
            "settings they were trained with is unknown, so they cannot be resumed; start a "
            "fresh --out"
        )
    data = load_search_data(s)
    if s.batch_size > len(data.train_y):  # else one step per epoch, at an lr scaled for it
        raise ConfigError(
            f"batch_size {s.batch_size} exceeds the {len(data.train_y)} training images; lower "
            "--batch-size"
        )
    deploy = MobileNetV2Spec(
        width=s.width,
        image_size=s.deploy_size,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
    )
    t0 = time.perf_counter()
    resumed_model = resume and (out / MODEL).is_file()
    if resumed_model:  # the model it began with (a shared table grows)
        model, calibration = load_run_model(out / MODEL, len(macro_slots(deploy)[1]))
        measured = 0
        log.info("%s: resuming with the latency model the run began with", out / MODEL)
    else:
        model, cal, measured = prepare_model(
            table or out / TABLE, deploy, s.latency, calibration_networks=s.calibration_networks
        )
        calibration = None if cal is None else {"scale": cal.scale, "offset": cal.offset}
    table_seconds = time.perf_counter() - t0
    search = SupernetTraining(s, data, model)
    if s.latency_target_ms is not None:
        model.check_target(
            s.latency_target_ms, [layer.slot.skippable for layer in search.net.super_layers]
        )
    with _taken_back_on_error(out, resume):
        write_json(out / SETTINGS, s.to_dict())  # every check passed: the folder is this run's
        if not resumed_model:  # an earlier start's model would be what a resume reads
            write_json(out / MODEL, model.to_dict(calibration), indent=1)
        history = _train_epochs(out, s, search, model, data, resume=resume)
    return _write_found(out, s, search, model, data, history, calibration, table_seconds, measured)
