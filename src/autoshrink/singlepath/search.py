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

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from autoshrink.atomic_write import save_tensors, write_json
from autoshrink.cost.mobilenetv2 import MobileNetV2Spec
from autoshrink.data.images import channel_stats, load_images, normalise
from autoshrink.devices import check_threads, own_generators, torch_threads
from autoshrink.errors import ConfigError, DataError, JournalError, TrainingError
from autoshrink.hardware.latency import LatencySettings, measure_module
from autoshrink.journal import parse_record
from autoshrink.json_values import as_read_back
from autoshrink.outputs import check_output_file, claim_folder
from autoshrink.ranges import SEED, check_value
from autoshrink.settings_diff import differences, first_three
from autoshrink.singlepath.latency_model import LatencyModel, load_run_model, prepare_model
from autoshrink.singlepath.space import build_arch, count_arch
from autoshrink.singlepath.superkernel import SuperNet
from autoshrink.training.checkpoint import (
    checkpoint_to_resume,
    clear_earlier_run,
    flatten_optimizer,
    restoring,
    save_checkpoint,
    unflatten_optimizer,
    write_log,
)
from autoshrink.training.classification import evaluate
from autoshrink.training.optim import warmup_cosine
from autoshrink.training.weights_file import weights_metadata
from autoshrink.user_files import check_schema, fields_type_problem, read_json_file, read_text_file

log = logging.getLogger(__name__)

