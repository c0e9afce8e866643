"""The Single-Path latency model: a per-layer table measured on the user's device, blended by
the superkernels' indicators.

Every network of the space is a chain of :class:`~autoshrink.hardware.blocks.Block` s: stem,
the fixed first block, one ``mbconv`` block per searchable layer that is not skipped, head and
classifier (:func:`arch_blocks`). :func:`measure_space_table` measures each distinct block of
the space once -- the 4 choices of every searchable layer, at the *deployment* size -- alone,
with :func:`autoshrink.hardware.latency.measure_module` (torch eager, or the block exported to
ONNX and run by onnxruntime), and keeps them in a
:class:`~autoshrink.hardware.table.LatencyTable` (``autoshrink.latency-table/1``; saved and
reused: only the blocks a table lacks are measured). As there, each block's median less the
cost of an identity call on its output (``io`` blocks) is its share; the network pays one
call.

:class:`LatencyModel` reads the table for one macro: a fixed part (stem, first block, head,
classifier, the one call) and per layer the cost ``R(k, e)`` of each choice. The supernet's
latency is the paper's blend (Stamoulis et al. 2019, eq. 7)::

    R_e = R(3, e) + use_5x5 · (R(5, e) − R(3, e))
    R_l = use_e3 · (R_e3 + use_e6 · (R_e6 − R_e3))
    latency = fixed + Σ_l R_l

With hard indicators it equals :meth:`LatencyModel.predict` of the derived architecture,
which is the table's own prediction for that chain of blocks.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoshrink.atomic_write import locked, write_json
from autoshrink.cost.mobilenetv2 import BlockPlacement, MobileNetV2Spec
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.hardware.blocks import Block
from autoshrink.hardware.latency import check_available, environment, measure_module
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.hardware.table import DEFINING, MAX_BLOCK_MS, LatencyTable, measure_block
from autoshrink.singlepath.space import (
    CHOICES,
    SKIP,
    MBConvArch,
    build_arch,
    macro_slots,
)
from autoshrink.singlepath.superkernel import SuperNet
from autoshrink.user_files import check_schema, read_json_file

log = logging.getLogger(__name__)

ACT = "relu6"


def mbconv_block(b: BlockPlacement) -> Block:
    """The table block of one inverted-residual layer."""
    e = b.hidden // b.in_channels
    return Block(
        "mbconv",
        (b.in_channels,),
        b.in_size,
        b.out_channels,
        f"k{b.kernel}e{e}",
        ACT,
        stride=b.stride,
    )


def fixed_blocks(spec: MobileNetV2Spec) -> tuple[list[Block], list[Block]]:
    """The blocks every network of ``spec``'s macro runs: ``(before the layers, after)``."""
    first, slots = macro_slots(spec)
    stem = Block(
        "stem", (spec.in_channels,), spec.image_size, spec.stem_channels, act=ACT, stride=2
    )
    last = slots[-1]
    head = Block("head", (last.out_channels,), last.out_size, spec.last_channels, act=ACT)
    classifier = Block("classifier", (spec.last_channels,), last.out_size, spec.num_classes)
    return [stem, mbconv_block(first)], [head, classifier]


def arch_blocks(arch: MBConvArch) -> list[Block]:
    """The chain of blocks the network ``arch`` runs."""
    before, after = fixed_blocks(arch.spec)
    _, slots = macro_slots(arch.spec)
    layers = [
        mbconv_block(s.placement(c)) for s, c in zip(slots, arch.layers, strict=True) if c != SKIP
    ]
    return before + layers + after


def space_blocks(spec: MobileNetV2Spec) -> list[Block]:
    """Every distinct block of the space of ``spec``'s macro (first-seen order)."""
    before, after = fixed_blocks(spec)
    _, slots = macro_slots(spec)
    blocks = before + [mbconv_block(s.placement(c)) for s in slots for c in CHOICES] + after
    return list({b.key: b for b in blocks}.values())


def measure_space_table(
    spec: MobileNetV2Spec,
    settings: LatencySettings,
    table: LatencyTable | None = None,
    *,
    on_block: Callable[[int, int], None] | None = None,
    source: str = "latency table",
) -> LatencyTable:
    """``table`` (or a new one for ``settings``) with every block of the space measured.

    Blocks the table already holds keep their measurement; the others are measured alone with
    ``settings`` (either backend). A table measured with other settings, or one that lacks
    blocks and was measured on another machine (:meth:`LatencyTable.check_machine`), raises
    HardwareError naming ``source``.
    """
    check_available(settings)
    if table is None:
        table = LatencyTable(settings, {}, environment(settings))
    else:
        table.check_settings(settings, source)
    missing = table.missing(space_blocks(spec))
    if missing:
        table.check_machine(source)
    entries = dict(table.entries)
    for i, block in enumerate(missing):
        entries[block.key] = measure_block(block, table.settings)
        log.debug(
            "[%d/%d] %s: %.3f ms", i + 1, len(missing), block.key, entries[block.key].median_ms
        )
        if on_block is not None:
            on_block(i + 1, len(missing))
    return table if not missing else table.with_measured(entries)


