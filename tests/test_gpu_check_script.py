"""The prepared GPU check (``scripts/gpu_check.sh``) runs end to end on the CPU.

A GPU session has minutes of device time, so the one script it runs must not break on
something a CPU run would have shown. ``DEVICE=cpu QUICK=1`` runs every step with tiny
settings: the float64 equivalence check, the engine's ops, the throughput tables, the profile,
the bytes per step and the search on Fashion-MNIST; the stacked RNN check, its throughput
against one-by-one training and a tiny RNN search; the final training of ShrinkCNN-A and
MobileNetV2-1.4. The summary must hold a ``speedup:`` line per cell, an ``rnn speedup:``,
finished searches and a final-training line per network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def run_check(tmp_path: Path, *args: str, **env: str) -> Path:
    """Run ``scripts/gpu_check.sh *args`` on the CPU at smoke size (``env``: more settings);
    it must succeed. Returns its ``OUT`` folder."""
    out = tmp_path / "gpu_check"
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(out), **env}
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def fake_images(tmp_path: Path) -> str:
    """A folder that looks like Fashion-MNIST's (steps that would read it are skipped)."""
    (tmp_path / "fake-images").mkdir()
    (tmp_path / "fake-images" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    return str(tmp_path / "fake-images")


@pytest.mark.slow
def test_gpu_check_script_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no Fashion-MNIST in {FASHION_MNIST} (apt install dataset-fashion-mnist)")
    out = run_check(tmp_path, str(FASHION_MNIST))
    check = (out / "check.txt").read_text()
    assert "FAIL" not in check and check.count("-> PASS") == 2  # node inputs both ways
    summary = (out / "summary.txt").read_text()
    for tag in ("bf16", "fp32"):
        for cell in ("complete-8", "shrinkcnn"):
            pattern = rf"cpu {tag} (triton|torch) depthwise concat-inputs {cell}: eager"
            assert re.search(pattern, summary)  # the CPU concatenates node inputs (auto)
    assert "speedup: " in summary
    assert re.search(r"cpu fp32 node inputs, K = 3: .* node-input buffer speedup: \d", summary)
    assert re.search(
        r"full-protocol search \(fp32 (triton|torch) depthwise concat-inputs engine\): "
        r"finished=True",
        summary,
    )
    table = json.loads((out / "throughput_fp32.json").read_text())
    assert {row["cell"] for row in table["table"]} == {"complete-8", "shrinkcnn"}
    assert all(row["baseline_img_s"] > 0 and row["engine_img_s"] > 0 for row in table["table"])
    assert all(isinstance(row["new_shape_s"], float) for row in table["table"])
    assert "| new K set-up s |" in summary
    for geometry in ("3x32", "1x28"):  # the engine's ops against plain PyTorch
        ops = json.loads((out / f"ops_{geometry}.json").read_text())
        assert ops["pointwise_calls"] > 0 and ops["depthwise_calls"] > 0
        assert ops["composed_pointwise_ms"] > 0 and ops["engine_pointwise_ms"] > 0
        assert f"cpu auto ops {geometry}: pointwise" in summary
    moved = (out / "engine_bytes_fp32.txt").read_text()  # each op's time and bandwidth
    for cell in ("complete-8", "shrinkcnn"):
        assert re.search(rf"{cell}: [\d.]+ ms per step, [\d.]+ ms of it in aten ops", moved)
    assert re.search(r"\n  bmm +[\d.]+ +[\d.]+ +[\d.]+\n", moved)
    search = json.loads((out / "search.json").read_text())
    assert search["search"]["candidates"] >= 1 and search["table"] == []
    assert (out / "search" / "best_cell.json").is_file()
    assert re.search(r"cpu RNN check: PASS; K = 3 .*rnn speedup: \d", summary)
    assert re.search(r"RNN paper-protocol search \(stacked\): finished=True", summary)
    assert (out / "rnn_search" / "best_cell.json").is_file()
    for network in ("ShrinkCNN-A", "MobileNetV2-1.4"):
        assert re.search(rf"cpu final training {network} \(1 epochs, fp32\): [\d,]+ img/s", summary)


def test_the_oneshot_part_runs_on_the_cpu(tmp_path: Path) -> None:
    """``PARTS=oneshot``: stacked against one-by-one fine-tuning, and the float64 check."""
    out = run_check(tmp_path, PARTS="oneshot")
    report = json.loads((out / "oneshot.json").read_text())
    assert report["check"] and report["float64_largest_difference"] < 1e-6
    assert report["one_by_one_images_s"] > 0 and report["stacked_images_s"] > 0
    assert "one-shot check: PASS" in (out / "summary.txt").read_text()


@pytest.mark.slow
def test_the_next_part_runs_on_the_cpu(tmp_path: Path) -> None:
    """``PARTS=next``: the float32 table again, each op's bandwidth in float32 and bf16, the
    step-1 A/B of two searches, and the compiled table."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no Fashion-MNIST in {FASHION_MNIST} (apt install dataset-fashion-mnist)")
    out = run_check(tmp_path, str(FASHION_MNIST), PARTS="next")
    for precision in ("fp32", "bf16"):
        moved = (out / f"engine_bytes_{precision}.txt").read_text()
        assert re.search(r"complete-8: [\d.]+ ms per step, [\d.]+ ms of it in aten ops", moved)
    assert "K = 3, bf16 (op, ms, GB, TB/s)" in (out / "engine_bytes_bf16.txt").read_text()
    assert json.loads((out / "throughput_fp32.json").read_text())["engine_img_s"] > 0
    summary = (out / "summary.txt").read_text()
    assert re.search(r"step 1 A/B, .*: default [\d.]+ s, plain [\d.]+ s", summary), summary
    assert re.search(r"cpu fp32 (triton|torch) depthwise concat-inputs compiled complete-8: "
                     r"eager \d+ img/s, engine \d+ img/s", summary)  # fmt: skip


def test_a_spent_budget_skips_the_steps_and_keeps_the_summary(tmp_path: Path) -> None:
    """``BUDGET_S``: the device tool kills a call at 600 s, and part next's steps add up to 13
    minutes at their time limits: the summary, written last, would be lost. A step without
    time left (less 30 s for the summary) is skipped, and said so on the console."""
    out = tmp_path / "gpu_check"
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(out), "PARTS": "next",
           "BUDGET_S": "20", "COMPILE": "1"}  # fmt: skip
    done = subprocess.run(["bash", "scripts/gpu_check.sh", fake_images(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = done.stdout.count("== skipped: the budget of 20 s is spent (BUDGET_S)")
    assert said == 6, done.stdout  # the fp32 table, bandwidths in fp32 and bf16, two searches,
    # compiled
    assert (out / "summary.txt").is_file() and not (out / "throughput_compiled.json").read_text()


def test_a_budget_cuts_a_step_to_what_is_left(tmp_path: Path) -> None:
    """A step that would outlast the budget is stopped when the budget (less the summary's
    30 s) is spent, not at its own time limit; what follows is skipped."""
    fake = tmp_path / "python"  # the real one for the device line and the summary, else a hang
    fake.write_text(f'#!/bin/bash\ncase "$1" in -c|-) exec {sys.executable} "$@";; esac\n'
                    "sleep 300\n")  # fmt: skip
    fake.chmod(0o755)
    out = tmp_path / "gpu_check"
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(out), "PARTS": "next",
           "BUDGET_S": "45", "PYTHON": str(fake)}  # fmt: skip
    done = subprocess.run(["bash", "scripts/gpu_check.sh", fake_images(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cut = re.findall(r"== cut from (\d+) s to (\d+) s by the budget", done.stdout)
    assert len(cut) == 1 and int(cut[0][0]) > 45 >= int(cut[0][1]) + 30, done.stdout  # its own
    # limit (75 s on a GPU, 4x on a CPU) cut to what the budget leaves, less the summary's 30 s
    assert done.stdout.count("== skipped: the budget of 45 s is spent") == 5, done.stdout
    assert (out / "summary.txt").is_file()
    bad = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True,
                         text=True, env={**env, "BUDGET_S": "9.5"}, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "BUDGET_S must be a whole number of seconds" in bad.stderr


def test_an_out_folder_holding_an_earlier_run_is_refused(tmp_path: Path) -> None:
    """A rerun into the same ``OUT`` (a device machine still warm) had every search refuse its
    folder, and part next's console showed nothing of it: refused at once instead."""
    out = tmp_path / "gpu_check"
    (out / "search").mkdir(parents=True)
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(out), "PARTS": "next"}
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"gpu_check.sh: OUT={out} holds an earlier run's files" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["search"]