TABLE, ARCH, RESULT, DECISIONS, SETTINGS, WEIGHTS, MODEL = (
    "latency_table.json",
    "architecture.json",
    "result.json",
    "decisions.jsonl",
    "settings.json",
    "weights.safetensors",
    "latency_model.json",
)


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """Everything a search depends on (saved as ``settings.json``; a resume must match)."""

    dataset: str = "digits"
    data_dir: str | None = None
    train_images: int | None = None  # seeded training images; None: all but the validation ones
    val_images: int | None = None  # seeded held-out training images; None: a tenth of them
    search_size: int = 32  # the image size the supernet trains at
    deploy_size: int = 224  # the image size the latency is measured and predicted at
    width: float = 1.0
    epochs: int = 8
    warmup_epochs: int = 2  # weights only: no latency term, thresholds frozen
    batch_size: int = 64
    lr_per_256: float = 0.1  # SGD (Nesterov 0.9), scaled to the batch; 1 epoch warm-up, cosine
    weight_decay: float = 4e-5
    flip: bool = True  # random horizontal flips of the training images (off for digits)
    threshold_lr: float = 2e-4  # Adam on the thresholds (per-weight squared-norm units), at
    # the peak of the weights' schedule and decayed with it
    latency_target_ms: float | None = None
    lam: float = 0.5  # λ of the latency term
    calibration_networks: int = 6
    seed: int = 0
    train_threads: int | None = None  # torch threads while training (None: torch's own)
    latency: LatencySettings = field(default_factory=LatencySettings)

    def __post_init__(self) -> None:
        if problem := fields_type_problem(self, skip=("latency",)):  # seed 1.5 got to numpy
            raise ConfigError(f"singlepath: {problem}")
        if not isinstance(self.latency, LatencySettings):
            raise ConfigError(
                f"singlepath: latency must be a LatencySettings, got {self.latency!r}"
            )
        checks = (
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (
                self.warmup_epochs < self.epochs,
                f"the warm-up ({self.warmup_epochs} epochs of weights only) must be shorter than "
                f"the search ({self.epochs} epochs): fewer warmup_epochs or more epochs",
            ),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.search_size >= 32, "search_size must be >= 32 (five stride-2 steps)"),
            (self.deploy_size >= 32, "deploy_size must be >= 32"),
            (
                0 < self.lr_per_256 < math.inf,
                f"lr_per_256 must be finite and > 0, got {self.lr_per_256}",
            ),
            (
                0 < self.threshold_lr < math.inf,
                f"threshold_lr (--threshold-lr) must be finite and > 0, got {self.threshold_lr}",
            ),
            (0 <= self.weight_decay < math.inf, "weight_decay must be finite and >= 0"),
            (0 <= self.lam < math.inf, f"lambda must be finite and >= 0, got {self.lam}"),
            (self.calibration_networks >= 0, "calibration_networks must be >= 0"),
            (
                self.latency_target_ms is None or 0 < self.latency_target_ms < math.inf,
                f"the latency target must be finite and > 0 ms, got {self.latency_target_ms}",
            ),
            (self.train_images is None or self.train_images >= 1, "train_images must be >= 1"),
            (self.val_images is None or self.val_images >= 1, "val_images must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"singlepath: {message}")
        check_value("singlepath: seed", self.seed, SEED)
        if self.train_threads is not None:
            check_threads(self.train_threads, "singlepath: train_threads")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, ``latency`` a dict of its own."""
        return {**asdict(self), "latency": self.latency.to_dict()}


def singlepath_preset(name: str, **overrides: Any) -> SearchSettings:
    """``demo``: a few minutes on two CPU cores (1,000 small images, 6 epochs, quick latency
    measurements); ``paper``: the whole data set, 8 epochs as in Single-Path NAS (2 warm-up),
    the latency settings' full repeat rule. ``overrides`` apply as given, ``None`` included
    (``train_images=None``: all images); ``latency`` is a :class:`LatencySettings`, or a dict
    of the settings to change in the preset's."""
    quick = LatencySettings(min_repeats=10, max_seconds=1.0)
    presets = {
        "demo": SearchSettings(
            train_images=1000,
            val_images=400,
            epochs=6,
            warmup_epochs=2,
            batch_size=32,
            flip=False,  # its data set, digits: a mirrored digit is no digit
            threshold_lr=2e-3,
            latency=quick,
        ),
        "paper": SearchSettings(epochs=8, warmup_epochs=2, batch_size=128),
    }
    if name not in presets:
        raise ConfigError(f"unknown singlepath preset {name!r}; expected one of {sorted(presets)}")
    given = dict(overrides)
    latency = given.get("latency")  # a dict of settings; a LatencySettings is taken whole
    for kind, names, what in (
        (SearchSettings, given, "setting(s)"),
        (LatencySettings, latency if isinstance(latency, dict) else {}, "latency setting(s)"),
    ):
        known = {f.name for f in fields(kind)}
        if unknown := sorted(set(names) - known):
            raise ConfigError(
                f"singlepath preset {name!r}: unknown {what} {unknown}; expected some of "
                f"{sorted(known)}"
            )
    if isinstance(latency, dict):  # keep the preset's repeat rule, take the settings given
        given["latency"] = replace(presets[name].latency, **latency)
    return replace(presets[name], **given)


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class SearchData:
    """Normalised tensors at the search size, and the per-channel ``mean`` and ``std`` (of the
    training images scaled to [0, 1]) they were normalised with."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_search_data(s: SearchSettings) -> SearchData:
    """The training and validation images of a single-path search, both drawn with ``s.seed``
    from the data set's training split, disjoint (sizes:
    :class:`~autoshrink.singlepath.search.SearchSettings`); its test split is never read."""
    data = load_images(s.dataset, s.data_dir, seed=s.seed)
    order = np.random.default_rng(s.seed).permutation(len(data.train_y))
    n_val = s.val_images if s.val_images is not None else max(1, len(order) // 10)
    if n_val >= len(order):
        raise DataError(
            f"{data.name}: {len(order)} training images leave none to train on after "
            f"{n_val} validation images; lower --val-images"
        )
    val, rest = order[:n_val], order[n_val:]
    if s.train_images is not None and s.train_images > len(rest):  # it trained on fewer, unsaid
        raise DataError(
            f"{data.name}: {len(rest)} training images are left after {n_val} validation "
            f"images, fewer than --train-images {s.train_images}; lower it"
        )
    train = rest if s.train_images is None else rest[: s.train_images]
    tx, ty = data.train_x[train], data.train_y[train]
    vx, vy = data.train_x[val], data.train_y[val]
    mean, std = channel_stats(tx)

    def tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(normalise(x, mean, std))
        if t.shape[-1] != s.search_size:
            t = F.interpolate(t, size=(s.search_size, s.search_size), mode="bilinear")
        return t.contiguous()

    return SearchData(
        tensor(tx),
        torch.from_numpy(ty).long(),
        tensor(vx),
        torch.from_numpy(vy).long(),
        int(tx.shape[1]),
        len(data.classes),
        tuple(float(m) for m in mean),
        tuple(float(d) for d in std),
    )


def latency_term(lat: torch.Tensor, s: SearchSettings) -> torch.Tensor:
    """``λ·log(lat)``, or with a target ``λ·max(0, log(lat / target))``."""
    if s.latency_target_ms is None:
        return s.lam * torch.log(lat)
    return s.lam * F.relu(torch.log(lat / s.latency_target_ms))


# ------------------------------------------------------------------ the run
@dataclass
class SinglePathResult:
    """What :func:`run_singlepath` wrote to ``result.json``."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]


