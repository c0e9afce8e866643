"""The flags of ``autoshrink search``, in their help groups: the run (preset, task, folder,
resume), data, search, screening, proxy training and execution (:func:`add_search_flags`).
What the command does with them lives in :mod:`autoshrink.cli.search`."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoshrink.cli import count_number, data_path, folder_path, images_number, seed_number
from autoshrink.config import BUILT_IN_STRATEGIES, EVALUATORS, MAX_NODES, OBJECTIVES
from autoshrink.data.images import DATASETS
from autoshrink.devices import device_argument
from autoshrink.executors.factory import EXECUTORS, PRECISIONS
from autoshrink.hardware.latency_settings import BACKENDS
from autoshrink.nn.stacked_ops import DEPTHWISE_BACKENDS
from autoshrink.objectives import COSTS
from autoshrink.presets import PRESETS
from autoshrink.spaces.macros import MACROS
from autoshrink.zero_cost import PROXY_NAMES

#: ``--resume`` without its folder: the run in ``--out``.
IN_OUT = Path("--out")


#: ``--candidate-timeout none`` (on ``--resume``: the run's limit removed), ``--patience
#: none``: no limit.
NO_LIMIT = "none"


def says_none(text: str) -> bool:
    """Whether a flag's ``text`` is :data:`NO_LIMIT` (any case, spaces around)."""
    return text.strip().lower() == NO_LIMIT


def count_or_none(text: str) -> int | str:
    """``--patience``'s value: a count, or :data:`NO_LIMIT` for ``none``."""
    return NO_LIMIT if says_none(text) else count_number(text)


def seconds_or_none(text: str) -> float | str:
    """``--candidate-timeout``'s value: seconds as a float, or :data:`NO_LIMIT` for ``none``."""
    if says_none(text):
        return NO_LIMIT
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """Declare every flag of ``autoshrink search`` on its parser ``p``, in help order."""
    add_run_options(p)
    add_data_options(p)
    add_search_options(p)
    add_screening_options(p)
    add_training_options(p)
    add_execution_options(p)
    p.add_argument("--json", action="store_true", help="print result.json instead of the summary")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The run's options: the preset and task of a new search, its folder, and a resume."""
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="demo (the default): digits, minutes on a CPU; paper: the paper's CIFAR-10 protocol",
    )
    p.add_argument(
        "--task",
        choices=("cnn", "rnn"),
        default=None,
        help="cnn cells on images (default), or rnn cells on a PTB-style text folder (--data)",
    )
    p.add_argument(
        "--out",
        type=folder_path,
        default=None,
        metavar="DIR",
        help="run folder (default: runs/<preset>; --task rnn: runs/rnn-<preset>)",
    )
    p.add_argument(
        "--resume",
        type=folder_path,
        nargs="?",
        const=IN_OUT,
        default=None,
        metavar="RUN_DIR",
        help="continue the search in RUN_DIR (without it: in --out, as train and singlepath "
        "take it) from its journal, with the settings, device and executor of its config.json "
        "(--executor and its options may be given again)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: train the journal's failed candidates again",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="with --resume: cut malformed lines off the end of the journal (kept in "
        "journal.jsonl.torn) instead of stopping at them",
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The data options of ``autoshrink search``: the data set and the proxy's size."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None)
    g.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        type=data_path,
        default=None,
        help=(
            "folder of the data set (not for digits); --task rnn: train.txt and valid.txt; "
            "with --resume: where the run's data folder has moved"
        ),
    )
    g.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-10 into --data-dir if it is not there (needs internet)",
    )
    g.add_argument(
        "--test-domain",
        default=None,
        metavar="NAME",
        help="multi-domain data sets: the held-out domain, never loaded by the search "
        "(e.g. 75 for rotated-*, 0.1 for colored-*); see docs/ood.md",
    )
    g.add_argument(
        "--per-class", type=images_number, default=None, help="proxy training images per class"
    )
    g.add_argument("--val-size", type=images_number, default=None, help="proxy validation images")


