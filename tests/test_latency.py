"""Measured latency: positive finite figures, the stop rule in real milliseconds, both backends,
settings echoed, clear errors for a missing backend or device, and the CLI's JSON shape."""

from __future__ import annotations

import json
import math
import sys
import time

import pytest
import torch
from torch import nn

from autoshrink.devices import torch_threads
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.hardware.latency import (
    LatencySettings,
    check_available,
    measure_cell,
    measure_module,
    time_samples,
)
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import cifar_proxy

FAST = dict(warmup=1, min_repeats=5, max_seconds=0.5)
TINY = cifar_proxy(width=0.25, image_size=8, num_classes=3)


def test_measured_latency_is_positive_and_finite_for_both_backends() -> None:
    cell = published_cell("shrinkcnn")
    for backend in ("torch", "onnxruntime"):
        settings = LatencySettings(backend=backend, **FAST)
        r = measure_cell(cell, TINY, settings)
        assert math.isfinite(r.median_ms) and r.median_ms > 0
        assert 0 <= r.q1_ms <= r.median_ms <= r.q3_ms
        assert r.iqr_ms == pytest.approx(r.q3_ms - r.q1_ms)
        assert r.repeats >= 5 and r.input_shapes == ((1, 3, 8, 8),)
        assert r.settings is settings and r.environment["torch"] == torch.__version__
    assert "onnxruntime" in r.environment


def test_time_samples_reports_milliseconds() -> None:
    """A call that sleeps 3 ms must time at >= 3 ms (and not at seconds or microseconds)."""
    samples, _ = time_samples(lambda: time.sleep(0.003), LatencySettings(**FAST))
    assert 3.0 <= float(sorted(samples)[len(samples) // 2]) < 50.0


def test_stop_rule_stops_once_the_median_is_stable() -> None:
    """A constant-time call has a stable median after two rounds: exactly 2 * min_repeats."""
    settings = LatencySettings(warmup=0, min_repeats=7, max_seconds=5.0, rtol=0.9)
    samples, stable = time_samples(lambda: time.sleep(0.001), settings)
    assert stable and len(samples) == 14


def test_cpu_clock_and_batch_and_threads_are_used() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1)
    settings = LatencySettings(clock="cpu", batch=3, **FAST)
    r = measure_module(conv, [(3, 4, 8, 8)], settings)
    assert r.median_ms > 0 and r.to_dict()["clock"] == "cpu"
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_settings_are_validated() -> None:
    for bad in (
        dict(backend="tensorrt"),
        dict(device="gpu"),
        dict(device="cuda:x"),
        dict(batch=0),
        dict(threads=0),
        dict(min_repeats=10, max_repeats=5),
        dict(clock="cpu", threads=2),
        dict(clock="tsc"),
    ):
        with pytest.raises(ConfigError):
            LatencySettings(**bad)
    assert LatencySettings(device="cuda:1").device == "cuda:1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_missing_cuda_is_a_clear_error() -> None:
    with pytest.raises(HardwareError, match="no CUDA GPU"):
        check_available(LatencySettings(device="cuda"))


def test_missing_onnxruntime_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(HardwareError, match="pip install onnxruntime"):
        check_available(LatencySettings(backend="onnxruntime"))


def test_cli_json_shape_and_errors(cli, tmp_path) -> None:
    cell = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell)
    code, out, _ = cli(
        "latency", cell, "--macro", "cifar-proxy", "--width", "0.25", "--image-size", "8",
        "--repeats", "5", "--warmup", "1", "--max-seconds", "0.5", "--batch", "2", "--json",
    )  # fmt: skip
    assert code == 0
    obj = json.loads(out)
    assert obj["median_ms"] > 0 and obj["iqr_ms"] >= 0
    for key, value in (("backend", "torch"), ("device", "cpu"), ("batch", 2), ("threads", 1)):
        assert obj[key] == value
    assert obj["input_shapes"] == [[2, 3, 8, 8]] and obj["macro"] == "cifar-proxy"
    assert (obj["width"], obj["image_size"], obj["in_channels"], obj["num_classes"]) == (
        0.25,
        8,
        3,
        10,
    )
    code, out, _ = cli("latency", cell, "--width", "0.25", "--image-size", "8", "--repeats", "5")
    assert code == 0 and "ms median, IQR" in out and "1 thread" in out
    if not torch.cuda.is_available():
        code, _, err = cli("latency", cell, "--device", "cuda")
        assert code == 2 and err.count("\n") == 1 and "CUDA" in err
    code, _, err = cli("latency", cell, "--device", "tpu")
    assert code == 2 and "tpu" in err