class _Search:
    """The supernet, its two optimisers and the schedule."""

    def __init__(self, s: SearchSettings, data: SearchData, model: LatencyModel) -> None:
        self.s, self.data, self.model = s, data, model
        torch.manual_seed(s.seed)
        spec = MobileNetV2Spec(
            width=s.width,
            image_size=s.search_size,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
        )
        self.net = SuperNet(spec)
        self.opt_w = torch.optim.SGD(
            self.net.weight_parameters(),
            lr=self.peak_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=s.weight_decay,
        )
        self.opt_t = torch.optim.Adam(self.net.threshold_parameters(), lr=s.threshold_lr)
        self.steps_per_epoch = math.ceil(len(data.train_y) / s.batch_size)

    @property
    def peak_lr(self) -> float:
        return self.s.lr_per_256 * self.s.batch_size / 256

    def lr_at(self, step: int) -> float:
        """Linear warm-up over the first epoch, then cosine to 0 at the last step."""
        spe = self.steps_per_epoch
        return warmup_cosine(step, self.peak_lr, spe, spe * self.s.epochs)

    def train_epoch(self, epoch: int) -> dict[str, float | None]:
        s, d = self.s, self.data
        searching = epoch > s.warmup_epochs
        gen = torch.Generator().manual_seed(s.seed * 100_003 + epoch)
        torch.manual_seed(s.seed * 100_003 + epoch)  # dropout: the same after a resume
        order = torch.randperm(len(d.train_y), generator=gen)
        self.net.train()
        ce_sum = lat_sum = 0.0
        n = 0
        for i in range(self.steps_per_epoch):
            idx = order[i * s.batch_size : (i + 1) * s.batch_size]
            x, y = d.train_x[idx], d.train_y[idx]
            if s.flip:
                flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flips
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            lr = self.lr_at((epoch - 1) * self.steps_per_epoch + i)
            for g in self.opt_w.param_groups:
                g["lr"] = lr
            for g in self.opt_t.param_groups:  # the same decay: the decisions settle
                g["lr"] = s.threshold_lr * lr / self.peak_lr
            ce = F.cross_entropy(self.net(x), y)
            loss = ce
            if searching:
                lat = self.model.blended(self.net)
                loss = ce + latency_term(lat, s)
                lat_sum += float(lat.detach()) * len(idx)
            self.opt_w.zero_grad(set_to_none=True)
            self.opt_t.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_w.step()
            if searching:
                self.opt_t.step()
            ce_sum += float(ce.detach()) * len(idx)
            n += len(idx)
        return {
            "train_loss": ce_sum / n,
            "blended_ms": lat_sum / n if searching else None,
            "images": n,
            "searching": searching,
        }

    def decisions_row(self) -> list[dict[str, Any]]:
        return [
            {"choice": layer.decision().choice, **layer.thresholds(), **layer.norms()}
            for layer in self.net.super_layers
        ]

    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The checkpoint's tensors, and the optimisers' JSON rest."""
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        rests = {}
        for name, opt in (("opt_w", self.opt_w), ("opt_t", self.opt_t)):
            t, rests[name] = flatten_optimizer(opt.state_dict(), name)
            tensors.update(t)
        return tensors, rests

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        self.net.load_state_dict(model)
        for name, opt in (("opt_w", self.opt_w), ("opt_t", self.opt_t)):
            opt.load_state_dict(unflatten_optimizer(tensors, state["optimizers"][name], name))


def check_same_settings(path: Path, s: SearchSettings) -> None:
    """Refuse to resume the run whose ``settings.json`` is ``path`` with other settings than
    ``s``, naming the first that differ; a damaged file is a one-line error naming it."""
    saved = read_json_file(path, JournalError, "settings")
    if not isinstance(saved, dict):
        raise JournalError(f"{path}: not a settings object; start a fresh --out")
    if "train_threads" not in saved:  # written before the settings held the threads
        log.warning("%s does not record the training threads; resuming on the ones given", path)
        saved["train_threads"] = s.train_threads
    if "flip" not in saved:  # flips became a setting with the per-weight norms (5 Dec 2026)
        raise JournalError(
            f"{path}: the run was started before the superkernel's thresholds read per-weight "
            "norms; its learned thresholds are on another scale, so it cannot be resumed: "
            "start a fresh --out"
        )
    changed = differences(saved, as_read_back(s.to_dict()))
    if changed:
        raise JournalError(
            f"{path}: the run was started with other settings ({first_three(changed)}); resume "
            "with the same command line or start a fresh --out"
        )


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
    created = not out.exists()
    try:
        with torch_threads(settings.train_threads), own_generators():  # the search seeds them
            return _run_singlepath(
                out, settings, resume=resume, table=None if table is None else Path(table)
            )
    except BaseException:
        if created:  # a start refused before it wrote anything leaves no folder behind
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a measured table or a checkpoint stays
        raise


@dataclass(frozen=True, kw_only=True)
class SummaryFields:
    """The JSON types of what is read back of an ended search's ``result.json`` (what the
    command line prints of it); a schema for :func:`~autoshrink.user_files.check_schema`,
    never built."""

    layers: list[str]
    deploy_size: int
    predicted_ms: float
    measured_ms: float
    relative_error: float
    latency_target_ms: float | None
    val_accuracy: float
    params: int
    macs: int
    search_seconds: float
    images_trained: int
    over_target: float | None = None  # not in a result.json written before it was added


def finished_result(out: Path) -> SinglePathResult:
    """The result of the ended search in ``out``: ``result.json`` (checked against
    :class:`SummaryFields`) and ``decisions.jsonl``; a damaged file is a one-line
    :class:`JournalError` naming it."""
    summary = read_json_file(out / RESULT, JournalError, "result")
    check_schema(out / RESULT, summary, SummaryFields, JournalError, "search's result")
    lines = read_text_file(out / DECISIONS, JournalError, "decisions").splitlines()
    try:
        history = [parse_record(line) for line in lines if line.strip()]
    except ValueError as err:
        raise JournalError(f"{out / DECISIONS}: not JSON lines ({err})") from None
    return SinglePathResult(summary, history)


def _train_epochs(
    out: Path,
    s: SearchSettings,
    search: _Search,
    model: LatencyModel,
    data: SearchData,
    *,
    resume: bool,
) -> list[dict[str, Any]]:
    """Train the supernet from its newest checkpoint (or from the start) to the last epoch,
    with a checkpoint and a line of ``decisions.jsonl`` after each; the epochs' rows."""
    ckpt_dir = out / "checkpoints"
    history: list[dict[str, Any]] = []
    start = 1
    ckpt = checkpoint_to_resume(ckpt_dir, resume)  # settings.json holds what the run is
    if ckpt is not None:
        with restoring(ckpt, ckpt_dir):
            search.restore(ckpt.tensors, ckpt.state)
            history = list(ckpt.state["history"])
        start = ckpt.epoch + 1
    elif not resume:  # checkpoints without settings.json: an unfinished start
        clear_earlier_run(ckpt_dir)
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
    search: _Search,
    model: LatencyModel,
    data: SearchData,
    history: list[dict[str, Any]],
    calibration: dict[str, float] | None,
    table_seconds: float,
    measured: int,
) -> SinglePathResult:
    """Write the network the search found (its architecture and weights), measure its latency
    at the deployment size, and write ``result.json``."""
    arch = search.net.derive().with_settings(image_size=s.deploy_size)
    arch.save(out / ARCH)
    net = search.net.derived_network().eval()
    network = {"architecture": arch.to_dict()}  # and the inputs' normalisation, for export
    save_tensors(out / WEIGHTS, net.state_dict(), weights_metadata(network, data.mean, data.std))
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