def load_or_measure(
    path: Path, spec: MobileNetV2Spec, settings: LatencySettings
) -> tuple[LatencyTable, int]:
    """The table at ``path`` completed for ``spec``'s space (measuring what it lacks and saving
    it back, merged with what other runs sharing the file saved meanwhile), or a new one;
    ``(table, blocks measured now)``."""
    table = LatencyTable.load_checked(path, settings)
    before = len(table) if table is not None else 0
    completed = measure_space_table(spec, settings, table, source=str(path))
    measured = len(completed) - before
    if measured:
        completed = completed.save_shared(path)
    return completed, measured


@dataclass(frozen=True)
class LatencyModel:
    """Milliseconds of the fixed part and of every choice of every searchable layer."""

    fixed_ms: float
    layer_ms: tuple[dict[str, float], ...]

    def in_range(self) -> bool:
        """Whether every latency of the model lies in 0 to :data:`MAX_BLOCK_MS` (an hour): what
        a run's model may hold."""
        costs = (self.fixed_ms, *(v for c in self.layer_ms for v in c.values()))
        return all(0 <= v <= MAX_BLOCK_MS for v in costs)

    @classmethod
    def from_table(cls, table: LatencyTable, spec: MobileNetV2Spec) -> LatencyModel:
        """The model of ``spec``'s space from ``table``: each block's median less the cost of its
        call (its ``io`` block), paid once by the fixed part; a :class:`HardwareError` when the
        table lacks a block of the space."""
        needed = space_blocks(spec)
        lacking = table.missing(needed)
        if lacking:
            raise HardwareError(
                f"latency table lacks {len(lacking)} block(s) of this space, e.g. "
                f"{lacking[0].key!r}; measure it for width {spec.width}, size {spec.image_size}"
            )
        e = table.entries

        def share(b: Block) -> float:
            return e[b.key].median_ms - e[b.io().key].median_ms

        def layer_share(b: Block) -> float:  # a negative cost: a run's model may hold none
            ms = share(b)
            if ms < 0:
                raise HardwareError(
                    f"latency table: {b.key!r} takes {e[b.key].median_ms:g} ms, less than the "
                    f"call of its output alone ({e[b.io().key].median_ms:g} ms): re-measure it"
                )
            return ms

        before, after = fixed_blocks(spec)
        fixed = sum(share(b) for b in before + after) + e[after[-1].io().key].median_ms
        _, slots = macro_slots(spec)
        layers = tuple(
            {c: layer_share(mbconv_block(s.placement(c))) for c in CHOICES} for s in slots
        )
        return cls(fixed, layers)

    def calibrated(self, cal: Calibration) -> LatencyModel:
        """This model through ``cal``'s affine map (the offset goes to the fixed part)."""
        return LatencyModel(
            cal.scale * self.fixed_ms + cal.offset,
            tuple({c: cal.scale * v for c, v in costs.items()} for costs in self.layer_ms),
        )

    def predict(self, arch: MBConvArch) -> float:
        """Predicted ms of the network ``arch`` (its macro must be the model's)."""
        return self.fixed_ms + sum(
            costs[c] for costs, c in zip(self.layer_ms, arch.layers, strict=True) if c != SKIP
        )

    def blended(self, net: SuperNet) -> torch.Tensor:
        """The supernet's latency (ms) as a differentiable function of its indicators."""
        total = torch.tensor(self.fixed_ms)
        for layer, r in zip(net.super_layers, self.layer_ms, strict=True):
            use_5x5, use_e3, use_e6, _ = layer.indicators()
            r_e3 = r["k3e3"] + use_5x5 * (r["k5e3"] - r["k3e3"])
            r_e6 = r["k3e6"] + use_5x5 * (r["k5e6"] - r["k3e6"])
            total = total + use_e3 * (r_e3 + use_e6 * (r_e6 - r_e3))
        return total

    def to_dict(self, calibration: dict[str, float] | None) -> dict[str, Any]:
        """The JSON of this (calibrated) model and of its ``calibration``'s ``{"scale",
        "offset"}``, as a run folder keeps the model it searched with (:func:`load_run_model`)."""
        return {
            "format": MODEL_FORMAT,
            "fixed_ms": self.fixed_ms,
            "layer_ms": [dict(costs) for costs in self.layer_ms],
            "calibration": calibration,
        }

    def fastest_ms(self, skippable: Iterable[bool]) -> float:
        """Predicted ms of the fastest network of the space: the fixed part, and each layer's
        cheapest choice (nothing for a layer that may be skipped)."""
        return self.fixed_ms + sum(
            0.0 if skip else min(costs.values())
            for costs, skip in zip(self.layer_ms, skippable, strict=True)
        )

    def check_target(self, target_ms: float, skippable: Iterable[bool]) -> None:
        """ConfigError when no network of the space can meet ``target_ms``."""
        floor = self.fastest_ms(skippable)
        if target_ms <= self.fixed_ms:
            raise ConfigError(
                f"--latency-target {target_ms:g} ms is below the fixed part of the network "
                f"(stem, first block, head, classifier: {self.fixed_ms:.2f} ms on this device)"
            )
        if target_ms < floor:
            raise ConfigError(
                f"--latency-target {target_ms:g} ms is below the fastest network of the space "
                f"({floor:.2f} ms on this device)"
            )