def test_stage_gpu_data_copies_what_the_check_reads(tmp_path: Path) -> None:
    fashion, ptb, dest = tmp_path / "fashion", tmp_path / "ptb", tmp_path / "data"
    fashion.mkdir()
    ptb.mkdir()
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
    for name in names:
        (fashion / f"{name}.gz").write_bytes(name.encode())
    (fashion / "t10k-labels-idx1-ubyte").write_bytes(b"raw")  # uncompressed files count too
    for name in ("train.txt", "valid.txt", "test.txt"):
        (ptb / name).write_text(name)

    def stage(*args: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/stage_gpu_data.sh", *map(str, args)],
            cwd=REPO,
            env={**os.environ, "DEST": str(dest)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = stage(fashion, tmp_path / "nowhere")
    assert missing.returncode == 2 and "no train.txt" in missing.stderr
    assert not dest.exists()  # nothing copied before every source was found
    done = stage(fashion, ptb)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (dest / "fashion-mnist").iterdir()) == sorted(
        [f"{n}.gz" for n in names] + ["t10k-labels-idx1-ubyte"]
    )
    assert (dest / "ptb" / "proxy" / "valid.txt").read_text() == "valid.txt"


def test_stage_gpu_data_reads_relative_paths_from_where_it_is_run(tmp_path: Path) -> None:
    """Relative folders given to the script name folders under the caller's working directory,
    not under the checkout the script moves to (it said the sources were missing)."""
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (tmp_path / "fashion").mkdir(exist_ok=True)
        (tmp_path / "fashion" / f"{name}.gz").write_bytes(name.encode())
    (tmp_path / "ptb").mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (tmp_path / "ptb" / name).write_text(name)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "stage_gpu_data.sh"), "fashion", "ptb"],
        cwd=tmp_path,
        env={**os.environ, "DEST": "staged"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "staged" / "ptb" / "proxy" / "test.txt").read_text() == "test.txt"
    assert len(list((tmp_path / "staged" / "fashion-mnist").iterdir())) == 4


