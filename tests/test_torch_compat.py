"""The code paths taken on the oldest torch that pyproject.toml allows (2.2): where an API it
lacks is replaced, the replacement is run here by hiding the newer API (on a torch that lacks
it, the rest of the suite runs the replacement for real: ``scripts/check_versions.sh oldest``)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

from autoshrink.hardware.latency import onnx_bytes
from autoshrink.training.final import cuda_grad_scaler


def has(present: bool, api: str) -> pytest.MarkDecorator:
    """Skip a test that hides ``api`` on a torch that lacks it (``present`` false)."""
    return pytest.mark.skipif(
        not present, reason=f"this torch has no {api}: the suite runs its stand-in for real"
    )


@has(hasattr(torch.amp, "GradScaler"), "torch.amp.GradScaler")
def test_the_fp16_loss_scaler_without_torch_amp_grad_scaler(monkeypatch) -> None:
    """torch.amp.GradScaler is new in 2.3; 2.2 has torch.cuda.amp.GradScaler (no device)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available", the old one's deprecation
        assert type(cuda_grad_scaler()) is torch.amp.GradScaler  # not the deprecated subclass
        old = torch.cuda.amp.GradScaler
        monkeypatch.delattr(torch.amp, "GradScaler")
        assert type(cuda_grad_scaler()) is old


@has("dynamo" in inspect.signature(torch.onnx.export).parameters, "torch.onnx.export(dynamo=)")
def test_onnx_export_on_a_torch_whose_exporter_takes_no_dynamo_keyword(monkeypatch) -> None:
    """torch.onnx.export has a dynamo keyword from 2.4 on; on 2.2 and 2.3 passing it fails."""
    real = torch.onnx.export
    seen: list[dict] = []

    def export_of_torch_2_2(model, args, f, *, input_names=None, output_names=None,
                            dynamic_axes=None, opset_version=None):  # fmt: skip
        seen.append({"input_names": input_names})
        return real(model, args, f, dynamo=False, input_names=input_names,
                    output_names=output_names, dynamic_axes=dynamic_axes,
                    opset_version=opset_version)  # fmt: skip

    model = nn.Sequential(nn.Linear(3, 2))
    expected = onnx_bytes(model, [torch.zeros(1, 3)])
    monkeypatch.setattr(torch.onnx, "export", export_of_torch_2_2)
    assert onnx_bytes(model, [torch.zeros(1, 3)]) == expected and seen == [
        {"input_names": ["input"]}
    ]


@has(hasattr(torch.compiler, "is_compiling"), "torch.compiler.is_compiling")
def test_the_compiled_engine_knows_it_is_traced_without_torch_compiler_is_compiling(
    monkeypatch,
) -> None:
    """torch.compiler.is_compiling is new in 2.3. On 2.2 the 1x1 convolutions ask
    torch._utils.is_compiling, which the compiler reads as true, and write their outputs by a
    copy: 2.2 failed to trace their ``out=`` of a tensor that needs a gradient."""
    from autoshrink.nn import stacked_ops

    assert stacked_ops._compiling is torch.compiler.is_compiling
    with monkeypatch.context() as hidden:  # torch.compile below asks for it
        hidden.delattr(torch.compiler, "is_compiling")
        assert stacked_ops._compile_probe() is torch._utils.is_compiling

    def traced(x: torch.Tensor) -> torch.Tensor:
        return x + torch._utils.is_compiling()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated where the newer API exists
        assert not torch._utils.is_compiling()
    assert torch.compile(traced, backend="eager")(torch.zeros(1)).item() == 1