CALIBRATION_FORMAT = "autoshrink.singlepath-calibration/1"
MODEL_FORMAT = "autoshrink.singlepath-latency-model/1"


@dataclass(frozen=True, kw_only=True)
class RunModelFields:
    """The JSON types of a run's ``latency_model.json`` (a schema, never built)."""

    format: str
    fixed_ms: float
    layer_ms: list[dict[str, float]]
    calibration: dict[str, float] | None = None


def load_run_model(path: Path, layers: int) -> tuple[LatencyModel, dict[str, float] | None]:
    """The model of ``layers`` searchable layers a run searched with and its calibration's
    ``{"scale", "offset"}`` (``None`` uncalibrated), from :meth:`LatencyModel.to_dict`'s file
    ``path``; a damaged file is a one-line :class:`ConfigError` naming it."""
    d = read_json_file(path, ConfigError, "latency model")
    check_schema(path, d, RunModelFields, ConfigError, "latency model")
    if d["format"] != MODEL_FORMAT:
        raise ConfigError(f"{path}: not a latency model ('format' must be {MODEL_FORMAT!r})")
    costs = d["layer_ms"]
    if len(costs) != layers or any(sorted(c) != sorted(CHOICES) for c in costs):
        raise ConfigError(
            f"{path}: 'layer_ms' must hold {layers} layers, each the ms of the choices "
            f"{', '.join(CHOICES)}"
        )
    model = LatencyModel(float(d["fixed_ms"]), tuple(dict(c) for c in costs))
    if not model.in_range():
        raise ConfigError(f"{path}: a latency outside 0 to {MAX_BLOCK_MS:g} ms (an hour)")
    calibration = d.get("calibration")
    if calibration is not None and not (
        sorted(calibration) == ["offset", "scale"]
        and affine_map(calibration["scale"], calibration["offset"])
    ):
        raise ConfigError(
            f'{path}: \'calibration\' must be {{"scale": a finite number > 0, "offset": a '
            f"finite number}}, got {calibration}"
        )
    return model, calibration


def affine_map(scale: float, offset: float) -> bool:
    """Whether ``scale`` and ``offset`` make a calibration's map: a finite scale > 0 and a
    finite offset."""
    return 0 < scale < math.inf and math.isfinite(offset)


