"""``autoshrink search``: run or resume a search (AutoShrink or a baseline); print the best."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoshrink.cli import (
    SUBCOMMANDS,
    DefaultsHelpFormatter,
    count_number,
    device_name,
    folder_path,
    images_number,
    seed_number,
)
from autoshrink.cli.search_summary import print_summary
from autoshrink.config import (
    BUILT_IN_STRATEGIES,
    EVALUATORS,
    MAX_NODES,
    OBJECTIVES,
    PRESETS,
    READ_BY,
    ExecutionSettings,
    SearchConfig,
    preset,
    unread_settings,
)
from autoshrink.config import CNN_ONLY as config_cnn_only
from autoshrink.data.images import DATASETS, check_root
from autoshrink.errors import ConfigError
from autoshrink.executors.factory import (
    EXECUTORS,
    ONE_THREAD_EXECUTORS,
    PRECISIONS,
    executor_for,
    executor_name,
)
from autoshrink.hardware.latency import BACKENDS, LatencySettings
from autoshrink.nn.stacked_ops import DEPTHWISE_BACKENDS
from autoshrink.objectives import COSTS, LATENCY_COSTS, Score
from autoshrink.outputs import check_output_file
from autoshrink.ranges import require
from autoshrink.run_folder import CONFIG
from autoshrink.screening import parse_stages
from autoshrink.search import run_search
from autoshrink.spaces.macros import MACROS
from autoshrink.training.ood import OodSettings
from autoshrink.zero_cost import PROXY_NAMES

log = logging.getLogger(__name__)

# Settings that come from the preset and may be overridden; with --resume they come from the
# run's config.json instead.
OVERRIDES = {
    "strategy": "strategy",
    "budget": "budget",
    "population_size": "population_size",
    "tournament_size": "tournament_size",
    "dataset": "dataset",
    "data_dir": "data_dir",
    "nodes": "nodes",
    "k": "k",
    "keep_fraction": "keep_fraction",
    "patience": "patience",
    "per_class": "per_class",
    "val_size": "val_size",
    "width": "width",
    "activation": "activation",
    "seed": "seed",
    "device": "device",
    "epochs": "training_epochs",
    "batch_size": "training_batch_size",
    "lr": "training_lr",
    "latency_table": "latency_table",
    "latency_macro": "latency_macro",
    "screening": "screening",
    "zc_proxy": "zc_proxy",
    "zc_batch": "zc_batch",
    "evaluator": "evaluator",
    "oneshot_epochs": "oneshot_epochs",
    "objective": "objective",
    "test_domain": "test_domain",
}
#: Every option that sets what a search is (OVERRIDES and the options read by hand), by its
#: argparse name: ``--resume`` takes these from the run's config.json.
RUN_SETTINGS = (
    *OVERRIDES,
    *("preset", "weight", "cost", "task", "max_macs", "max_params", "max_latency"),
    "screening_stages",
    *("synthetic_mix", "latency_backend", "latency_device"),
)
#: Options of a CNN search that an RNN search has no use for: refused with ``--task rnn``
#: (the settings config.CNN_ONLY names, by their options, and the data set's).
CNN_ONLY = (
    *("dataset", "synthetic_mix"),
    *(name for name in config_cnn_only if name != "latency"),
    *("latency_backend", "latency_device"),
)
#: Option names whose flag is not ``--`` and the name with dashes.
FLAGS = {"data_dir": "--data", "weight": "--lambda"}
#: ``--resume`` without its folder: the run in ``--out``.
IN_OUT = Path("--out")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` parser (settings, executors, resume) to ``sub``."""
    p = sub.add_parser(
        "search",
        help=SUBCOMMANDS["search"],
        description="Shrink a complete cell one edge at a time, keeping the best of K "
        "single-edge removals under score = accuracy - lambda * (log10(cost) - 6) "
        "(--task rnn: 0.25 * (200 - perplexity) - lambda * (log10(E * nhid^2) - 6)). "
        "--strategy random|rea runs a baseline on the same cells instead. "
        "Writes config.json, journal.jsonl, best_cell.json (+ picture) and result.json "
        "into --out.",
        formatter_class=DefaultsHelpFormatter,
    )
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
        type=Path,
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
    add_data_options(p)
    add_search_options(p)
    add_screening_options(p)
    add_training_options(p)
    add_execution_options(p)
    p.add_argument("--json", action="store_true", help="print result.json instead of the summary")
    p.set_defaults(handler=run)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The data options of ``autoshrink search``: the data set and the proxy's size."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None)
    g.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        default=None,
        help="folder of the data set (not for digits); --task rnn: train.txt and valid.txt",
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
        type=count_number,
        default=None,
        help="stop after this many steps without a better score",
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
        help="network whose latency is measured or predicted; None: the proxy network",
    )
    g.add_argument("--latency-backend", choices=BACKENDS, default=None, help="None: torch")
    g.add_argument(
        "--latency-device",
        type=device_name,
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
        "--device", type=device_name, default=None, help="cpu, cuda[:N] or auto (a GPU if any)"
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


def flag(name: str) -> str:
    """The command-line flag of the option ``name`` (its argparse name)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def resume_threads(saved: SearchConfig, now: ExecutionSettings, given: int | None) -> int | None:
    """The torch threads per candidate of a resumed session: ``--threads`` when given; else,
    where the run left them to its executor and that trained each candidate on one thread
    (pool, Ray) but this session's would not (in-process, batched), 1, so that the candidates
    left train as they would have in the uninterrupted run; else the run's own."""
    if given is not None:
        return given
    before, after = executor_name(saved.execution, saved.device), executor_name(now, saved.device)
    if (
        saved.threads is None
        and before in ONE_THREAD_EXECUTORS
        and after not in ONE_THREAD_EXECUTORS
    ):
        log.info(
            "the run trained its candidates on one thread each (%s); %s trains the rest on one "
            "too (more: --threads N, other numbers)%s",
            before,
            after,
            ""
            if after != "batched"
            else "; the batched engine rounds otherwise in float32, so "
            "the rest of the search may take another path than the uninterrupted run",
        )
        return 1
    return saved.threads


#: The options that set a setting of config.READ_BY: the setting's name by option.
READ_BY_OPTIONS = {
    **{name: name for name in ("patience", "population_size", "tournament_size")},
    **{name: name for name in ("zc_proxy", "zc_batch")},
    **{name: name for name in ("oneshot_epochs", "latency_table", "latency_macro")},
    "latency_backend": "latency",
    "latency_device": "latency",
}
#: What reads a setting (config.READ_BY), in the command line's words.
NEEDS_AS_FLAGS = {"a latency cost or constraint": "a latency --cost or --max-latency"}


def check_strategy_options(args: argparse.Namespace, config: SearchConfig) -> None:
    """Refuse an option the new search ``config`` would not read (each one was saved and
    ignored), by :func:`~autoshrink.config.unread_settings`: patience and REA's sizes with
    another strategy, the zero-cost batch without zero-cost screening, fine-tuning epochs
    without the one-shot evaluator, how latency is measured without a latency cost or
    constraint."""
    given = {o: name for o, name in READ_BY_OPTIONS.items() if getattr(args, o) is not None}
    unread = dict(unread_settings(config, set(given.values())))
    wasted = [
        f"{flag(option)} needs {NEEDS_AS_FLAGS.get(unread[name], '--' + unread[name])}"
        for option, name in given.items()
        if name in unread
    ]
    if wasted:
        raise ConfigError(f"not used by this search: {'; '.join(wasted)}")


def download_data(config: SearchConfig) -> None:
    """``--download``: fetch the data set of ``config`` into its data folder when it is not
    there (CIFAR-10 only: any other is refused in one line)."""
    if config.task != "cnn":
        raise ConfigError("--download is for the image data sets of --task cnn (CIFAR-10)")
    from autoshrink.data.images import fetch_images

    fetch_images(config.dataset, config.data_dir)


def default_out(task: str, preset_name: str) -> Path:
    """The run folder when ``--out`` is not given: ``runs/<preset>``, ``runs/rnn-<preset>`` for
    RNN cells (a CNN and an RNN demo do not meet in one folder)."""
    return Path("runs") / (f"rnn-{preset_name}" if task == "rnn" else preset_name)


#: What a search runs with: its folder, its config (``None``: the run's own, which
#: :func:`~autoshrink.search.run_search` reads), and the device and execution settings its
#: executor is built from.
RunPlan = tuple[Path, SearchConfig | None, str, ExecutionSettings]


def resumed_run(args: argparse.Namespace, execution: dict[str, Any]) -> RunPlan:
    """The run ``--resume`` continues, with the executor options given now (``execution``):
    its own settings, which no other flag may change."""
    if args.out is not None and args.out.resolve() != args.resume.resolve():
        raise ConfigError(
            f"--resume {args.resume} continues the run in its own folder; drop --out {args.out}"
        )
    flags = [flag(name) for name in RUN_SETTINGS if getattr(args, name) is not None]
    if flags:
        raise ConfigError(
            f"--resume takes its settings from the run's config.json; drop {' '.join(flags)}"
        )
    run_dir, config = args.resume, None
    if (run_dir / CONFIG).exists():  # else run_search says there is nothing to resume
        saved = SearchConfig.load(run_dir / CONFIG)
        if args.download:  # the run's data set, into the run's --data folder
            download_data(saved)
        # another --executor starts from its own options; else (the run's named again
        # too) the run's, updated
        run_executor = executor_name(saved.execution, saved.device)
        named = execution.get("executor", run_executor)
        base = saved.execution if named == run_executor else ExecutionSettings()
        device, settings = saved.device, replace(base, **execution)
        threads = resume_threads(saved, settings, args.threads)
        if threads != saved.threads:  # this session only, as the execution settings
            config = replace(saved, threads=threads)
    else:
        device, settings = "cpu", ExecutionSettings(**execution)
    return run_dir, config, device, settings


def new_run(
    args: argparse.Namespace, given: dict[str, Any], execution: dict[str, Any], table: bool
) -> RunPlan:
    """A new search: the preset's config with the settings the flags give (``given``,
    ``execution``; ``table``: a latency table is the cost or the limit), checked together."""
    task, preset_name = args.task or "cnn", args.preset or "demo"
    wrong = [flag(name) for name in CNN_ONLY if getattr(args, name) is not None]
    if task == "rnn" and wrong:
        raise ConfigError(f"{', '.join(wrong)}: only for --task cnn, not --task rnn")
    if task == "rnn" and (args.objective == "ood" or args.test_domain is not None):
        raise ConfigError("--objective ood and --test-domain are for cnn cells, not --task rnn")
    if task == "rnn" and args.data_dir is None:
        raise ConfigError("--task rnn needs --data DIR, a folder with train.txt and valid.txt")
    if task == "cnn" and args.cost == "edge_cost":
        raise ConfigError("--cost edge_cost is the rnn cost; expected macs or params")
    if task == "rnn" and (args.max_latency or args.cost in LATENCY_COSTS):
        raise ConfigError("latency costs and --max-latency are for cnn cells, not --task rnn")
    if table and args.latency_table is None:  # a table in the run folder, shared by workers
        out = args.out or default_out(task, preset_name)
        given["latency_table"] = str(out / "latency_table.json")
    for name in ("latency_table", "data_dir"):  # config.json holds them for --resume, which
        if name in given:  # may run from another folder: absolute, as the user meant them
            given[name] = str(Path(given[name]).expanduser().absolute())
    given["execution"] = ExecutionSettings(**execution)
    if args.weight is not None or args.cost is not None:
        make_score = Score.rnn if task == "rnn" else Score.cnn
        score = preset(preset_name, task=task).score
        given["score"] = make_score(
            weight=args.weight if args.weight is not None else score.weight,
            cost=args.cost or score.cost,
        )
    # the search without the settings only some searches read: which of those it reads
    reads = {k: v for k, v in given.items() if k not in READ_BY}
    check_strategy_options(args, preset(preset_name, task=task, **reads))
    config = preset(preset_name, task=task, **given)
    if task == "cnn":
        check_root(config.dataset, config.data_dir)
    if config.screening == "progressive" and not config.screening_stages:
        config = replace(config, screening_stages=config.stages())  # the default, saved
    if args.download:
        download_data(config)
    run_dir = args.out or default_out(task, preset_name)
    device, settings = config.device, config.execution
    return run_dir, config, device, settings


def flag_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The settings the flags give, checked as typed: the config's (``given``), the
    executor's (``execution``), and whether a latency table is the cost or the limit."""
    given = {dest: getattr(args, name) for name, dest in OVERRIDES.items()}
    given = {k: v for k, v in given.items() if v is not None}
    # named by the flags typed (the config names its fields: "score weight", "constraint")
    require("--lambda", args.weight, "finite and >= 0")
    for option, limit in (
        ("--max-macs", args.max_macs),
        ("--max-params", args.max_params),
        ("--max-latency", args.max_latency),
    ):
        require(option, limit, "finite and > 0")
    table = args.latency_table is not None or args.cost == "table_latency_ms"
    bounded = "table_latency_ms" if table else "latency_ms"  # what --max-latency limits
    measured = args.max_latency is not None and args.cost == bounded
    if args.weight == 0 and args.cost is not None and not measured:
        raise ConfigError(  # it would be saved unread (a latency one: with its settings)
            f"--cost {args.cost} with --lambda 0: the score reads no cost; give --lambda > 0, "
            "or leave --cost out"
        )
    limits = {"macs": args.max_macs, "params": args.max_params}
    if args.latency_table is not None:
        check_output_file(args.latency_table, "--latency-table")
    limits["table_latency_ms" if table else "latency_ms"] = args.max_latency
    constraints = {k: v for k, v in limits.items() if v is not None}
    if constraints:
        given["constraints"] = constraints
    if args.screening_stages is not None:
        given["screening_stages"] = parse_stages(args.screening_stages)
    if args.synthetic_mix is not None and args.resume is None:  # a resume's: refused below
        if args.objective != "ood":
            raise ConfigError("--synthetic-mix is a setting of --objective ood")
        given["ood"] = OodSettings(synthetic_mix=args.synthetic_mix)
    if args.latency_backend or args.latency_device:
        given["latency"] = LatencySettings(
            backend=args.latency_backend or "torch", device=args.latency_device or "cpu"
        )
    execution = {
        "executor": args.executor,
        "workers": args.workers,
        "ray_address": args.ray_address,
        "precision": args.precision,
        "depthwise": args.depthwise,
    }
    execution = {k: v for k, v in execution.items() if v is not None}
    if args.threads is not None:
        given["threads"] = args.threads
    if args.cuda_graph is not None:
        execution["cuda_graph"] = args.cuda_graph
    return given, execution, table


def run(args: argparse.Namespace) -> int:
    """Run or resume the search the flags describe and print its best cell; 0."""
    given, execution, table = flag_settings(args)
    if args.resume is IN_OUT:
        if args.out is None:
            raise ConfigError("--resume needs the run: --resume RUN_DIR, or --out RUN_DIR --resume")
        args.resume = args.out
    if (args.retry_failed or args.repair) and args.resume is None:
        raise ConfigError("--retry-failed and --repair go with --resume RUN_DIR")
    if args.resume is not None:
        run_dir, config, device, settings = resumed_run(args, execution)
    else:
        run_dir, config, device, settings = new_run(args, given, execution, table)
    try:
        executor = executor_for(settings, device)
    except ConfigError as err:
        if args.resume is None:
            raise
        where = f"{args.resume / CONFIG}: execution settings (with the command line's)"
        raise ConfigError(f"{where}: {err}") from None
    result = run_search(
        run_dir,
        config,
        resume=args.resume is not None,
        executor=executor,
        progress=not args.no_progress,
        retry_failed=args.retry_failed,
        repair=args.repair,
    )
    if args.report:
        from autoshrink.report.folder import write_report

        print(f"report: {write_report(result.run_dir)}", file=sys.stderr if args.json else None)
    return print_summary(result, as_json=args.json)
