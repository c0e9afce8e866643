"""``autoshrink train CELL.json``: train a found cell's network on a whole data set.

The CNN branch builds a macro network (the proxy-style ``cifar-proxy`` or the ImageNet
``shrinkcnn-imagenet``) around the cell and trains it with a recipe (``cifar`` or
``shrinkcnn-imagenet``, or a recipe JSON file) on one process, or on several under
``torchrun`` (one per GPU; gloo on CPUs). Rank 0 writes ``recipe.json``, ``cell.json``,
``log.jsonl``, ``checkpoints/`` (every epoch), ``weights.safetensors`` (the evaluated weights:
the EMA when the recipe has one) and ``metrics.json`` into ``--out``. The RNN branch
(``--task rnn``) is :mod:`autoshrink.cli.rnn`; it checkpoints every epoch too, and trains
in one process (under ``torchrun`` it is refused). What is
written there, and the checks of a folder around a training, are
:mod:`autoshrink.training.train_folder`'s; this module parses, glues and prints.

``--out`` may not hold an earlier training's results unless ``--resume`` continues it (both
tasks), and a resume of another run (cell, macro, data set, recipe or seed changed) is
refused before any work. The options of one ``--task`` (:func:`task_option`) are an error
with the other; ``--resume`` is shared. A
training whose loss turns NaN/inf writes ``metrics.json`` (``diverged_epoch``) and ends with
a one-line error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from autoshrink.cli import (
    SUBCOMMANDS,
    DefaultsHelpFormatter,
    count_number,
    data_path,
    folder_path,
    int_at_most,
    refuse_for_arch,
    rnn,
    seed_number,
    shows_default,
)
from autoshrink.cli.metrics_file import print_metrics
from autoshrink.cost.cells import Counts, count
from autoshrink.data.domains import DOMAINS, DomainImageData, check_test_domain
from autoshrink.data.images import DATASETS, load_images
from autoshrink.data.loaders import TrainingData, array_data, folder_data
from autoshrink.devices import MAX_THREADS, check_threads, device_argument, torch_threads
from autoshrink.errors import ConfigError, DataError, TrainingError
from autoshrink.graph import CNN_ACTIVATIONS, Cell
from autoshrink.nn.cnn import build_network
from autoshrink.outputs import claim_folder, held_folder
from autoshrink.ranges import require
from autoshrink.singlepath.space import MBConvArch, build_arch, count_arch, is_arch_file
from autoshrink.spaces.macros import DEFAULT_MACRO, MACROS, get_macro
from autoshrink.stop_signals import stop_says_resume
from autoshrink.training.checkpoint import newest_checkpoint
from autoshrink.training.distributed import DistContext, distributed, end_process, launched_as
from autoshrink.training.final import FinalResult, train_final
from autoshrink.training.final_language import LMRecipe
from autoshrink.training.recipes import PRECISIONS, RECIPES, Recipe, get_recipe
from autoshrink.training.train_folder import (
    WEIGHTS,
    check_training_resumable,
    ended_metrics,
    forget_start,
    outputs,
    write_inputs,
    write_metrics,
    write_weights,
)
from autoshrink.training.weights_file import weights_metadata

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser (CNN and RNN recipes) to ``sub``."""
    p = sub.add_parser(
        "train",
        help=SUBCOMMANDS["train"],
        description="Train the network built from a cell (--macro) on the whole training set "
        "with a recipe (--recipe); runs as is on one process, or under torchrun on several "
        "(e.g. torchrun --nproc_per_node 8 -m autoshrink train CELL.json --device cuda ...; "
        "--task rnn: one process only). "
        "Writes weights (safetensors), checkpoints, the recipe, the cell and metrics.json "
        "into --out, which must not hold the results of an earlier training unless --resume "
        "continues it. An option of the other --task is an error.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("cell", type=Path, help="a cell JSON file or an mbconv architecture file")
    p.add_argument("--task", choices=("cnn", "rnn"), default="cnn", help="rnn: see below")
    p.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        type=data_path,
        default=None,
        help="cnn: the data set's folder (default: its own place); rnn: a PTB-style folder",
    )
    p.add_argument("--epochs", type=count_number, default=None, help="default: the recipe's")
    p.add_argument(
        "--batch-size",
        type=count_number,
        default=None,
        help="global batch, all processes (default: the recipe's)",
    )
    p.add_argument(
        "--lr", type=float, default=None, help="cnn: lr per 256 images, scaled to the global batch"
    )
    p.add_argument(
        "--seed", type=seed_number, default=0, help="seed of the weights and the data order"
    )
    p.add_argument(
        "--device",
        type=device_argument,
        default="cpu",
        help="cpu, cuda (cuda:LOCAL_RANK), cuda:N, auto",
    )
    p.add_argument(
        "--threads",
        type=int_at_most(MAX_THREADS),
        default=None,
        help="torch threads per process (default: torch's, all cores); may change on --resume, "
        "but only a resume on as many threads is bit-exact: CPU sums round otherwise, and the "
        "difference grows over the epochs (to tenths of a point of accuracy)",
    )
    p.add_argument(
        "--out", type=folder_path, default=Path("runs/train"), metavar="DIR", help="the run folder"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the training in --out from its newest checkpoint (cnn and rnn; from "
        "scratch, with a warning, when there is none); refused when the settings differ",
    )
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the summary")
    cnn: dict[str, tuple[str, Any]] = {}
    add_cnn_arguments(partial(task_option, p.add_argument_group("--task cnn"), cnn))
    group = p.add_argument_group(
        "--task rnn (DARTS-style recipe; --epochs, --batch-size and --lr default to "
        f"{LMRecipe.epochs}, {LMRecipe.batch_size} and {LMRecipe.lr} unless given)"
    )
    rnn_options: dict[str, tuple[str, Any]] = {}
    rnn.add_train_arguments(partial(task_option, group, rnn_options))
    p.set_defaults(handler=run, task_options={"cnn": cnn, "rnn": rnn_options})


def add_cnn_arguments(option: Callable[..., None]) -> None:
    """Declare the options of ``--task cnn`` alone through ``option`` (see :func:`task_option`)."""
    option("--dataset", choices=DATASETS, default="digits", help="the image data set")
    option(
        "--test-domain",
        default=None,
        metavar="NAME",
        help="multi-domain data sets: train on the other domains, report this one apart "
        "(docs/ood.md)",
    )
    option(
        "--recipe",
        default="cifar",
        help=f"a recipe: {' or '.join(RECIPES)}, or a recipe .json file",
    )
    option(
        "--macro",
        choices=sorted(MACROS),
        default=None,
        help=f"the macro network of a cell, not for an mbconv file (default: {DEFAULT_MACRO})",
    )
    option(
        "--image-size",
        type=count_number,
        default=None,
        help="default: the recipe's, or the data's",
    )
    option("--width", type=float, default=None, help="width multiplier (default: the macro's own)")
    option(
        "--activation",
        choices=CNN_ACTIVATIONS,
        default=None,
        help="override the cell's (not for an mbconv file)",
    )
    option("--no-flip", action="store_true", default=False, help="no horizontal flips")
    option("--ema", type=float, default=None, help="weight EMA decay; 0 turns it off")
    option("--precision", choices=PRECISIONS, default=None, help="default: the recipe's")
    option(
        "--workers",
        type=int_at_most(MAX_THREADS),
        default=0,
        help="DataLoader processes per process",
    )


def task_option(
    group: argparse._ArgumentGroup,
    options: dict[str, tuple[str, Any]],
    *flags: str,
    default: Any,
    help: str,
    **kwargs: Any,
) -> None:
    """Add an option that only one ``--task`` uses: argparse leaves it unset unless given (so
    :func:`settle_task_options` can tell a given flag from a default); ``options`` records its
    flag and default under its name."""
    shown = f" (default: {default})" if shows_default(default, help) else ""
    action = group.add_argument(*flags, default=argparse.SUPPRESS, help=help + shown, **kwargs)
    options[action.dest] = (flags[0], default)


def settle_task_options(args: argparse.Namespace) -> None:
    """Refuse the options of the other ``--task`` that were given; set the unset ones to their
    defaults."""
    given = set(vars(args))
    for task, options in args.task_options.items():
        wrong = [flag for name, (flag, _) in options.items() if task != args.task and name in given]
        if wrong:
            raise ConfigError(f"{', '.join(wrong)}: only for --task {task}, not --task {args.task}")
        for name, (_, default) in options.items():
            vars(args).setdefault(name, default)


def run(args: argparse.Namespace) -> int:
    """Train the cell's network (``--task cnn`` or ``rnn``) and report its test score; 0. The
    process that writes (rank 0) holds ``--out`` while it checks and trains
    (:func:`~autoshrink.outputs.held_folder`): one training per folder; a process of a
    multi-process run ends here once it has let go (:func:`finished`)."""
    settle_task_options(args)
    if args.threads is not None:
        check_threads(args.threads, "--threads")
    rank, world = launched_as()
    if args.task == "rnn" and world > 1:  # each process would train alone into one --out
        raise ConfigError(
            f"--task rnn trains in one process; run it without torchrun (WORLD_SIZE {world})"
        )
    claim = partial(claim_folder, args.out, "train", resume=args.resume, writes=outputs())
    claim()  # nor someone else's; before anything is made
    held = held_folder(args.out, resume=args.resume)
    with held if rank == 0 else contextlib.nullcontext():
        claim()  # again, held: a training that began meanwhile may have written its recipe
        if args.resume:
            check_training_resumable(args.out)
        newest = newest_checkpoint(args.out)
        with stop_says_resume("training", args.out, newest), torch_threads(args.threads):
            if args.task == "rnn":
                return rnn.run_train(args)
            status = run_cnn(args)
    return finished(world, status)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe named by ``--recipe`` with the command line's settings applied (``--lr`` and
    ``--ema`` out of range named by their flags, as they are typed)."""
    require("--lr (per 256 images)", args.lr, "finite and > 0")
    if args.ema is not None and not 0 <= args.ema <= 1:
        raise ConfigError(f"--ema must lie in [0, 1] (0 turns the EMA off), got {args.ema:g}")
    given = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr_per_256": args.lr,
        "image_size": args.image_size,
        "precision": args.precision,
        "ema_decay": args.ema,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    if args.ema == 0:
        overrides["ema_decay"] = None
    if args.no_flip:
        overrides["flip"] = False
    return get_recipe(args.recipe, **overrides)


def load_training_data(args: argparse.Namespace, recipe: Recipe) -> TrainingData:
    """Folders are read per image; the other data sets are held in memory."""
    if args.dataset == "imagefolder":
        if args.data_dir is None:
            raise DataError("--dataset imagefolder needs --data-dir ROOT (ROOT/train, ROOT/val)")
        return folder_data(args.data_dir, recipe, seed=args.seed)
    images = load_images(args.dataset, args.data_dir, test_domain=args.test_domain)
    return array_data(images, recipe, seed=args.seed)


def domain_metrics(
    args: argparse.Namespace, model: torch.nn.Module, data: TrainingData, device: torch.device
) -> dict:
    """Per-domain accuracies of a multi-domain data set (empty for the others); the
    held-out domain is loaded here, after training, and nowhere before."""
    if args.dataset not in DOMAINS:
        return {}
    from autoshrink.training.domain_eval import domain_report, report_metrics

    images = load_images(args.dataset, args.data_dir, test_domain=args.test_domain)
    if not isinstance(images, DomainImageData):
        raise DataError(f"{args.dataset}: expected a multi-domain data set")
    scores = domain_report(model, data, images, args.test_domain, args.data_dir, device)
    return report_metrics(scores)


def dataset_info(args: argparse.Namespace, data: TrainingData) -> dict[str, Any]:
    """What the checkpoints record of the data set: its name, held-out domain and shape."""
    return {
        "name": args.dataset,
        "test_domain": args.test_domain,
        "classes": data.num_classes,
        "train_images": len(data.train),
        "test_images": len(data.val),
    }


def diverged_message(result: FinalResult, recipe: Recipe, out: Path) -> str:
    """The one-line error of a training whose loss turned NaN/inf."""
    loss = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in result.diverged_loss.items())
    done = result.history[-1]["epoch"] if result.history else None
    kept = f"and the checkpoint of epoch {done}" if done else "(no epoch finished)"
    return (
        f"training diverged at epoch {result.diverged_epoch} ({loss}): try a lower --lr (now "
        f"{recipe.lr_per_256:g} per 256 images) with another --out; {out} keeps metrics.json "
        f"{kept}"
    )


def network_for(
    args: argparse.Namespace, arch: MBConvArch | None, cell: Cell | None, data: TrainingData
) -> tuple[MBConvArch | None, torch.nn.Module, Counts, str, dict[str, Any]]:
    """The network to train, sized for ``data`` (and ``--width``): an mbconv ``arch`` (the
    file is the network) or ``cell`` in ``--macro``; with the architecture as sized, the
    network's counts, its name in the metrics, and what it is for the checkpoints."""
    settings: dict[str, Any] = {
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "num_classes": data.num_classes,
    }
    if args.width is not None:
        settings["width"] = args.width
    if arch is not None:
        arch = arch.with_settings(**settings)
        network = {"architecture": arch.to_dict()}
        return arch, build_arch(arch), count_arch(arch), f"mbconv-{arch.width:g}", network
    assert cell is not None
    spec = get_macro(args.macro or DEFAULT_MACRO, **settings)
    network = {"cell": cell.to_dict(), "macro": {"name": spec.name, **settings}}
    return None, build_network(cell, spec), count(cell, spec), spec.name, network


