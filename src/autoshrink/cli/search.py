"""``autoshrink search``: run or resume a search (AutoShrink or a baseline); print the best."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoshrink.cli import SUBCOMMANDS, DefaultsHelpFormatter
from autoshrink.cli.search_flags import IN_OUT, NO_LIMIT, add_search_flags
from autoshrink.cli.search_summary import print_summary
from autoshrink.config import CNN_ONLY as config_cnn_only
from autoshrink.config import READ_BY, ExecutionSettings, SearchConfig, unread_settings
from autoshrink.data.images import EMBEDDED, check_root, reads_no_folder
from autoshrink.errors import ConfigError, DataError
from autoshrink.executors.factory import ONE_THREAD_EXECUTORS, executor_for, executor_name
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.objectives import COSTS, LATENCY_COSTS, Score
from autoshrink.outputs import check_output_file
from autoshrink.presets import TRAINING_SPELLINGS, preset
from autoshrink.ranges import require
from autoshrink.run_folder import CONFIG
from autoshrink.screening import parse_stages
from autoshrink.search import run_search
from autoshrink.training.proxy_settings import OodSettings

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
    **TRAINING_SPELLINGS,  # --epochs: training_epochs, ...
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
#: Settings of :data:`RUN_SETTINGS` that ``--resume`` takes too: where the run's data is now
#: (a data folder may move; the fingerprint leaves it out). ``config.json`` keeps the run's own.
MOVABLE = ("data_dir",)
#: Options of a CNN search that an RNN search has no use for: refused with ``--task rnn``
#: (the settings config.CNN_ONLY names, by their options, and the data set's).
CNN_ONLY = (
    *("dataset", "synthetic_mix"),
    *(name for name in config_cnn_only if name != "latency"),
    *("latency_backend", "latency_device"),
)
#: Option names whose flag is not ``--`` and the name with dashes.
FLAGS = {"data_dir": "--data", "weight": "--lambda"}


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
    add_search_flags(p)
    p.set_defaults(handler=run)


def flag(name: str) -> str:
    """The command-line flag of the option ``name`` (its argparse name)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def resume_threads(saved: SearchConfig, now: ExecutionSettings, given: int | None) -> int | None:
    """The torch threads per candidate of a resumed session: ``--threads`` when given; else,
    where the run left them to its executor and that trained each candidate on one thread
    (pool, Ray) but this session's would not (in-process, batched), 1, so that the candidates
    left train as they would have in the uninterrupted run; else the run's own. The other way
    round (a run on torch's default threads resumed on one thread per candidate) is said with
    a warning: the pool and Ray give a worker one thread unless told."""
    if given is not None:
        return given
    if saved.threads is not None:
        return saved.threads
    before, after = executor_name(saved.execution, saved.device), executor_name(now, saved.device)
    one_before, one_after = before in ONE_THREAD_EXECUTORS, after in ONE_THREAD_EXECUTORS
    if one_before and not one_after:
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
    if one_after and not one_before:
        log.warning(
            "the run trained its candidates on torch's default threads (%s); %s trains the "
            "rest on one thread each, which rounds otherwise: the rest of the search may take "
            "another path than the uninterrupted run (--threads N: N each)",
            before,
            after,
        )
    return None


