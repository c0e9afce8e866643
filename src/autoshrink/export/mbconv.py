"""Export a network of the inverted-residual space (:mod:`autoshrink.singlepath.space`).

:func:`export_arch` writes into a folder ``model.onnx`` (checked against PyTorch with
onnxruntime on a random batch), ``model.safetensors`` (the weights given, e.g. those
``autoshrink singlepath`` or ``autoshrink train`` saved, or a seeded random initialisation with
random batch-norm statistics), ``architecture.json`` and ``export.json``. Unlike a cell's
export (:mod:`autoshrink.export.bundle`) there is no standalone ``model.py`` yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from autoshrink import __version__
from autoshrink.export.bundle import (
    ATOL,
    ONNX,
    RTOL,
    WEIGHTS,
    load_weights,
    randomize_batchnorm,
    write_onnx_checked,
)
from autoshrink.singlepath.space import MBConvArch, build_arch

ARCH, MANIFEST = "architecture.json", "export.json"


@dataclass(frozen=True)
class ArchExport:
    """Where the files went and how closely onnxruntime reproduced PyTorch's outputs."""

    out_dir: Path
    files: tuple[str, ...]
    input_shape: tuple[int, ...]
    onnx_max_abs_diff: float
    ok: bool


def export_arch(
    arch: MBConvArch,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    seed: int = 0,
    check_batch: int = 2,
) -> ArchExport:
    """Write the ONNX model, the weights, the architecture and a manifest into ``out_dir``."""
    out = Path(out_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_arch(arch).eval()
    if weights is not None:
        load_weights(model, weights)
    else:
        randomize_batchnorm(model, gen)
    out.mkdir(parents=True, exist_ok=True)
    shape = (check_batch, arch.in_channels, arch.image_size, arch.image_size)
    x = torch.randn(shape, generator=gen)
    with torch.inference_mode():
        expected = model(x).numpy()
    diff, ok = write_onnx_checked(model, x, expected, out / ONNX)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"architecture": json.dumps(arch.to_dict())})
    arch.save(out / ARCH)
    manifest = {
        "format": "autoshrink.export/1",
        "autoshrink": __version__,
        "torch": torch.__version__,
        "architecture": arch.to_dict(),
        "input": ["batch", *shape[1:]],
        "output": ["batch", arch.num_classes],
        "weights": str(weights) if weights is not None else f"random init, seed {seed}",
        "checks": {
            "onnxruntime_vs_torch_max_abs_diff": diff,
            "tolerance": {"atol": ATOL, "rtol": RTOL},
            "ok": ok,
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return ArchExport(out, (ONNX, WEIGHTS, ARCH, MANIFEST), tuple(shape[1:]), diff, ok)