@dataclass(frozen=True)
class Calibration:
    """``measured ≈ scale · table_sum + offset``, fitted on whole networks measured end to end.

    Blocks timed alone run with their weights and input hot in cache; inside a network each
    layer reads weights and activations the previous layers pushed out. On the dev box the
    table's plain sum came out 15-30% below the whole network with onnxruntime, so the model
    is fitted (least squares) on a few reference networks of the space measured whole with the
    same settings. The map is affine, so the blend stays linear in each indicator.
    """

    scale: float
    offset: float
    points: tuple[tuple[str, float, float], ...] = ()  # (architecture key, table sum, measured)

    def to_dict(self, settings: LatencySettings, spec: MobileNetV2Spec) -> dict[str, Any]:
        """The JSON object :meth:`load_matching` reads: the map, the defining ``settings`` and
        ``spec``'s macro it was fitted for, and its points."""
        return {
            "format": CALIBRATION_FORMAT,
            "scale": self.scale,
            "offset": self.offset,
            "settings": {k: getattr(settings, k) for k in DEFINING},
            "macro": {
                "width": spec.width,
                "image_size": spec.image_size,
                "num_classes": spec.num_classes,
                "in_channels": spec.in_channels,
            },
            "points": [{"layers": k, "table_ms": t, "measured_ms": m} for k, t, m in self.points],
        }

    @classmethod
    def load_matching(
        cls, path: Path, settings: LatencySettings, spec: MobileNetV2Spec, table: LatencyModel
    ) -> Calibration | None:
        """The calibration at ``path`` when it was fitted for these settings and macro, on the
        ``table`` (uncalibrated) as it is now: one fitted before the table changed (edited, or
        re-measured by another process) maps sums the table no longer gives."""
        if not path.is_file():
            return None
        d = read_json_file(path, ConfigError, "calibration")
        if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
            raise ConfigError(
                f"{path}: not a calibration ('format' must be {CALIBRATION_FORMAT!r})"
            )
        expected = cls(1.0, 0.0).to_dict(settings, spec)
        fit = next((c for c in _calibrations(d) if _same_fit(c, expected)), None)
        if fit is None:
            return None
        try:
            points = tuple(
                (p["layers"], float(p["table_ms"]), float(p["measured_ms"])) for p in fit["points"]
            )
            cal = cls(float(fit["scale"]), float(fit["offset"]), points)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: malformed calibration ({err})") from None
        now = {a.key: table.predict(a) for a in reference_archs(spec, len(points))}
        if any(not math.isclose(t, now.get(k, math.nan), rel_tol=1e-9) for k, t, _ in points):
            log.warning("%s was fitted on the table before it changed: not used", path)
            return None
        _check_usable(path, cal, table, spec)
        return cal


def _check_usable(path: Path, cal: Calibration, table: LatencyModel, spec: MobileNetV2Spec) -> None:
    """ConfigError naming ``path`` when ``cal`` maps ``table`` to no time (or less) for the fixed
    part or the fastest network, or to latencies a run's model may not hold (what
    :func:`fit_calibration` never fits and :func:`load_run_model` refuses): an edited file was
    used, and the search trained against negative milliseconds."""
    if not affine_map(cal.scale, cal.offset):
        raise ConfigError(
            f"{path}: a calibration of scale {cal.scale:g} and offset {cal.offset:g} ms: the scale "
            "must be a finite number > 0, the offset finite; remove the file to fit a new one"
        )
    fitted = table.calibrated(cal)
    fastest = fitted.fastest_ms([s.skippable for s in macro_slots(spec)[1]])
    for ms, what in ((fitted.fixed_ms, "the fixed part"), (fastest, "the fastest network")):
        if ms <= 0:
            raise ConfigError(
                f"{path}: its calibration (scale {cal.scale:g}, offset {cal.offset:g} ms) predicts "
                f"{ms:.3g} ms for {what}; remove the file to fit a new one"
            )
    if not fitted.in_range():
        raise ConfigError(
            f"{path}: its calibration (scale {cal.scale:g}, offset {cal.offset:g} ms) gives a "
            f"latency outside 0 to {MAX_BLOCK_MS:g} ms (an hour); remove the file to fit a new one"
        )


def _calibrations(d: dict[str, Any]) -> list[Any]:
    """The calibrations a calibration file holds: its own object's, then those of other
    settings or macros kept under ``others`` (one per table shared by runs of several widths,
    sizes or data sets)."""
    others = d.get("others", [])
    return [d, *(others if isinstance(others, list) else [])]


def _same_fit(d: Any, expected: dict[str, Any]) -> bool:
    """Whether the calibration object ``d`` was fitted for ``expected``'s settings and macro."""
    if not isinstance(d, dict):
        return False
    saved = dict(d)
    if isinstance(saved.get("settings"), dict):  # written before the clock was recorded:
        saved["settings"] = {"clock": "wall", **saved["settings"]}  # the default's
    return all(saved.get(k) == expected[k] for k in ("settings", "macro"))


def save_calibration(path: Path, fitted: dict[str, Any]) -> None:
    """Write the calibration object ``fitted`` to ``path``, keeping under ``others`` those the
    file held for other settings or macros: a run of another width used to replace them, so
    the next run of the first measured a new calibration (another model, another search).
    Read, merged and replaced under the file's lock (:func:`~autoshrink.atomic_write.locked`):
    runs of two widths that finish calibrating at once each keep the other's."""
    with locked(path):
        try:
            d = read_json_file(path, ConfigError, "calibration") if path.is_file() else None
        except ConfigError:  # not a calibration file: replaced, as it always was
            d = None
        others: list[Any] = []
        if isinstance(d, dict) and d.get("format") == CALIBRATION_FORMAT:
            others = [
                {k: v for k, v in c.items() if k != "others"}
                for c in _calibrations(d)
                if isinstance(c, dict) and not _same_fit(c, fitted)
            ]
        write_json(path, {**fitted, "others": others} if others else fitted, indent=1)