def test_gpu_check_takes_a_relative_out_from_where_it_is_run(tmp_path: Path) -> None:
    """``OUT=rel`` run from another folder: the results go to that folder's ``rel``, not into
    the checkout; an earlier run's files there are refused as in the checkout's."""
    (tmp_path / "rel" / "search").mkdir(parents=True)
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": "rel", "PARTS": "next"}
    script = str(REPO / "scripts" / "gpu_check.sh")
    done = subprocess.run(["bash", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"OUT={tmp_path / 'rel'} holds an earlier run's files" in done.stderr


@pytest.mark.parametrize("script", ["gpu_check.sh", "stage_gpu_data.sh"])
def test_the_scripts_answer_help_and_refuse_unknown_options(script: str, tmp_path: Path) -> None:
    """``--help`` was taken for the data folder: gpu_check.sh started the whole check (minutes
    of device time), stage_gpu_data.sh said the folder had no IDX files."""
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(tmp_path / "out")}
    path = str(REPO / "scripts" / script)
    asked = subprocess.run(["bash", path, "--help"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert asked.returncode == 0 and f"{script} [FASHION_MNIST_DIR]" in asked.stdout
    for wrong in (["--fast"], ["a", "b", "c"]):
        done = subprocess.run(["bash", path, *wrong], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2 and f"unknown arguments: {' '.join(wrong)}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing run, nothing written


def test_a_data_folder_without_fashion_mnist_is_refused_at_once(tmp_path: Path) -> None:
    """A wrong folder ran every other step first (minutes of device time), then each search
    failed on its missing IDX file."""
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path / "nowhere")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"gpu_check.sh: {tmp_path / 'nowhere'}: no train-images-idx3-ubyte(.gz)" in done.stderr
    assert not (tmp_path / "out").exists()