#: The options that set a setting of config.READ_BY: the setting's name by option.
READ_BY_OPTIONS = {
    **{name: name for name in ("patience", "population_size", "tournament_size")},
    **{name: name for name in ("zc_proxy", "zc_batch")},
    **{name: name for name in ("oneshot_epochs", "latency_table", "latency_macro")},
    "latency_backend": "latency",
    "latency_device": "latency",
}
#: What reads a setting (config.READ_BY), in the command line's words.
NEEDS_AS_FLAGS = {
    "a latency cost or constraint": "a latency --cost or --max-latency",
    "a table_latency_ms cost or constraint": "--cost table_latency_ms or --max-latency",
}


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
    flags = [
        flag(name)
        for name in RUN_SETTINGS
        if name not in MOVABLE and getattr(args, name) is not None
    ]
    if flags:
        raise ConfigError(
            f"--resume takes its settings from the run's config.json; drop {' '.join(flags)}"
        )
    run_dir, config = args.resume, None
    if (run_dir / CONFIG).exists():  # else run_search says there is nothing to resume
        saved = SearchConfig.load(run_dir / CONFIG)
        if args.data_dir is not None:  # the run's data, moved there
            saved = replace(saved, data_dir=str(Path(args.data_dir).expanduser().absolute()))
            check_root(saved.dataset, saved.data_dir)
        elif saved.data_dir is not None and saved.dataset in EMBEDDED:  # config.json edited
            raise DataError(
                f"{run_dir / CONFIG}: data_dir {saved.data_dir}: {reads_no_folder(saved.dataset)}"
                "; set data_dir to null"
            )
        elif saved.data_dir is not None and not args.download and not Path(saved.data_dir).exists():
            raise DataError(  # the loader's "no such folder" did not say how to go on
                f"{saved.data_dir}: no such folder (the data_dir of {run_dir / CONFIG}); if the "
                "data moved, resume with --data DIR naming where it is now"
            )
        if args.download:  # the run's data set, into the run's --data folder
            download_data(saved)
        # another --executor starts from its own options; else (the run's named again
        # too) the run's, updated
        run_executor = executor_name(saved.execution, saved.device)
        named = execution.get("executor", run_executor)
        base = saved.execution if named == run_executor else ExecutionSettings()
        device, settings = saved.device, replace(base, **execution)
        # this session's threads, as the execution settings (the fingerprint leaves them out)
        config = replace(saved, threads=resume_threads(saved, settings, args.threads))
    else:
        device, settings = "cpu", ExecutionSettings(**execution)
    return run_dir, config, device, settings


def check_task_flags(args: argparse.Namespace, task: str) -> None:
    """Refuse the flags of a new search that its ``task`` has no use for, naming them, and an
    rnn search without its text folder."""
    if task == "cnn":
        if args.cost == "edge_cost":
            cnn_costs = f"{', '.join(COSTS[:-1])} or {COSTS[-1]}"
            raise ConfigError(f"--cost edge_cost is the rnn cost; expected {cnn_costs}")
        return
    if wrong := [flag(name) for name in CNN_ONLY if getattr(args, name) is not None]:
        raise ConfigError(f"{', '.join(wrong)}: only for --task cnn, not --task rnn")
    if args.objective == "ood" or args.test_domain is not None:
        raise ConfigError("--objective ood and --test-domain are for cnn cells, not --task rnn")
    if args.data_dir is None:
        raise ConfigError("--task rnn needs --data DIR, a folder with train.txt and valid.txt")
    if args.max_latency or args.cost in LATENCY_COSTS:
        raise ConfigError("latency costs and --max-latency are for cnn cells, not --task rnn")


def new_run(
    args: argparse.Namespace, given: dict[str, Any], execution: dict[str, Any], table: bool
) -> RunPlan:
    """A new search: the preset's config with the settings the flags give (``given``,
    ``execution``; ``table``: a latency table is the cost or the limit), checked together."""
    task, preset_name = args.task or "cnn", args.preset or "demo"
    check_task_flags(args, task)
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
    name = executor_name(settings, device)
    if settings.cuda_graph is False and name != "batched":  # saved, and read by nothing
        raise ConfigError(f"--no-cuda-graph sets the batched engine; the executor is {name!r}")
    return run_dir, config, device, settings


def flag_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The settings the flags give, checked as typed: the config's (``given``), the
    executor's (``execution``), and whether a latency table is the cost or the limit."""
    given = {dest: getattr(args, name) for name, dest in OVERRIDES.items()}
    given = {k: None if v == NO_LIMIT else v for k, v in given.items() if v is not None}
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
    if args.threads is not None:
        given["threads"] = args.threads
    return given, execution_flags(args), table


def execution_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The executor's settings the flags give; ``--candidate-timeout none`` as ``None``, kept,
    so that a resume's settings lose the run's limit."""
    limit = args.candidate_timeout
    if limit != NO_LIMIT:
        require("--candidate-timeout", limit, "finite and > 0")
    execution = {
        "executor": args.executor,
        "workers": args.workers,
        "ray_address": args.ray_address,
        "precision": args.precision,
        "depthwise": args.depthwise,
        "candidate_timeout": limit,
        "cuda_graph": args.cuda_graph,
    }
    execution = {k: v for k, v in execution.items() if v is not None}
    if limit == NO_LIMIT:
        execution["candidate_timeout"] = None
    return execution


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
        executor = executor_for(settings, device, None if config is None else config.threads)
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
