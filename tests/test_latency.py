"""Measured latency: positive finite figures, the stop rule in real milliseconds, both backends,
settings echoed, clear errors for a missing backend or device, and the CLI's JSON shape."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from autoshrink.devices import torch_threads
from autoshrink.errors import ConfigError, HardwareError
from autoshrink.hardware.latency import check_available, measure_cell, measure_module, time_samples
from autoshrink.hardware.latency_settings import LatencySettings
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
    with pytest.raises(HardwareError, match="pip install onnx onnxruntime"):
        check_available(LatencySettings(backend="onnxruntime"))


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_a_missing_onnx_package_is_one_line_naming_it(
    cli, tmp_path, monkeypatch, missing: str
) -> None:
    """onnxruntime alone (what the message said to install) exported nothing: torch's ONNX
    exporter needs the onnx package, and its absence was torch's traceback, exit status 1."""
    monkeypatch.setitem(sys.modules, missing, None)  # import now raises ImportError
    with pytest.raises(HardwareError, match=f"{missing} is not installed"):
        check_available(LatencySettings(backend="onnxruntime"))
    cell = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell)
    code, out, err = cli("latency", cell, "--backend", "onnxruntime", "--max-seconds", "0.1")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"{missing} is not installed" in err and "pip install onnx onnxruntime" in err


def test_cli_json_shape_and_errors(cli, tmp_path, capsys) -> None:
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
    with pytest.raises(SystemExit) as stop:  # a usage error: the name's form is the parser's
        cli("latency", cell, "--device", "tpu")
    assert stop.value.code == 2 and "unknown device 'tpu'" in capsys.readouterr().err
    for flag, value in (("--threads", "0"), ("--repeats", "0"), ("--batch", "0")):
        code, _, err = cli("latency", cell, flag, value)  # named by the flag typed
        assert code == 2 and err.count("\n") == 1 and f"error: {flag} must be" in err, err


