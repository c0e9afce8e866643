"""Ship a found cell without autoshrink: ONNX, safetensors weights and one plain-PyTorch file.

:func:`export_network` writes into a folder

- ``model.onnx`` -- the network (batch dimension dynamic), checked against PyTorch with
  onnxruntime on a random batch;
- ``model.safetensors`` -- the weights (trained ones from ``autoshrink train``, or a seeded
  random initialisation with random batch-norm statistics, so the checks test the BN path);
- ``model.py`` -- one readable PyTorch file generated for this cell and macro
  (:mod:`autoshrink.export.source`); it imports only ``torch`` and the standard library, and
  is imported back and checked to give PyTorch's outputs from the same weights;
- ``cell.json`` and ``export.json`` (the macro, the files, the input shape, the two checks
  and, for the weights of ``autoshrink train``, the ``normalisation`` the inputs need).

A weights file is checked before anything is written: a folder, a file that is not
safetensors, tensors that do not fit the network, a tensor holding NaN/inf (e.g. the
weights of a training that diverged), or metadata of ``autoshrink train`` that is malformed
(:func:`~autoshrink.training.weights_file.read_trained_for`), records a network that cannot be
built or a normalisation of another number of channels is a one-line
:class:`~autoshrink.errors.ConfigError` naming the file. Every JSON written is strict: a
difference that cannot be measured is ``null``.

The standalone modules have the same attribute names as :mod:`autoshrink.nn.cnn`, so one
weights file fits both. :func:`write_bundle` is the sequence itself (seeded build, weights,
the files, both checks, the manifest); :mod:`autoshrink.export.mbconv` runs it for the
networks of the inverted-residual space.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from autoshrink import __version__
from autoshrink.atomic_write import save_tensors, write_atomic, write_json, write_text_atomic
from autoshrink.devices import own_generators
from autoshrink.errors import ConfigError
from autoshrink.export.source import standalone_source
from autoshrink.graph import Cell
from autoshrink.hardware.latency import (
    network_input_shape,
    onnx_bytes,
    onnx_module,
    onnxruntime_module,
    ort_session,
)
from autoshrink.nn.cnn import build_network
from autoshrink.nn.state_fit import misfit, non_finite, other_kind
from autoshrink.nouns import count
from autoshrink.outputs import claim_folder, mark_unfinished
from autoshrink.ranges import WHOLE, check_seed, check_value
from autoshrink.singlepath.space import MBConvArch
from autoshrink.spaces.macros import DEFAULT_MACRO, MacroSpec, get_macro
from autoshrink.training.weights_file import TrainedFor, read_trained_for, weights_metadata

ONNX, WEIGHTS, CODE, CELL, MANIFEST = (
    "model.onnx",
    "model.safetensors",
    "model.py",
    "cell.json",
    "export.json",
)
ATOL, RTOL = 1e-4, 1e-3


@dataclass(frozen=True)
class ExportResult:
    """Where the files went and how closely each artefact reproduced PyTorch's outputs."""

    out_dir: Path
    files: tuple[str, ...]
    input_shape: tuple[int, ...]
    onnx_max_abs_diff: float | None  # None: not measurable (see compare)
    standalone_max_abs_diff: float | None
    ok: bool  # both outputs within atol + RTOL * |torch| of PyTorch's
    atol: float = ATOL  # the checks' absolute tolerance: ATOL, scaled up by outputs above 1


