"""``autoshrink bench nb201``: compare search strategies on NAS-Bench-201, simulated from tables.

Prints, for each strategy and at 25/50/100/200 queries (those within ``--queries``), the mean
and std over ``--runs`` seeded runs of the 200-epoch test accuracy of the cell the strategy
would return; the searches themselves see only validation accuracy and cost. ``--json``
prints one JSON object instead; ``--out DIR`` writes these files (shapes in docs/nb201.md):

- ``bench.json`` -- the ``--json`` object: ``config``, ``optimum``, ``score_optimum``,
  ``results`` (one row per strategy and checkpoint), ``pareto``, ``elapsed_s``;
- ``results.csv`` -- the ``results`` rows; ``curves.csv`` -- ``strategy,queries,mean,std`` after
  every query; ``runs.csv`` -- every run's returned cell at every checkpoint;
  ``pareto.csv`` -- the ``pareto`` rows (``--objective score`` only);
- ``curves.png`` -- accuracy vs queries, one line per strategy, the optimum dashed;
  ``pareto.png`` -- returned cells and the benchmark front, accuracy vs cost (score only).

The cost term of ``--objective score`` is the cell's MACs, or with ``--cost METRIC
--hwnasbench FILE --allow-pickle`` an HW-NAS-Bench metric (``edgegpu_latency``, ...; see
:data:`autoshrink.hardware.hwnasbench.METRICS`) of the same data set, read from the user's
HW-NAS-Bench pickle. The table, the plots and the files then follow that metric: result rows gain
``cost_mean``, pareto rows and ``score_optimum`` give the metric under its own name (beside
``macs``), ``runs.csv`` gains its column and ``config.cost`` names it (``"macs"`` otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from autoshrink.cli import (
    SUBCOMMANDS,
    count_number,
    folder_path,
    int_at_most,
    renamed_flag,
    seed_number,
)
from autoshrink.devices import MAX_THREADS, check_threads
from autoshrink.errors import AutoshrinkError, ConfigError
from autoshrink.hardware.hwnasbench import METRICS, HWNASBenchCost, load_hwnasbench
from autoshrink.outputs import claim_folder
from autoshrink.ranges import require
from autoshrink.report.bench_files import FILES, format_table, report_object, write_outputs
from autoshrink.stop_signals import StopSignals
from autoshrink.tabular import NB201Tables, load_tables
from autoshrink.tabular.comparison import (
    MACS,
    OBJECTIVES,
    STRATEGIES,
    ZC_STRATEGY,
    run_bench,
)
from autoshrink.zero_cost import PROXY_NAMES, check_proxy

if TYPE_CHECKING:
    from autoshrink.evaluators.nb201_zero_cost import NB201ZeroCost

log = logging.getLogger(__name__)

DEFAULT_STRATEGIES = "random,rea,local,autoshrink"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` parser (its one benchmark, ``nb201``) to ``sub``."""
    p = sub.add_parser(
        "bench",
        help=SUBCOMMANDS["bench"],
        description="Run every strategy R times at a query budget on NAS-Bench-201 tables; "
        "searches see 12-epoch validation accuracy, the report gives the 200-epoch test "
        "accuracy of the returned cell.",
    )
    p.add_argument("benchmark", choices=["nb201"], help="the benchmark")
    p.add_argument(
        "--tables",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder with the flat CSVs (or an official archive, with --allow-pickle)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow reading pickles (an official .pickle.pbz2 archive, the --hwnasbench "
        "file) with the restricted reader",
    )
    p.add_argument(
        "--hwnasbench",
        type=Path,
        default=None,
        metavar="FILE",
        help="HW-NAS-Bench pickle (HW-NAS-Bench-v1_0.pickle) for --cost; needs --allow-pickle",
    )
    p.add_argument(
        "--cost",
        default=MACS,
        metavar="METRIC",
        help=f"cost term of --objective score: macs (default) or, with --hwnasbench, one of "
        f"{', '.join(METRICS)}",
    )
    p.add_argument(
        "--dataset", default="cifar10", help="cifar10, cifar100 or ImageNet16-120 (default cifar10)"
    )
    p.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help=f"comma-separated, from {','.join([*STRATEGIES, ZC_STRATEGY])} "
        f"(default {DEFAULT_STRATEGIES})",
    )
    p.add_argument(
        "--zc-proxy",
        default=None,
        metavar="NAME",
        help=f"{ZC_STRATEGY}: the zero-cost proxy that ranks each step's shrink space, one of "
        f"{', '.join(PROXY_NAMES)} (default synflow; computed for the cells met, on the CPU)",
    )
    p.add_argument(
        "--zc-cache",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help=f"{ZC_STRATEGY}: read and extend the proxy values of earlier benches here (one of "
        "other settings -- proxy, data set -- is refused)",
    )
    p.add_argument(
        "--threads",
        type=int_at_most(MAX_THREADS),
        default=None,
        help=f"{ZC_STRATEGY}: torch threads while the proxies are computed (default: torch's, all "
        "cores; 1 is often faster on a busy machine)",
    )
    p.add_argument(
        "--runs",
        type=count_number,
        default=100,
        help="seeded runs per strategy (default 100)",
    )
    p.add_argument(
        "--queries",
        type=count_number,
        default=200,
        help="query budget per run (default 200)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="accuracy",
        help="what the searches maximise (default accuracy)",
    )
    p.add_argument(
        "--lambda",
        dest="weight",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="weight of the cost term of --objective score: acc - LAMBDA*(log10 cost - 6) "
        "(default 0.1)",
    )
    renamed_flag(p, "--weight", "--lambda", dest="weight", kind=float)
    p.add_argument("--seed", type=seed_number, default=0, help="run r uses seed SEED+r (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--out",
        type=folder_path,
        default=None,
        metavar="DIR",
        help="write bench.json, CSVs and plots here",
    )
    p.set_defaults(handler=run, memory_sizes="--runs times --queries")