def cnn_to_train(
    path: Path, activation: str | None, image_size: int | None = None
) -> tuple[MBConvArch | None, Cell | None]:
    """The mbconv architecture (at ``image_size``, if given: ``--image-size``) or the CNN cell
    (with ``activation`` if given) that the file at ``path`` holds; an rnn cell is a
    :class:`ConfigError` that says how to train it."""
    if is_arch_file(path):
        return MBConvArch.load(path, image_size=image_size), None
    cell = Cell.load(path)
    if cell.kind == "rnn":
        raise ConfigError(f"{path} is an rnn cell: train it with --task rnn (and --data DIR)")
    if activation is not None:
        cell = dataclasses.replace(cell, activation=activation)
    return None, cell


def set_up_process(ctx: DistContext) -> None:
    """Set up this training process: only rank 0 reports (the other ranks' warnings are
    rank 0's too), and on a CPU denormal floats flush to zero (they can slow steps ~20x)."""
    if not ctx.is_main:
        for name in ("", "autoshrink"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if ctx.device.type == "cpu":
        torch.set_flush_denormal(True)


def run_cnn(args: argparse.Namespace) -> int:
    """Train a CNN cell's or mbconv file's network and report test accuracy (rank 0); the
    exit status (0 on the other ranks, which report nothing)."""
    check_test_domain(args.dataset, args.test_domain)
    arch, cell = cnn_to_train(args.cell, args.activation, args.image_size)
    if arch is not None:  # the file is the network: these would be ignored
        refuse_for_arch(args, "macro", "activation")
    recipe = recipe_from_args(args)
    with distributed(args.device) as ctx:
        set_up_process(ctx)
        data = load_training_data(args, recipe)
        torch.manual_seed(args.seed)  # the same initial weights on every process
        arch, model, c, name, network = network_for(args, arch, cell, data)

        created = not args.out.exists()
        trained = arch if arch is not None else cell
        assert trained is not None
        # once every check passed: a failed start changes nothing
        start = partial(write_inputs, args.out, trained, recipe=recipe)

        try:
            result = train_final(
                model,
                data,
                recipe,
                ctx=ctx,
                seed=args.seed,
                out=args.out,
                resume=args.resume,
                workers=args.workers,
                run_info={"task": "cnn", "dataset": dataset_info(args, data), **network},
                on_start=start,
            )
        except (DataError, OSError):  # an image found unreadable in the first epoch (read
            # lazily), a full disk: nothing kept a trained epoch, the folder stays free
            with contextlib.suppress(OSError):  # a read-only disk: its error is the one said
                forget_start(args.out, resumed=args.resume, created=created)
            raise
    if not ctx.is_main:  # rank 0 reports
        return 0
    summary = partial(summary_text, args.out)
    ended = ended_metrics(args.out, args.resume, result.resumed_from, recipe.epochs, summary)
    if ended is not None:
        return print_summary(args.out, ended, args.json)
    evaluated = result.evaluated
    assert evaluated is not None  # train_final always returns the weights it scored
    by_domain: dict[str, Any] = {}
    if result.diverged_epoch is None:  # diverged weights are NaN: neither kept nor scored
        metadata = weights_metadata(network, data.mean, data.std)
        write_weights(args.out, evaluated.state_dict(), metadata)
        by_domain = domain_metrics(args, evaluated, data, ctx.device)
    metrics = {
        "dataset": args.dataset,
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        **by_domain,
        "params": c.params,
        "macs": c.macs,
        "macro": name,
        "normalisation": {"mean": list(data.mean), "std": list(data.std)},
        "recipe": recipe.name,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "processes": ctx.world_size,
        "weights": "ema" if recipe.ema_decay is not None else "model",
        "resumed_from_epoch": result.resumed_from,
        "diverged": result.diverged_epoch is not None,
        "diverged_epoch": result.diverged_epoch,
        "history": result.history,
    }
    if result.diverged_epoch is not None:
        metrics.update(weights=None, diverged_loss=result.diverged_loss)
    write_metrics(args.out, metrics)
    if result.diverged_epoch is not None:
        raise TrainingError(diverged_message(result, recipe, args.out))
    return print_summary(args.out, metrics, args.json)


def finished(world: int, status: int) -> int:
    """``status``; a process of a multi-process run (``world`` processes) ends here with it
    instead, skipping the interpreter's teardown, which gloo's threads can abort
    (:func:`~autoshrink.training.distributed.end_process`)."""
    if world > 1:
        end_process(status)
    return status


def print_summary(out: Path, metrics: dict[str, Any], as_json: bool = False) -> int:
    """What ``train`` prints at its end, read from the run's ``metrics`` (``as_json``: the
    ``metrics.json`` in ``out``); 0."""
    if as_json:
        return print_metrics(out)
    print(summary_text(out, metrics))
    return 0


def summary_text(out: Path, metrics: dict[str, Any]) -> str:
    """The lines :func:`print_summary` prints of ``metrics`` (a ``KeyError``, ``TypeError``,
    ``ValueError`` or ``AttributeError`` where they are damaged)."""
    lines = []
    domains = metrics.get("domains", {})
    for name, d in domains.items():
        kind = "held-out test domain" if d["held_out"] else "training domain, test part"
        lines.append(f"domain {name}: accuracy {d['accuracy']:.4f} ({d['images']} images, {kind})")
    on = f"the training domains of {metrics['dataset']}" if domains else metrics["dataset"]
    headline = f"test accuracy {metrics['test_accuracy']:.4f} on {on}"
    if "test_domain_accuracy" in metrics:  # the figure a held-out domain is there for
        held = f"held-out domain {metrics['test_domain']}"
        headline = f"{held}: accuracy {metrics['test_domain_accuracy']:.4f}; {headline}"
    lines.append(
        f"{headline} ({metrics['params']:,} params, {metrics['macs']:,} MACs); weights in "
        f"{out / WEIGHTS}"
    )
    return "\n".join(lines)