def weights_file(path: str | Path) -> Path:
    """``path`` as a Path, checked to be a file: missing or a folder is a one-line ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a .safetensors weights file")
    if not path.exists():
        raise ConfigError(f"{path}: no such weights file")
    return path


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors file into ``model`` (strict); a mismatch, or a tensor holding NaN or
    inf, is a one-line ConfigError."""
    path = weights_file(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a safetensors file ({err})") from None
    what = misfit(model, state)
    if what is not None:
        raise ConfigError(
            f"{path} does not fit this network ({what}); pass the cell or architecture and "
            "the --width/--in-channels/--num-classes it was trained with"
        )
    bad = non_finite(state)
    if bad is not None:
        raise ConfigError(
            f"{path}: tensor {bad} holds NaN or inf values (weights of a training that "
            "diverged?); nothing exported"
        )
    cast = other_kind(model, state)
    if cast is not None:
        said = str(state[cast].dtype).removeprefix("torch.")
        own = str(model.state_dict()[cast].dtype).removeprefix("torch.")
        raise ConfigError(
            f"{path}: tensor {cast} holds {said} values, the network's are {own}; nothing exported"
        )
    model.load_state_dict(state)


def check_trained_network(weights: Path, trained: TrainedFor, network: dict[str, Any]) -> None:
    """Raise a one-line :class:`ConfigError` when ``weights`` were trained (``trained``: their
    metadata) for another network than ``network`` (``{"cell": ...}`` or ``{"architecture":
    ...}``): weights of another cell often fit its tensors' shapes, and the export would pass
    its own checks with a network that computes something else. A cell is compared node by
    node, since its weights follow the node numbers (the same graph numbered otherwise is
    another network to them); an architecture by its layer choices."""
    beside = "export the cell file autoshrink train wrote beside them, cell.json"
    if "cell" in network and trained.cell is not None:
        was = Cell.from_dict(trained.cell, f"{weights}: the cell in its metadata")
        now = Cell.from_dict(network["cell"])
        if _built(was) == _built(now):  # dead nodes, which build nothing, may differ
            return
        if was.key == now.key:
            raise ConfigError(
                f"{weights}: trained for this cell with its nodes numbered otherwise, and the "
                f"weights follow the node numbers; {beside}"
            )
        raise ConfigError(
            f"{weights}: the weights of another cell (key {was.key}, "
            f"{count(was.num_edges, 'edge')}), not of this one (key {now.key}, "
            f"{count(now.num_edges, 'edge')}); {beside}"
        )
    if "architecture" in network and trained.architecture is not None:
        was_layers = trained.architecture.get("layers")
        now_layers = network["architecture"]["layers"]
        if was_layers != now_layers:
            raise ConfigError(
                f"{weights}: the weights of another architecture (layers "
                f"{','.join(map(str, was_layers or []))}), not of this one "
                f"({','.join(now_layers)}); export the architecture.json beside them"
            )
    trained_for = "cell" if trained.cell is not None else "architecture"
    if getattr(trained, trained_for) is not None and trained_for not in network:
        raise ConfigError(
            f"{weights}: trained for {'a cell' if trained_for == 'cell' else 'an architecture'}, "
            f"not for {'a cell' if 'cell' in network else 'an architecture'} as the file given"
        )


def _built(cell: Cell) -> tuple[Any, ...]:
    """What of ``cell`` its network is built from: its edges, activation and the ops of its
    live nodes by number."""
    return cell.edges, cell.activation, tuple((n, cell.ops[n]) for n in cell.live_nodes)


def infer_settings(
    path: str | Path, macro: str | None = None, *, architecture: bool = False
) -> dict[str, Any]:
    """The network settings a weights file fixes: ``in_channels`` and ``num_classes`` (from
    the shapes of ``stem.0.weight`` and ``classifier.weight``) and, for the weights of
    ``autoshrink train`` (:mod:`~autoshrink.training.weights_file`), the ``image_size`` and
    ``width`` it trained at and the ``macro`` by name -- of a cell's network, or with
    ``architecture`` of an mbconv architecture (weights of the other kind give their shapes
    only, and are refused when loaded). With ``macro`` (the one asked for), weights trained
    for another macro are a one-line :class:`ConfigError` saying which to pass."""
    settings: dict[str, Any] = infer_shapes(path)
    trained = read_trained_for(weights_file(path))
    if trained is None:
        return settings
    check_trained_settings(Path(path), trained)
    network = (trained.architecture if architecture else trained.macro) or {}
    name = None if architecture else network.get("name")
    if macro is not None and name is not None and name != macro:
        raise ConfigError(f"{path}: the weights of a {name} network; pass --macro {name}")
    settings |= {k: network[k] for k in ("image_size", "width") if k in network}
    return settings | ({"macro": name} if name is not None else {})


def check_trained_settings(weights: Path, trained: TrainedFor) -> None:
    """Raise a one-line :class:`ConfigError` naming ``weights`` and its metadata's ``network``
    when the network it records (``trained``) cannot be built: an unknown macro, or settings
    out of range (an image size of -5, or of 10^6, which ran out of memory). Unchecked, the
    error came later without the file's name, as if the flags had been wrong."""
    where = f"{weights}: metadata 'network'"
    if trained.architecture is not None:
        MBConvArch.from_dict(trained.architecture, f"{where}: architecture")
        return
    name = trained.macro.get("name", DEFAULT_MACRO)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: the macro's name must be a string, got {name!r}")
    settings = {k: v for k, v in trained.macro.items() if k != "name"}
    try:
        get_macro(name, **settings)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def check_normalisation_channels(weights: Path, trained: TrainedFor, channels: int) -> None:
    """Raise a one-line :class:`ConfigError` naming ``weights`` when the normalisation its
    metadata records (``trained``) is not one per input channel of the network (``channels``):
    export.json would tell how to prepare images the network does not take."""
    if trained.normalisation is None:
        return
    got = len(trained.normalisation["mean"])
    if got != channels:
        raise ConfigError(
            f"{weights}: metadata 'normalisation' has {got} channel(s), the network's input "
            f"{channels}"
        )


def infer_shapes(path: str | Path) -> dict[str, int]:
    """``in_channels`` and ``num_classes`` of a weights file of a macro network (from the
    shapes of ``stem.0.weight`` and ``classifier.weight``), read from its header."""
    path = weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            stem = f.get_slice("stem.0.weight").get_shape()
            classifier = f.get_slice("classifier.weight").get_shape()
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{path}: not the weights of a macro network ({err})") from None
    if len(stem) != 4 or len(classifier) != 2:
        raise ConfigError(
            f"{path}: not the weights of a macro network (stem.0.weight of shape {list(stem)}, "
            f"classifier.weight of shape {list(classifier)}; expected 4 and 2 dimensions)"
        )
    return {"in_channels": int(stem[1]), "num_classes": int(classifier[0])}


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Give every batch norm random affine parameters and running statistics (seeded)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                if m.running_mean is not None and m.running_var is not None:
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                    m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def check_atol(expected: np.ndarray) -> float:
    """The absolute tolerance of the checks: ATOL times the largest finite ``|expected|`` when
    that is above 1. Float32 rounding grows with the values a network computes, so a logit
    near 0 beside others in the thousands (a random init) differs by ~1e-3 in a correct export."""
    finite = np.abs(expected[np.isfinite(expected)])
    return ATOL * max(1.0, float(finite.max()) if finite.size else 1.0)


def compare(got: np.ndarray, expected: np.ndarray) -> tuple[float | None, bool]:
    """``(largest absolute difference, all within check_atol(expected) + RTOL * |expected|)``;
    the difference is ``None`` when it cannot be measured (other shapes, NaN or inf outputs)."""
    if got.shape != expected.shape:
        return None, False
    ok = bool(np.allclose(got, expected, rtol=RTOL, atol=check_atol(expected)))
    diff = float(np.abs(got - expected).max())
    return (diff if math.isfinite(diff) else None), ok


def write_onnx_checked(
    model: nn.Module, x: torch.Tensor, expected: np.ndarray, path: Path
) -> tuple[float | None, bool]:
    """Write ``model`` as ONNX (batch dimension dynamic) to ``path`` and run it on ``x`` with
    onnxruntime; :func:`compare` of its outputs with PyTorch's ``expected``."""
    model_bytes = onnx_bytes(model, [x[:1]], dynamic_batch=True)
    write_atomic(path, lambda tmp: tmp.write_bytes(model_bytes))
    session = ort_session(path.read_bytes())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return compare(got, expected)


def import_file(path: Path, name: str = "autoshrink_exported_model") -> Any:
    """Import a Python file as a fresh module (not added to ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_bundle(
    build: Callable[[], nn.Module],
    out_dir: str | Path,
    shape: tuple[int, ...],
    source: str,
    described: tuple[str, Callable[[Path], object]],
    *,
    weights: str | Path | None,
    seed: int,
    manifest: dict[str, Any],
    network: dict[str, Any],
) -> ExportResult:
    """The export of any network: ``build()`` (called under ``seed``) gets the weights of
    ``weights`` (strict; refused when their metadata says they were trained for another
    network than ``network``, ``{"cell": ...}`` or ``{"architecture": ...}``: see
    :func:`check_trained_network`) or random batch-norm statistics; then ``model.onnx``
    (checked with onnxruntime on a seeded random batch of ``shape``), ``model.safetensors`` (its
    metadata names ``network`` and the normalisation of ``weights``, if they say it, as
    ``autoshrink train``'s do: an export's weights are checked and sized like them),
    ``model.py`` (``source``, imported back and checked on the same batch), the
    description file (``described``: its name and the function that writes it) and
    ``export.json`` (``manifest``'s entries, the files, the input and output shapes, the
    weights, the checks) in ``out_dir``."""
    name, write = described
    check_value("export: check_batch", shape[0], WHOLE)  # an empty batch failed, files half-written
    check_seed("export: seed", seed)
    files = (ONNX, WEIGHTS, CODE, name, MANIFEST)
    # an earlier export is kept: writing over it mixed two networks' files, or lost trained ones
    out = claim_folder(out_dir, "export", resume=False, writes=files)
    onnx_module()  # model.onnx is written with onnx and checked with onnxruntime: both first
    onnxruntime_module()
    gen = torch.Generator().manual_seed(seed)
    with own_generators():
        torch.manual_seed(seed)
        model = build().eval()
    trained = None
    if weights is not None:
        trained = read_trained_for(weights_file(weights))
        if trained is not None:
            check_trained_network(Path(weights), trained, network)
        load_weights(model, weights)
        if trained is not None:
            check_normalisation_channels(Path(weights), trained, shape[1])
    else:
        randomize_batchnorm(model, gen)
    x = torch.randn(shape, generator=gen)
    with torch.inference_mode():
        expected = model(x).numpy()
    if not np.isfinite(expected).all():  # finite weights can still overflow
        origin = f"random init, seed {seed}" if weights is None else str(weights)
        raise ConfigError(f"{origin}: the network's outputs are NaN or inf; nothing exported")
    normalisation = None if trained is None else trained.normalisation
    metadata = weights_metadata(network, **normalisation or {})
    out.mkdir(parents=True, exist_ok=True)
    mark_unfinished(out / MANIFEST, "export")  # until the last file: a kill leaves no stale "ok"
    # (a) ONNX, run by onnxruntime
    onnx_diff, onnx_ok = write_onnx_checked(model, x, expected, out / ONNX)
    # (b) weights
    save_tensors(out / WEIGHTS, model.state_dict(), metadata)
    # (c) standalone PyTorch
    write_text_atomic(out / CODE, source)
    standalone = import_file(out / CODE).load(out / WEIGHTS)
    with torch.inference_mode():
        alone_diff, alone_ok = compare(standalone(x).numpy(), expected)
    write(out / name)
    ok = onnx_ok and alone_ok
    entries = {
        "format": "autoshrink.export/1",
        "autoshrink": __version__,
        "torch": torch.__version__,
        **manifest,
        "files": list(files),
        "input": ["batch", *shape[1:]],
        "output": ["batch", *expected.shape[1:]],
        "weights": str(weights) if weights is not None else f"random init, seed {seed}",
        "normalisation": normalisation,
        "checks": {
            "onnxruntime_vs_torch_max_abs_diff": onnx_diff,
            "standalone_vs_torch_max_abs_diff": alone_diff,
            "tolerance": {"atol": check_atol(expected), "rtol": RTOL},
            "ok": ok,
        },
    }
    write_json(out / MANIFEST, entries)
    return ExportResult(
        out, files, tuple(shape[1:]), onnx_diff, alone_diff, ok, check_atol(expected)
    )


def _sizes(spec: MacroSpec) -> dict[str, Any]:
    """The settings of ``spec`` a weights file records, as ``autoshrink train``'s do."""
    keys = ("in_channels", "image_size", "num_classes", "width")
    return {k: getattr(spec, k) for k in keys}


def export_network(
    cell: Cell,
    spec: MacroSpec,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    seed: int = 0,
    check_batch: int = 2,
) -> ExportResult:
    """Write the ONNX model, the weights, the standalone file, the cell and a manifest."""
    return write_bundle(
        lambda: build_network(cell, spec),
        out_dir,
        network_input_shape(spec, check_batch),
        standalone_source(cell, spec),
        (CELL, cell.save),
        weights=weights,
        seed=seed,
        manifest={"cell_key": cell.key, "macro": asdict(spec)},
        network={"cell": cell.to_dict(), "macro": {"name": spec.name, **_sizes(spec)}},
    )