def _run_singlepath(
    out: Path, s: SearchSettings, *, resume: bool, table: Path | None
) -> SinglePathResult:
    # nor someone else's files (its latency table and calibration are read, then extended)
    writes = (ARCH, RESULT, DECISIONS, SETTINGS, WEIGHTS, "checkpoints")
    claim_folder(out, "singlepath", resume=resume, writes=writes)
    if table is not None:
        check_output_file(table, "--latency-table")
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / SETTINGS).is_file():
        check_same_settings(out / SETTINGS, s)
        if (out / RESULT).is_file():  # the search ended: nothing to train, measure or write
            ended = finished_result(out)  # read first: a damaged one is an error, not "kept"
            log.info("%s: the search had ended; %s is kept as it was", out, RESULT)
            return ended
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
    if resume and (out / MODEL).is_file():  # the model the run began with, whatever the table
        model, calibration = load_run_model(out / MODEL)  # holds now (a shared one grows)
        measured = 0
        log.info("%s: resuming with the latency model the run began with", out / MODEL)
    else:
        model, cal, measured = prepare_model(
            table or out / TABLE, deploy, s.latency, calibration_networks=s.calibration_networks
        )
        calibration = None if cal is None else {"scale": cal.scale, "offset": cal.offset}
    table_seconds = time.perf_counter() - t0
    search = _Search(s, data, model)
    if s.latency_target_ms is not None:
        model.check_target(
            s.latency_target_ms, [layer.slot.skippable for layer in search.net.super_layers]
        )
    write_json(out / SETTINGS, s.to_dict())  # every check passed: the folder is this run's
    if not (out / MODEL).is_file():
        write_json(out / MODEL, model.to_dict(calibration), indent=1)
    history = _train_epochs(out, s, search, model, data, resume=resume)
    return _write_found(out, s, search, model, data, history, calibration, table_seconds, measured)