def test_a_round_of_2000_runs_or_more_is_compared_with_a_second(cli, tmp_path) -> None:
    """``--repeats 2000`` (or more) stopped after its first round at the cap of 2,000 runs, and
    said ``median not yet stable`` whatever the times: the stop rule compares two rounds."""
    cell = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell)
    tiny = ["--width", "0.25", "--image-size", "8", "--warmup", "0", "--max-seconds", "60"]
    code, out, err = cli("latency", cell, "--repeats", "2000", *tiny, "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["repeats"] == 4000 and obj["min_repeats"] == 2000 and obj["max_repeats"] == 4000


# ------------------------------------------------------------------ what is timed and reported
def test_the_environment_names_the_cpu_of_proc_cpuinfo(monkeypatch) -> None:
    from autoshrink import devices
    from autoshrink.hardware import latency

    cpuinfo = "processor\t: 0\nmodel name\t: Fancy CPU 9000 @ 3.0GHz \nflags\t: avx\n"
    monkeypatch.setattr(devices, "open", lambda *a, **k: io.StringIO(cpuinfo), raising=False)
    assert latency.environment(LatencySettings())["cpu"] == "Fancy CPU 9000 @ 3.0GHz"

    def unreadable(*a, **k):
        raise PermissionError("/proc/cpuinfo")

    monkeypatch.setattr(devices, "open", unreadable, raising=False)
    monkeypatch.setattr(devices.platform, "processor", lambda: "")
    assert latency.environment(LatencySettings())["cpu"] == "unknown"


def test_onnx_models_declare_opset_17() -> None:
    """docs/export.md promises opset 17 (what onnxruntime 1.17, the oldest supported, runs)."""
    onnx = pytest.importorskip("onnx")
    from autoshrink.hardware.latency import onnx_bytes

    model = onnx.load_from_string(onnx_bytes(nn.Conv2d(2, 2, 3), [torch.zeros(1, 2, 5, 5)]))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_each_backend_runs_its_own_runtime() -> None:
    """The torch backend calls the module (a tensor back); onnxruntime a session (arrays)."""
    from autoshrink.hardware.latency import runner

    conv, x = nn.Conv2d(2, 3, 3), torch.randn(1, 2, 5, 5)
    eager = runner(conv, [x], LatencySettings(backend="torch"))()
    assert isinstance(eager, torch.Tensor) and eager.shape == (1, 3, 3, 3)
    session = runner(conv, [x], LatencySettings(backend="onnxruntime"))()
    assert isinstance(session, list) and isinstance(session[0], np.ndarray)
    assert np.allclose(session[0], eager.detach().numpy(), atol=1e-5)


def test_cuda_timing_reads_the_events_for_torch_only(monkeypatch) -> None:
    """On a GPU the torch backend is timed by CUDA events (a host clock would time the
    launch only); onnxruntime, which synchronises itself, by the host clock."""
    from autoshrink.hardware import latency

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing

        def record(self) -> None: ...

        def synchronize(self) -> None: ...

        def elapsed_time(self, end: object) -> float:
            return 7.5

    monkeypatch.setattr(latency, "gpu_index", lambda device: 0)
    monkeypatch.setattr(latency.torch.cuda, "Event", Event)
    monkeypatch.setattr(latency.torch.cuda, "device", lambda gpu: contextlib.nullcontext())
    calls: list[int] = []
    once = latency.clock(lambda: calls.append(1), LatencySettings(backend="torch"))
    assert once() == 7.5 and calls == [1]
    wall = latency.clock(lambda: time.sleep(0.002), LatencySettings(backend="onnxruntime"))
    assert 2.0 <= wall() < 1000.0


def test_the_repeat_cap_ends_a_series_that_never_settles() -> None:
    """A call that gets slower every time never has a stable median: ``max_repeats`` ends it
    (long before ``max_seconds``), unstable."""
    from autoshrink.hardware.latency import until_stable

    times = iter(range(1, 10_000_000))
    settings = LatencySettings(
        warmup=0, min_repeats=5, max_repeats=10, max_seconds=30.0, rtol=0.001
    )
    samples, stable = until_stable(lambda: float(next(times)), settings)
    assert not stable and samples.tolist() == [float(i) for i in range(1, 11)]


def test_quartiles_of_the_samples(monkeypatch) -> None:
    """The samples 1..100: numpy's linear quartiles 25.75, 50.5 and 75.25."""
    from autoshrink.hardware import latency

    samples = np.arange(1.0, 101.0)
    monkeypatch.setattr(latency, "time_samples", lambda fn, settings: (samples, True))
    r = measure_module(nn.Identity(), [(1, 2)], LatencySettings(**FAST))
    assert (r.q1_ms, r.median_ms, r.q3_ms, r.iqr_ms) == (25.75, 50.5, 75.25, 49.5)
    assert r.repeats == 100 and r.stable


def test_the_environment_says_whether_the_heap_was_made_steady(monkeypatch) -> None:
    """``steady_heap`` is asked for (once) by the torch backend only, and the environment
    reports its answer, not the setting."""
    from autoshrink.hardware import latency

    asked: list[bool] = []
    answer = False

    def steady_heap() -> bool:
        asked.append(answer)
        return answer

    monkeypatch.setattr(latency, "steady_heap", steady_heap)
    conv = nn.Conv2d(2, 2, 1)
    torch_run = LatencySettings(backend="torch", **FAST)
    assert measure_module(conv, [(1, 2, 3, 3)], torch_run).environment["steady_heap"] is False
    answer = True
    assert measure_module(conv, [(1, 2, 3, 3)], torch_run).environment["steady_heap"] is True
    assert asked == [False, True]
    for settings in (
        LatencySettings(backend="onnxruntime", **FAST),
        LatencySettings(backend="torch", steady_heap=False, **FAST),
    ):
        assert measure_module(conv, [(1, 2, 3, 3)], settings).environment["steady_heap"] is False
    assert asked == [False, True]


def test_warm_up_calls_are_made_and_not_counted() -> None:
    """Three warm-up calls of 100 ms, then 1 ms calls: two rounds of 4 samples, all 1 ms (the
    median 1 == 1 is stable after the second round), 3 + 8 calls in all."""
    from autoshrink.hardware.latency import until_stable

    calls = []

    def once() -> float:
        calls.append(1)
        return 100.0 if len(calls) <= 3 else 1.0

    settings = LatencySettings(warmup=3, min_repeats=4, max_seconds=30.0, rtol=0.01)
    samples, stable = until_stable(once, settings)
    assert stable and samples.tolist() == [1.0] * 8 and len(calls) == 11


def test_a_median_that_falls_fast_is_not_stable() -> None:
    """Halving times 100, 50, 25, ...: the medians of 2, 4, 6, 8, 10 samples are 75, 37.5,
    18.75, 9.375, 4.6875, each more than 10% off the one before, so the series runs to
    max_repeats, unstable (a rule that only looked at a rise stopped after 4 samples)."""
    from autoshrink.hardware.latency import until_stable

    times = iter(100.0 / 2**i for i in range(1000))
    settings = LatencySettings(warmup=0, min_repeats=2, max_repeats=10, max_seconds=30.0, rtol=0.1)
    samples, stable = until_stable(lambda: next(times), settings)
    assert not stable and samples.tolist() == [100.0 / 2**i for i in range(10)]


@pytest.mark.parametrize("kind", ["cell", "architecture"])
def test_a_sigterm_stops_a_latency_measurement_in_one_line(tmp_path, kind) -> None:
    """SIGTERM ended ``autoshrink latency`` with status 143 and no word, as other commands
    (export, train, search) say theirs."""
    import subprocess

    from autoshrink.singlepath.space import mobilenetv2_arch

    network = tmp_path / "network.json"
    if kind == "cell":
        published_cell("shrinkcnn").save(network)
    else:
        mobilenetv2_arch(0.35, image_size=32, num_classes=10).save(network)
    script = (  # the signal comes as the measurement starts
        "import os, signal, sys\n"
        "from autoshrink.cli import latency\n"
        "def measure(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    raise AssertionError('the signal did not stop the command')\n"
        "latency.measure_cell = latency.measure_module = measure\n"
        "from autoshrink.cli import main\n"
        f"sys.exit(main(['latency', {str(network)!r}]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 128 + 15, run.stderr
    assert run.stderr.strip().splitlines() == ["autoshrink: stopped by SIGTERM"], run.stderr