def add_search_options(p: argparse.ArgumentParser) -> None:
    """The search options of ``autoshrink search``: the strategy, the score, the costs and
    limits, and the cell."""
    g = p.add_argument_group("search")
    g.add_argument(
        "--strategy",
        choices=BUILT_IN_STRATEGIES,
        default=None,
        help="autoshrink (default), or a baseline on the same cell space: random search or "
        "rea (regularized evolution), both asking K candidates at a time",
    )
    g.add_argument(
        "--budget",
        type=count_number,
        default=None,
        help="baselines: candidates in all (default: the most AutoShrink can evaluate, "
        "1 + sum of min(K, E) for E from E0 down to round(E0 * keep_fraction) + 1)",
    )
    g.add_argument(
        "--population-size", type=count_number, default=None, help="rea: population (default 10)"
    )
    g.add_argument(
        "--tournament-size", type=count_number, default=None, help="rea: tournament (default 3)"
    )
    g.add_argument(
        "--nodes", type=count_number, default=None, help=f"nodes per cell (N), 2..{MAX_NODES}"
    )
    g.add_argument("-k", "--k", type=count_number, default=None, help="candidates per step (K)")
    g.add_argument(
        "--keep-fraction", type=float, default=None, help="stop at round(E0 * keep_fraction) edges"
    )
    g.add_argument(
        "--patience",
        type=count_or_none,
        default=None,
        help="stop after this many steps without a better score ('none': never)",
    )
    g.add_argument(
        "--lambda",
        dest="weight",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="weight of the cost term (default 0.1; --task rnn: 1.0)",
    )
    g.add_argument(
        "--cost",
        choices=(*COSTS, "edge_cost"),
        default=None,
        help="cost term (default macs; rnn: edge_cost = E * nhid^2)",
    )
    g.add_argument(
        "--max-macs",
        type=float,
        default=None,
        help="hard constraint: reject (never train) candidates above this many MACs",
    )
    g.add_argument(
        "--max-params",
        type=float,
        default=None,
        help="hard constraint on parameters, as --max-macs",
    )
    g.add_argument(
        "--max-latency",
        type=float,
        default=None,
        metavar="MS",
        help="hard constraint on latency (ms): on table_latency_ms with --latency-table or "
        "--cost table_latency_ms, else on latency_ms (measured)",
    )
    g.add_argument(
        "--latency-table",
        default=None,
        metavar="FILE",
        help="latency table JSON for table_latency_ms; blocks it lacks are measured and added "
        "(default with table costs: OUT/latency_table.json)",
    )
    g.add_argument(
        "--latency-macro",
        choices=sorted(MACROS),
        default=None,
        help="network whose latency is measured or predicted (default: the proxy network)",
    )
    g.add_argument("--latency-backend", choices=BACKENDS, default=None, help="default: torch")
    g.add_argument(
        "--latency-device",
        type=device_argument,
        default=None,
        help="cpu, cuda[:N] or auto (default cpu)",
    )
    g.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=None,
        help="erm (default): train candidates on the training data; ood: NAS-OoD's minimax "
        "against a generator of novel domains (docs/ood.md)",
    )
    g.add_argument(
        "--synthetic-mix",
        type=float,
        default=None,
        help="--objective ood: weight of the synthetic-image accuracy in the scored accuracy "
        "(default 0.5)",
    )
    g.add_argument("--activation", choices=("relu", "swish"), default=None)
    g.add_argument("--seed", type=seed_number, default=None)