def reference_archs(spec: MobileNetV2Spec, count: int = 6, seed: int = 0) -> list[MBConvArch]:
    """Networks spanning the space: all ``k3e3``, all ``k3e6`` (MobileNetV2), all ``k5e6``,
    then seeded random ones."""
    _, slots = macro_slots(spec)

    def arch(layers: tuple[str, ...]) -> MBConvArch:
        return MBConvArch(
            width=spec.width,
            image_size=spec.image_size,
            num_classes=spec.num_classes,
            in_channels=spec.in_channels,
            layers=layers,
        )

    archs = [arch((c,) * len(slots)) for c in ("k3e3", "k3e6", "k5e6")]
    rng = random.Random(seed)
    while len(archs) < count:
        layers = tuple(rng.choice([*CHOICES, SKIP] if s.skippable else CHOICES) for s in slots)
        archs.append(arch(layers))
    return archs[:count]


def fit_calibration(
    model: LatencyModel, archs: Sequence[MBConvArch], settings: LatencySettings
) -> Calibration:
    """Measure each of ``archs`` whole and fit ``measured = scale · table + offset``; where
    that line predicts no time (or less) for the fixed part or the fastest network of the
    space -- noisy measurements, on a busy machine --, a line through zero instead, with a
    warning (below zero the search's latency term would reward bigger networks)."""
    points = []
    for arch in archs:
        shape = (settings.batch, arch.in_channels, arch.image_size, arch.image_size)
        r = measure_module(build_arch(arch).eval(), [shape], settings, with_environment=False)
        points.append((arch.key, model.predict(arch), r.median_ms))
        log.info("calibration: table %.3f ms, measured %.3f ms", points[-1][1], r.median_ms)
    x = np.array([p[1] for p in points])
    y = np.array([p[2] for p in points])
    if len(points) >= 2 and np.ptp(x) > 0:
        scale, offset = np.polyfit(x, y, 1)
    else:
        scale, offset = float(y.sum()) / float(x.sum()), 0.0
    cal = Calibration(float(scale), float(offset), tuple(points))
    fitted = model.calibrated(cal)
    fastest = fitted.fastest_ms([s.skippable for s in macro_slots(archs[0].spec)[1]])
    if scale > 0 and min(fitted.fixed_ms, fastest) <= 0:
        free = (
            (fitted.fixed_ms, "the fixed part (stem, first block, head, classifier)")
            if fitted.fixed_ms <= 0
            else (fastest, "the fastest network")
        )
        log.warning(
            "latency calibration: the fitted line (scale %.3g, offset %.3g ms) predicts %.3g ms "
            "for %s; the measurements are noisy (a busy machine?): fitting a line through zero "
            "instead",
            scale,
            offset,
            *free,
        )
        scale, offset = float((x * y).sum() / (x * x).sum()), 0.0
        cal = Calibration(scale, offset, tuple(points))
    if not scale > 0:
        raise HardwareError(f"latency calibration failed (fitted scale {scale:.3g}); re-measure")
    return cal


def calibration_path(table_path: Path) -> Path:
    """Where the calibration of the table at ``table_path`` is kept."""
    return table_path.with_name(table_path.stem + ".calibration.json")


def prepare_model(
    table_path: Path,
    spec: MobileNetV2Spec,
    settings: LatencySettings,
    *,
    calibration_networks: int = 6,
) -> tuple[LatencyModel, Calibration | None, int]:
    """The latency model of ``spec``'s space on this device: the table at ``table_path``
    completed (:func:`load_or_measure`) and, unless ``calibration_networks`` is 0, calibrated
    on that many reference networks (refitted when the table changed, else reused from
    :func:`calibration_path`). Returns ``(model, calibration, blocks measured now)``."""
    table, new = load_or_measure(table_path, spec, settings)
    raw = LatencyModel.from_table(table, spec)
    if calibration_networks == 0:
        return raw, None, new
    cal_file = calibration_path(table_path)
    cal = None if new else Calibration.load_matching(cal_file, settings, spec, raw)
    if cal is None or len(cal.points) != calibration_networks:
        cal = fit_calibration(raw, reference_archs(spec, calibration_networks), settings)
        save_calibration(cal_file, cal.to_dict(settings, spec))
    return raw.calibrated(cal), cal, new