#: ``--lambda`` when not given: the cost term's weight of ``--objective score``.
DEFAULT_WEIGHT = 0.1


def check_cost_args(args: argparse.Namespace) -> None:
    """One-line errors for a ``--cost``/``--hwnasbench``/``--lambda`` combination that cannot
    work."""
    if args.cost != MACS and args.cost not in METRICS:
        raise ConfigError(
            f"--cost must be {MACS} or an HW-NAS-Bench metric ({', '.join(METRICS)}), "
            f"got {args.cost!r}"
        )
    require("--lambda", args.weight, "finite and >= 0")  # named as typed
    if args.weight is not None and args.objective != "score":  # it was saved as null, unread
        raise ConfigError(
            f"--lambda weighs the cost term of --objective score, but --objective is "
            f"{args.objective}"
        )
    if args.cost != MACS and args.objective != "score":
        raise ConfigError(
            f"--cost {args.cost} is the cost term of --objective score, "
            f"but --objective is {args.objective}"
        )
    if args.cost != MACS and args.hwnasbench is None:
        raise ConfigError(f"--cost {args.cost} needs --hwnasbench FILE (an HW-NAS-Bench pickle)")
    if args.cost == MACS and args.hwnasbench is not None:
        raise ConfigError(
            f"--hwnasbench is only read for --cost METRIC (one of {', '.join(METRICS)})"
        )


def hw_cost(args: argparse.Namespace, tables: NB201Tables) -> HWNASBenchCost | None:
    """The ``--cost`` HW-NAS-Bench metric read from ``--hwnasbench`` (``None`` for MACs)."""
    if args.cost == MACS:
        return None
    hw = load_hwnasbench(args.hwnasbench, allow_pickle=args.allow_pickle)
    return hw.cost(dataset=args.dataset, metric=args.cost, index=tables.index)


def keep_computed(zc: NB201ZeroCost) -> None:
    """Save the zero-cost values ``zc`` computed before the bench stopped (a signal, an error)
    to its cache, for the next bench; a cache that cannot be written is a warning then, not a
    second error."""
    if zc.cache is None or not zc.computed:
        return
    try:
        zc.save()
    except (OSError, AutoshrinkError) as err:
        log.warning(
            "%s: the %d zero-cost values computed are lost (%s)", zc.cache, zc.computed, err
        )
    else:
        log.warning("%s: kept the %d zero-cost values computed before the stop", zc.cache,
                    zc.computed)  # fmt: skip


def compare(args: argparse.Namespace, names: list[str], zc: NB201ZeroCost | None) -> None:
    """Run the strategies ``names`` on the tables, print the comparison and write ``--out``'s
    files."""
    start = time.perf_counter()
    tables = load_tables(args.tables, allow_pickle=args.allow_pickle)
    result = run_bench(
        tables,
        strategies=names,
        runs=args.runs,
        queries=args.queries,
        dataset=args.dataset,
        objective=args.objective,
        weight=DEFAULT_WEIGHT if args.weight is None else args.weight,
        seed=args.seed,
        progress=True,
        cost=hw_cost(args, tables),
        zc_rank=zc,
    )
    obj = report_object(result, tables.index.index_of_code, time.perf_counter() - start)
    if zc is not None:
        obj["config"]["zero_cost"] = zc.summary()
    print(json.dumps(obj) if args.json else format_table(obj))
    if args.out is not None:
        written = write_outputs(result, obj, tables.index.index_of_code, args.out)
        if not args.json:
            print("wrote " + ", ".join(str(p) for p in written))


def run(args: argparse.Namespace) -> int:
    """Run the simulated comparison and print (or ``--json``) its table; 0 when done."""
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    check_cost_args(args)
    zc_flags = (
        ("--zc-proxy", args.zc_proxy),
        ("--zc-cache", args.zc_cache),
        ("--threads", args.threads),
    )
    unused = [flag for flag, value in zc_flags if value is not None]  # 0 and "" were "not given"
    if unused and ZC_STRATEGY not in names:  # each was ignored without a word
        raise ConfigError(f"{', '.join(unused)}: only for the {ZC_STRATEGY} strategy, not run here")
    if args.threads is not None:  # 0 was torch's RuntimeError, after the tables were read
        check_threads(args.threads, "--threads")
    args.zc_proxy = "synflow" if args.zc_proxy is None else args.zc_proxy  # "" is refused
    check_proxy(args.zc_proxy)
    if args.out is not None:  # before the searches: a bad --out fails now, not after them
        # a bench keeps its results, and writes over no file of someone else's
        claim_folder(args.out, "bench", resume=False, writes=FILES)
    zc = None
    if ZC_STRATEGY in names:
        from autoshrink.evaluators.nb201_zero_cost import NB201ZeroCost  # torch: only here

        zc = NB201ZeroCost(args.zc_proxy, args.dataset, cache=args.zc_cache, threads=args.threads)
        zc.load_cache()
    # SIGTERM too stops it as Ctrl-C does (143), so that the zero-cost values computed so far
    # are kept in --zc-cache: a first synflow bench spends minutes on them
    try:
        with StopSignals():
            compare(args, names, zc)
    except BaseException:
        if zc is not None:
            keep_computed(zc)
        raise
    if zc is not None:  # after the results: a cache that cannot be written loses none of them
        zc.save()
    return 0
