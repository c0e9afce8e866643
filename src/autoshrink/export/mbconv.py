"""Export a network of the inverted-residual space (:mod:`autoshrink.singlepath.space`).

:func:`export_arch` writes into a folder, like a cell's export (:mod:`autoshrink.export.bundle`,
whose :func:`~autoshrink.export.bundle.write_bundle` it runs):

- ``model.onnx`` -- checked against PyTorch with onnxruntime on a random batch;
- ``model.safetensors`` -- the weights given (e.g. those ``autoshrink singlepath`` or
  ``autoshrink train`` saved), or a seeded random initialisation with random batch-norm
  statistics;
- ``model.py`` -- one readable PyTorch file for this architecture
  (:func:`autoshrink.export.source.mbconv_source`: stem, the blocks with their chosen kernel
  and expansion, skipped layers absent, head); it imports only ``torch`` and the standard
  library, has the state dict names of :func:`~autoshrink.singlepath.space.build_arch`, and is
  imported back and checked to give PyTorch's outputs from the same weights;
- ``architecture.json`` and ``export.json`` (the architecture, the input shape, the checks).
"""

from __future__ import annotations

from pathlib import Path

from autoshrink.export.bundle import ExportResult, write_bundle
from autoshrink.export.source import mbconv_source
from autoshrink.singlepath.space import MBConvArch, build_arch

ARCH = "architecture.json"


def export_arch(
    arch: MBConvArch,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    seed: int = 0,
    check_batch: int = 2,
) -> ExportResult:
    """Write the ONNX model, the weights, the standalone file, the architecture and a manifest
    into ``out_dir``."""
    return write_bundle(
        lambda: build_arch(arch),
        out_dir,
        (check_batch, arch.in_channels, arch.image_size, arch.image_size),
        mbconv_source(arch),
        (ARCH, arch.save),
        weights=weights,
        seed=seed,
        manifest={"architecture": arch.to_dict()},
        network={"architecture": arch.to_dict()},
    )
