"""Device names: parsed without torch, resolved against the machine, as an argparse type."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from autoshrink.config import SearchConfig
from autoshrink.devices import (
    device_argument,
    gpu_index,
    is_cuda,
    local_device_argument,
    resolve_device,
)
from autoshrink.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "index"), [("cpu", None), ("cuda", 0), ("cuda:0", 0), ("cuda:3", 3)]
)
def test_gpu_index_reads_valid_names(name, index):
    assert gpu_index(name) == index


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu:1", "cuda:", "CUDA", "", "cuda:-1"])
def test_gpu_index_names_a_bad_device(name):
    with pytest.raises(ConfigError, match=f"unknown device {name!r}"):
        gpu_index(name)


def test_is_cuda():
    assert is_cuda("cuda") and is_cuda("cuda:2")
    assert not is_cuda("cpu") and not is_cuda("auto")


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_resolve_without_gpu(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"device '{name}'.*sees no CUDA GPU here"):
            resolve_device(name)


def test_resolve_with_two_gpus(monkeypatch):
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)  # this process's GPU
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device 'cuda:2': only 2 CUDA GPU\(s\) here"):
        resolve_device("cuda:2")


def test_device_argument_is_a_usage_error(monkeypatch):
    _gpus(monkeypatch, 0)
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--device", default="auto", type=device_argument)
    assert parser.parse_args([]).device == "cpu"  # auto resolved
    assert parser.parse_args(["--device", "cpu"]).device == "cpu"
    # a GPU name is checked where it is used: a Ray cluster's GPUs are not the head's
    assert parser.parse_args(["--device", "cuda:1"]).device == "cuda:1"
    line = "unknown device 'tpu'; expected auto, cpu, cuda or cuda:N"  # auto was left out
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{line}$"):
        device_argument("tpu")
    _gpus(monkeypatch, 2)
    assert device_argument("auto") == "cuda"  # a process's own GPU: Ray refuses cuda:0


def test_a_benchmarks_device_is_checked_against_this_machine(monkeypatch):
    """A benchmark runs here only: a GPU this machine lacks went on to a torch traceback."""
    _gpus(monkeypatch, 0)
    with pytest.raises(argparse.ArgumentTypeError, match="sees no CUDA GPU"):
        local_device_argument("cuda")
    assert local_device_argument("auto") == "cpu"
    _gpus(monkeypatch, 2)
    assert local_device_argument("cuda:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError, match=r"only 2 CUDA GPU\(s\) here"):
        local_device_argument("cuda:2")


def test_config_rejects_a_malformed_device():
    with pytest.raises(ConfigError, match="unknown device 'cuda:x'"):
        SearchConfig(device="cuda:x")


def test_thread_counts_are_whole_numbers_in_range():
    from autoshrink.devices import MAX_THREADS, check_threads

    for fine in (1, MAX_THREADS):
        check_threads(fine)
    for bad in (0, MAX_THREADS + 1, 2.5, True, "2", None):
        says = f"^--threads must be an integer in 1..1024, got {re.escape(repr(bad))}$"
        with pytest.raises(ConfigError, match=says):
            check_threads(bad, "--threads")


def test_own_generators_fork_the_generator_of_the_gpu_named(monkeypatch):
    import contextlib

    from autoshrink.devices import own_generators

    forked = []

    @contextlib.contextmanager
    def fork_rng(devices):
        forked.append(devices)
        yield

    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    for device in ("cpu", "cuda", "cuda:0", "cuda:2", torch.device("cuda", 1)):
        with own_generators(device):
            pass
    assert forked == [[], [0], [0], [2], [1]]  # the CPU's is always forked


def test_a_library_search_on_a_gpu_this_machine_lacks_is_refused_before_any_data(
    monkeypatch, tmp_path
):
    """``run_search`` once loaded the data and failed at the first candidate in torch's own
    ``AssertionError``; the command line's one-line refusal is the library's too."""
    from autoshrink.presets import preset
    from autoshrink.search import run_search

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"^device 'cuda': torch .* sees no CUDA GPU here"):
        run_search(run, preset("demo", device="cuda"), progress=False)
    assert not run.exists()  # the folder it made is taken back