def add_screening_options(p: argparse.ArgumentParser) -> None:
    """The screening options of ``autoshrink search``: zero-cost and progressive screening."""
    g = p.add_argument_group("screening (docs/zero-cost.md, docs/screening.md)")
    g.add_argument(
        "--screening",
        default=None,
        metavar="MODE",
        help="none (default): K removals drawn uniformly; zero-cost: rank every removal of a "
        "step by --zc-proxy at initialisation and train only the K best; progressive: screen "
        "each batch on its easiest classes first (docs/screening.md)",
    )
    g.add_argument(
        "--screening-stages",
        default=None,
        metavar="STAGES",
        help="progressive screening's schedule: CLASSES:EPOCHS:KEEP stages joined by commas "
        "(5:2:0.5; a CLASSES with a dot is a fraction of the classes), or a JSON file of "
        "{classes, epochs, keep} objects (default 0.5:EPOCHS/4:0.25)",
    )
    g.add_argument(
        "--zc-proxy",
        default=None,
        metavar="NAME",
        help=f"zero-cost proxy: one of {', '.join(PROXY_NAMES)} (default synflow)",
    )
    g.add_argument(
        "--zc-batch",
        type=count_number,
        default=None,
        help="images in the proxy's batch (64; at most the proxy training images)",
    )


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The training options of ``autoshrink search``: the proxy training of each candidate."""
    g = p.add_argument_group("proxy training")
    g.add_argument("--epochs", type=count_number, default=None)
    g.add_argument("--batch-size", type=count_number, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--width", type=float, default=None, help="proxy network width multiplier")
    g.add_argument(
        "--evaluator",
        choices=EVALUATORS,
        default=None,
        help="standalone (default): every candidate trained from scratch; oneshot: from the "
        "current cell's trained weights with its edge cut (docs/oneshot.md)",
    )
    g.add_argument(
        "--oneshot-epochs",
        type=count_number,
        default=None,
        help="--evaluator oneshot: fine-tuning epochs per candidate (default 1; 0: batch-norm "
        "statistics recomputed, no training)",
    )


def add_execution_options(p: argparse.ArgumentParser) -> None:
    """The execution options of ``autoshrink search``: where and how candidates train, and
    what the command shows."""
    g = p.add_argument_group("execution")
    g.add_argument(
        "--device", type=device_argument, default=None, help="cpu, cuda[:N] or auto (a GPU if any)"
    )
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="default: pool on the CPU, batched (K candidates at once) on a GPU",
    )
    g.add_argument(
        "--workers", type=count_number, default=None, help="pool workers (default: one per core)"
    )
    g.add_argument(
        "--threads",
        type=int,  # bounded where it is used: one line naming 1..1024
        default=None,
        help="torch threads per candidate (default: pool and Ray workers 1, in-process all "
        "cores); inprocess, pool and ray results match at equal threads; may change on --resume "
        "(default there: the run's)",
    )
    g.add_argument(
        "--candidate-timeout",
        type=seconds_or_none,  # checked where it is used: one line naming the flag
        default=None,
        metavar="SECONDS",
        help="pool and ray: stop a candidate that trains longer (its worker killed) and record "
        "it failed, not retried (--retry-failed trains it again); default: no limit; may "
        "change on --resume, where 'none' removes the run's limit",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --executor ray: a running Ray cluster (HOST:6379); default: the cluster Ray "
        "finds (RAY_ADDRESS) or a new local instance",
    )
    g.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default=None,
        help="batched engine: auto = float32 with TF32 matmuls on CUDA (as cuDNN's convolutions "
        "by default); fp32 = no TF32; bf16 = bfloat16 autocast, faster, not bit-equivalent",
    )
    g.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batched engine: replay each training step (--task rnn: each BPTT window of "
        "training and validation) from a CUDA graph (CUDA only); default on CUDA: on for "
        "--task rnn, for cnn only where a candidate trains alone",
    )
    g.add_argument(
        "--depthwise",
        choices=DEPTHWISE_BACKENDS,
        default=None,
        help="batched engine: the CUDA kernels of depthwise 3x3 convolutions; auto (default): "
        "triton where Triton is installed, else torch; cudnn is as fast once set up but spends "
        "about 0.5 s setting up each new shape",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--report", action="store_true", help="write OUT/report/index.html when the search ends"
    )
