"""The command line: a real search on digits, show, count, train, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

SHRINKCNN = str(resources.files("autoshrink").joinpath("cells/shrinkcnn.json"))
SHRINKRNN = str(resources.files("autoshrink").joinpath("cells/shrinkrnn.json"))
TINY = [
    "--preset", "demo", "--nodes", "4", "--k", "2", "--keep-fraction", "0.5",
    "--per-class", "20", "--val-size", "60", "--epochs", "1", "--width", "0.25",
    "--executor", "inprocess", "--no-progress",
]  # fmt: skip


def test_search_on_digits_prints_and_writes_the_best_cell(cli, tmp_path):
    code, out, err = cli("search", *TINY, "--out", tmp_path / "run")
    assert code == 0, err
    assert "best score" in out and "complete cell score" in out
    run = tmp_path / "run"
    for name in ("config.json", "journal.jsonl", "result.json", "best_cell.json"):
        assert (run / name).is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["nodes"] == 4 and cfg["training"]["epochs"] == 1
    assert list(run.glob("best_cell.png")) or list(run.glob("best_cell.txt"))
    best = json.loads((run / "result.json").read_text())["best"]
    m = best["metrics"]
    assert (
        f"best score {best['score']:.4f} (accuracy {m['accuracy']:.4f}, {m['macs']:,.0f} MACs, "
        f"{best['edges']} edge{'s' if best['edges'] != 1 else ''}, step {best['step']})"
    ) in out
    # result.json names the network the metrics were counted in: count reproduces them
    net = json.loads((run / "result.json").read_text())["network"]
    assert net == {"macro": "cifar-proxy", "width": 0.25, "image_size": 8, "in_channels": 1,
                   "num_classes": 10}  # fmt: skip
    flags = [f"--{k.replace('_', '-')}" if k != "macro" else "--macro" for k in net]
    args = [str(x) for pair in zip(flags, net.values(), strict=True) for x in pair]
    code, counted, err = cli("count", run / "best_cell.json", *args, "--json")
    assert code == 0, err
    assert (json.loads(counted)["macs"], json.loads(counted)["params"]) == (m["macs"], m["params"])


def test_the_summary_shows_the_cost_the_score_read(cli, tmp_path):
    code, out, err = cli("search", *TINY, "--cost", "params", "--out", tmp_path / "run")
    assert code == 0, err
    best = json.loads((tmp_path / "run" / "result.json").read_text())["best"]
    m = best["metrics"]
    assert (
        f"(accuracy {m['accuracy']:.4f}, {m['params']:,.0f} params, {m['macs']:,.0f} MACs, " in out
    )


def test_search_with_the_local_process_pool(cli, tmp_path):
    args = [a if a != "inprocess" else "pool" for a in TINY]
    code, out, err = cli("search", *args, "--workers", "2", "--out", tmp_path / "run")
    assert code == 0, err


def test_show_and_count(cli, tmp_path):
    code, out, _ = cli("show", SHRINKCNN, "--picture", tmp_path / "c.svg")
    assert code == 0 and "output = concat(3, 4) + cell input" in out
    code, out, _ = cli("count", SHRINKCNN, "--macro", "cifar-proxy")
    assert code == 0 and "params" in out
    code, out, _ = cli("count", SHRINKCNN, "--macro", "cifar-proxy", "--width", "0.25",
                       "--image-size", "8")  # fmt: skip
    assert code == 0 and out.endswith("(0.004M), 63,808 MACs (0.064M)\n"), out  # was "(0.1M)"


def test_show_counts_one_edge_in_the_singular(cli, tmp_path) -> None:
    from autoshrink.graph import Cell

    one = tmp_path / "one.json"
    one.write_text(json.dumps(Cell("cnn", ("input", "conv1x1"), ((0, 1),)).to_dict()))
    code, out, _ = cli("show", one, "--picture", tmp_path / "one.svg")
    assert code == 0 and ", 1 edge, live nodes" in out, out  # "1 edges" before


def test_count_picks_the_published_macro_of_the_cells_kind_and_prints_exact_figures(cli):
    code, out, _ = cli("count", SHRINKCNN)  # the published counts, to the unit
    assert code == 0 and out == (
        "shrinkcnn-imagenet: 3,600,981 params (3.601M), 383,677,672 MACs (383.7M)\n"
    )
    rnn = str(resources.files("autoshrink").joinpath("cells/shrinkrnn.json"))
    code, out, _ = cli("count", rnn)  # an rnn cell: the ShrinkRNN language model
    assert code == 0 and out.startswith("shrinkrnn-ptb: 23,000,700 params")


def test_train_reports_test_accuracy_and_saves_weights(cli, tmp_path):
    code, out, err = cli(
        "train",
        SHRINKCNN,
        "--dataset",
        "digits",
        "--epochs",
        "5",
        "--width",
        "0.5",
        "--no-flip",
        "--out",
        tmp_path / "t",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5
    from autoshrink.data.images import channel_stats, load_images

    mean, std = channel_stats(load_images("digits").train_x)  # a deployed network's inputs
    assert metrics["normalisation"] == {"mean": [float(mean[0])], "std": [float(std[0])]}
    assert (tmp_path / "t" / "weights.safetensors").stat().st_size > 0
    # count reproduces the trained network's figures: digits are 8x8 grayscale
    size = ["--macro", "cifar-proxy", "--width", "0.5", "--image-size", "8", "--json"]
    code, out, _ = cli("count", SHRINKCNN, *size, "--in-channels", "1")
    counted = json.loads(out)
    assert code == 0 and (counted["params"], counted["macs"]) == (
        metrics["params"],
        metrics["macs"],
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["show", "/nonexistent.json"], "no such cell file"),
        (["count", "{bad}", "--macro", "cifar-proxy"], "not valid JSON"),
        (["count", "{op}", "--macro", "cifar-proxy"], "unknown cnn op 'conv7x7'"),
        (["count", "{rnn}", "--macro", "shrinkrnn-ptb", "--width", "2"], "--width: settings of"),
        (["search", "--resume", "/nonexistent-run"], "nothing to resume"),
        (["search", "--out", "/nonexistent-run", "--resume"], "/nonexistent-run: not a run"),
        (["search", "--resume"], "--resume needs the run: --resume RUN_DIR, or --out RUN_DIR"),
        (["search", "--resume", "{tmp}/a", "--out", "{tmp}/b"], "drop --out"),
        (["report", "{tmp}/run", "{tmp}/run2", "--out", "{tmp}/run"], "report would write over"),
        (["search", "--retry-failed", "--out", "{tmp}/r"], "--retry-failed and --repair go with"),
        (["search", "--preset", "demo", "--k", "0", "--out", "{tmp}/x"], "k must be >= 1"),
        (
            ["search", "--preset", "demo", "--nodes", "1000", "--out", "{tmp}/n"],
            "nodes must be in 2..64, got 1000 (a complete cell of 499,500 edges)",
        ),
        (["search", "--preset", "demo", "--nodes", "1", "--out", "{tmp}/m"], "got 1"),
        (
            ["search", "--cost", "edge_cost", "--out", "{tmp}/c"],
            "rnn cost; expected macs, params, latency_ms or table_latency_ms",
        ),
        (
            [
                "search",
                "--task",
                "rnn",
                "--data",
                "{tmp}",
                "--max-latency",
                "5",
                "--out",
                "{tmp}/l",
            ],
            "latency costs and --max-latency are for cnn cells, not --task rnn",
        ),
        (
            ["search", "--task", "rnn", "--data", "{tmp}", "--download", "--out", "{tmp}/d"],
            "--download is for the image data sets of --task cnn",
        ),
        (["show", "{deep}"], "JSON nested too deep"),
        (["train", SHRINKRNN, "--out", "{tmp}/t"], "is an rnn cell: train it with --task rnn"),
        (["search", "--preset", "demo", "--out", "/proc/autoshrink-run"], "cannot write in /proc"),
        (
            ["search", "--dataset", "cifar10", "--data-dir", "/nonexistent", "--out", "{tmp}/y"],
            "/nonexistent",
        ),
        (
            ["search", "--dataset", "fashion-mnist", "--data-dir", "{tmp}", "--out", "{tmp}/z"],
            "{tmp}",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(cli, tmp_path, args, needle):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "op.json").write_text(
        json.dumps(
            {
                "format": "autoshrink.cell/1",
                "kind": "cnn",
                "ops": ["input", "conv7x7"],
                "edges": [[0, 1]],
            }
        )
    )
    (tmp_path / "deep.json").write_text("[" * 100_000)
    for run in ("run", "run2"):  # search run folders: compared, one of them as --out
        (tmp_path / run).mkdir()
        (tmp_path / run / "journal.jsonl").write_text("")
        (tmp_path / run / "config.json").write_text("{}")
    subst = {name: str(tmp_path / f"{name[1:-1]}.json") for name in ("{bad}", "{op}", "{deep}")}
    subst["{rnn}"] = SHRINKCNN.replace("shrinkcnn.json", "shrinkrnn.json")
    argv = [subst.get(a, a.replace("{tmp}", str(tmp_path))) for a in args]
    code, out, err = cli(*argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoshrink: error:")
    assert needle.replace("{tmp}", str(tmp_path)) in lines[0]


def test_resume_refuses_new_settings(cli, tmp_path):
    code, _, err = cli("search", "--resume", tmp_path, "--k", "3")
    assert code == 2 and "config.json" in err
    code, _, err = cli("search", "--resume", tmp_path, "--epochs", "3", "--data", tmp_path,
                       "--lambda", "0.2", "--max-macs", "1e6")  # fmt: skip
    assert code == 2 and err.rstrip().endswith("drop --epochs --lambda --max-macs"), err
    code, _, err = cli("search", "--resume", tmp_path, "--preset", "paper")
    assert code == 2 and err.rstrip().endswith("drop --preset"), err
    from autoshrink.presets import preset

    preset("demo").save(tmp_path / "config.json")  # a digits run: --download is not for it
    code, _, err = cli("search", "--resume", tmp_path, "--download")  # it was ignored
    assert code == 2 and "--download is only available for cifar10, not for 'digits'" in err
    code, _, err = cli("search", "--download", "--out", tmp_path / "new")
    assert code == 2 and "not for 'digits'" in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("run", "now", "given", "threads"),
    [
        (("pool", None), "inprocess", None, 1),  # a pool run resumed in-process: its 1 thread
        (("ray", None), "batched", None, 1),
        ((None, None), "inprocess", None, 1),  # None on the CPU: the pool
        (("pool", None), "ray", None, None),  # one thread each either way
        (("inprocess", None), "pool", None, None),
        (("pool", 2), "inprocess", None, 2),  # the run's own count
        (("pool", None), "inprocess", 2, 2),  # --threads wins
    ],
)
def test_a_resume_on_another_executor_keeps_the_thread_count(run, now, given, threads) -> None:
    # a pool run resumed in-process trained its remaining candidates on every core, so it
    # ended with another best cell than the uninterrupted run
    from autoshrink.cli.search import resume_threads
    from autoshrink.config import ExecutionSettings
    from autoshrink.presets import preset

    executor, run_threads = run
    saved = preset("demo", threads=run_threads, execution=ExecutionSettings(executor=executor))
    assert resume_threads(saved, ExecutionSettings(executor=now), given) == threads


@pytest.mark.parametrize(("run", "now"), [("inprocess", "pool"), ("batched", "ray")])
def test_a_resume_on_one_thread_per_candidate_of_a_default_threads_run_is_a_warning(
    run, now, caplog
) -> None:
    # it changed the rounding of the candidates left without a word
    from autoshrink.cli.search import resume_threads
    from autoshrink.config import ExecutionSettings
    from autoshrink.presets import preset

    saved = preset("demo", execution=ExecutionSettings(executor=run))
    with caplog.at_level(logging.WARNING, logger="autoshrink.cli.search"):
        assert resume_threads(saved, ExecutionSettings(executor=now), None) is None
    assert f"torch's default threads ({run}); {now} trains the rest on one thread" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autoshrink.cli.search"):
        resume_threads(saved, ExecutionSettings(executor=run), None)  # the same executor
        resume_threads(saved, ExecutionSettings(executor=now), 2)  # --threads given
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("flags", "threads"),
    [(["--executor", "inprocess"], 1), (["--threads", "2"], 2), (["--executor", "ray"], None)],
)
def test_a_resume_runs_on_the_thread_count_resume_threads_gives(tmp_path, flags, threads):
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import flag_settings, resumed_run
    from autoshrink.config import ExecutionSettings
    from autoshrink.presets import preset

    preset("demo", execution=ExecutionSettings(executor="pool")).save(tmp_path / "config.json")
    args = build_parser("search").parse_args(["search", "--resume", str(tmp_path), *flags])
    _, config, _, _ = resumed_run(args, flag_settings(args)[1])
    assert config is not None and config.threads == threads  # None: the run's own count


def test_a_resume_reads_a_moved_data_folder_where_data_says(tmp_path) -> None:
    """The fingerprint leaves data_dir out so that a data folder may move, but --data was
    refused with --resume: a moved folder could only be named by editing config.json."""
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import flag_settings, resumed_run
    from autoshrink.errors import DataError
    from autoshrink.presets import preset

    run = tmp_path / "run"
    run.mkdir()
    preset("demo", dataset="fashion-mnist", data_dir="/gone").save(run / "config.json")
    parse = build_parser("search").parse_args
    args = parse(["search", "--resume", str(run), "--data", str(tmp_path / "fm")])
    _, config, _, _ = resumed_run(args, flag_settings(args)[1])
    assert config is not None and config.data_dir == str(tmp_path / "fm")
    assert config.fingerprint() == preset("demo", dataset="fashion-mnist").fingerprint()
    assert '"/gone"' in (run / "config.json").read_text()  # the run's own, as it began
    args = parse(["search", "--resume", str(run)])
    with pytest.raises(
        DataError, match=r"^/gone: no such folder \(the data_dir of .*; if the data "
    ):
        resumed_run(args, flag_settings(args)[1])
    preset("demo").save(run / "config.json")  # digits reads no folder
    args = parse(["search", "--resume", str(run), "--data", str(tmp_path)])
    with pytest.raises(DataError, match="drop --data-dir or choose another --dataset"):
        resumed_run(args, flag_settings(args)[1])


@pytest.mark.parametrize("folder", ["here", "gone"])
def test_a_resume_names_the_data_dir_of_a_digits_config(tmp_path, folder) -> None:
    """A hand-edited config.json of a digits run with a data_dir was refused naming
    ``--data-dir``, a flag not typed (or, for a folder that is not there, told to resume with
    ``--data``, which digits refuses): the config's data_dir is the culprit."""
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import flag_settings, resumed_run
    from autoshrink.errors import DataError
    from autoshrink.presets import preset

    data = tmp_path / folder
    if folder == "here":
        data.mkdir()
    preset("demo", dataset="digits").save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "data_dir": str(data)}))
    args = build_parser("search").parse_args(["search", "--resume", str(tmp_path)])
    with pytest.raises(DataError) as refused:
        resumed_run(args, flag_settings(args)[1])
    assert str(refused.value) == (
        f"{tmp_path / 'config.json'}: data_dir {data}: 'digits' is built from scikit-learn's "
        "embedded digits and reads no folder; set data_dir to null"
    )


def test_a_new_search_runs_on_the_threads_given() -> None:
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import flag_settings, new_run

    for flags, threads in (([], None), (["--threads", "3"], 3)):  # None: the executor's own
        args = build_parser("search").parse_args(["search", "--out", "r", *flags])
        _, config, _, _ = new_run(args, *flag_settings(args))
        assert config is not None and config.threads == threads


def test_every_search_option_either_defines_the_run_or_is_known_not_to() -> None:
    """A new option of ``autoshrink search`` must be sorted here: into ``RUN_SETTINGS``
    (``--resume`` refuses it and takes the run's), or below, with how it runs a search."""
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import RUN_SETTINGS

    parser = build_parser("search")
    search = next(a for a in parser._actions if a.dest == "command").choices["search"]
    options = {a.dest for a in search._actions} - {"help"}
    not_settings = {
        "out", "resume", "retry_failed", "repair",  # which run, and what to redo
        "download",  # may fetch the data set: where it comes from, not what it is
        "executor", "workers", "ray_address", "precision", "cuda_graph", "depthwise",  # saved
        "candidate_timeout",  # saved with the executor's options, may change on resume
        "threads",  # per session, as the executor (resume_threads)
        "no_progress", "report", "json", "verbose",  # what is shown
    }  # fmt: skip
    assert set(RUN_SETTINGS) <= options
    assert options - set(RUN_SETTINGS) == not_settings


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["count", SHRINKCNN, "--macro", "shrinkcnn-imagenet"],
        ["show", SHRINKCNN, "--picture", "{tmp}/cell.svg"],
        ["bench", "nb201", "--help"],
        ["report", "--help"],
    ],
)
def test_commands_that_need_no_torch_do_not_import_it(args, tmp_path):
    # A run loads only its sub-command's module: torch's import alone takes seconds.
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_imports_neither(args, ("torch", "matplotlib"))


def assert_imports_neither(args: list[str], modules: tuple[str, ...]) -> None:
    """Run ``autoshrink ARGS`` in a fresh interpreter; none of ``modules`` may be imported."""
    code = (
        "import sys\n"
        "from autoshrink.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"for name in {modules!r}:\n"
        "    assert name not in sys.modules, f'{name} was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_report_of_a_run_reads_its_config_without_torch(tmp_path):
    """``read_run`` checks config.json with SearchConfig, whose module imported torch through
    the proxy trainings' and the latency's settings: half the report's time."""
    from autoshrink.search import run_search
    from test_search import ToyEvaluator, toy_config

    run = tmp_path / "run"
    run_search(run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    assert_imports_neither(["report", str(run)], ("torch",))
    assert (run / "report" / "index.html").is_file()


def test_every_sub_command_is_listed_and_parses_alone():
    from autoshrink.cli import SUBCOMMANDS, build_parser, chosen_command

    assert chosen_command(["-v", "show", "x.json"]) == "show" and chosen_command(["-v"]) == ""
    for name in SUBCOMMANDS:
        parser = build_parser(name)
        with pytest.raises(SystemExit) as stop:
            parser.parse_args([name, "--help"])
        assert stop.value.code == 0


@pytest.mark.parametrize(
    "name, shown",
    [("search", "--preset {demo,paper} demo (the default)"), ("train", "(default: 0)")],
)  # a zero is a default, not a missing one
def test_help_shows_only_defaults_that_say_something(capsys, name, shown):
    from autoshrink.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser(name).parse_args([name, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default: default" not in out  # help that names its default is left alone
    assert shown in out


def test_a_default_that_help_names_is_the_options_default() -> None:
    """Where an option's help says ``(default X)`` in words of its own and the option has a
    default of its own (not ``None``: a preset's value), ``X`` is that default."""
    import argparse
    import re

    from autoshrink.cli import build_parser

    def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += [a for p in action.choices.values() for a in options(p)]
            else:
                found.append(action)
        return found

    checked = 0
    for action in options(build_parser()):
        said = re.search(r"\(default:? ([^);]*)\)", action.help or "")
        if said is None or action.default in (None, argparse.SUPPRESS):
            continue
        name, named = action.option_strings[0], said.group(1)
        if isinstance(action.default, (int, float)):
            assert float(named) == action.default, name
        else:
            assert named == action.default, name
        checked += 1
    assert checked >= 15  # bench's --runs and --queries, latency's, singlepath's ...


def test_the_default_run_folders_of_cnn_and_rnn_searches_differ() -> None:
    from autoshrink.cli.search import default_out

    assert default_out("cnn", "demo") == Path("runs/demo")
    assert default_out("rnn", "demo") == Path("runs/rnn-demo")  # a CNN demo's folder is not met


def test_show_names_an_architecture_file_for_what_it_is(cli, tmp_path) -> None:
    from autoshrink.singlepath.space import mobilenetv2_arch

    arch = tmp_path / "architecture.json"
    mobilenetv2_arch(1.0).save(arch)
    code, _, err = cli("show", arch)
    assert code == 2 and "a Single-Path architecture (autoshrink.mbconv/1), not a cell" in err


@pytest.mark.parametrize(
    "argv, dest, value, old, new",
    [
        (
            ["bench", "nb201", "--tables", "t", "--weight", "0.3"],
            "weight",
            0.3,
            "--weight",
            "--lambda",
        ),
        (
            ["latency", "c.json", "--table", "t.json"],
            "table",
            Path("t.json"),
            "--table",
            "--latency-table",
        ),
        (
            ["singlepath", "--out", "o", "--table", "t.json"],
            "table",
            Path("t.json"),
            "--table",
            "--latency-table",
        ),
    ],
)
def test_renamed_flags_keep_working_and_name_the_new_one(capsys, argv, dest, value, old, new):
    from autoshrink.cli import build_parser

    parser = build_parser(argv[0])
    assert getattr(parser.parse_args(argv), dest) == value
    assert f"{old} is now {new}" in capsys.readouterr().err
    renamed = [new if word == old else word for word in argv]
    assert getattr(parser.parse_args(renamed), dest) == value
    assert capsys.readouterr().err == ""  # the new name does not warn
    with pytest.raises(SystemExit):
        parser.parse_args([argv[0], "--help"])
    shown = capsys.readouterr().out
    assert new in shown and f"{old} " not in shown  # the old name is hidden from --help


def test_options_a_search_would_not_use_are_refused(cli, tmp_path):
    # each was saved into config.json and ignored
    unused = ["--strategy", "random", "--patience", "3", "--zc-batch", "8", "--oneshot-epochs", "2"]
    code, _, err = cli("search", "--preset", "demo", *unused, "--out", tmp_path / "r")
    assert code == 2 and err.strip() == (
        "autoshrink: error: not used by this search: --patience needs --strategy autoshrink; "
        "--zc-batch needs --screening zero-cost; --oneshot-epochs needs --evaluator oneshot"
    )
    code, _, err = cli("search", "--preset", "demo", "--population-size", "4",
                       "--executor", "inprocess", "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "--population-size needs --strategy rea" in err
    code, _, err = cli("search", "--preset", "demo", "--zc-proxy", "snip", "--out", tmp_path / "r")
    assert code == 2 and "--zc-proxy needs --screening zero-cost" in err  # it was saved, ignored
    code, _, err = cli("search", "--preset", "demo", "--workers", "2", "--executor", "inprocess",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "workers (--workers) is for executor 'pool' (--executor pool); 'in" in err
    # a latency cost at --lambda 0: saved with a table path and latency settings, never measured
    code, _, err = cli("search", "--preset", "demo", "--cost", "table_latency_ms", "--lambda", "0",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "--cost table_latency_ms with --lambda 0: the score reads no cost" in err
    assert not (tmp_path / "r").exists()
    code, _, err = cli("search", "--preset", "demo", "--cost", "params", "--lambda", "0",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "--cost params with --lambda 0: the score reads no cost" in err
    # --max-latency bounds the table's latency here, not the measured one the cost names
    code, _, err = cli("search", "--preset", "demo", "--cost", "latency_ms", "--lambda", "0",
                       "--max-latency", "3", "--latency-table", tmp_path / "t.json",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "--cost latency_ms with --lambda 0: the score reads no cost" in err


def test_latency_data_and_kernel_options_a_search_would_not_use_are_refused(cli, tmp_path):
    # how to measure latency without a latency cost; a folder for the embedded digits; CUDA
    # kernels on the CPU: each was saved into config.json and ignored
    out = tmp_path / "r"
    code, _, err = cli("search", "--preset", "demo", "--latency-backend", "torch",
                       "--latency-table", tmp_path / "t.json", "--out", out)  # fmt: skip
    assert code == 2 and err.strip() == (
        "autoshrink: error: not used by this search: --latency-table needs --cost "
        "table_latency_ms or --max-latency; --latency-backend needs a latency --cost or "
        "--max-latency"
    )
    # a measured latency cost reads no table: the table was saved and never made
    code, _, err = cli("search", "--preset", "demo", "--cost", "latency_ms",
                       "--latency-table", tmp_path / "t.json", "--out", out)  # fmt: skip
    assert code == 2 and err.strip() == (
        "autoshrink: error: not used by this search: --latency-table needs --cost "
        "table_latency_ms or --max-latency"
    )
    code, _, err = cli("search", "--preset", "demo", "--data-dir", tmp_path, "--out", out)
    assert code == 2 and err.strip() == (
        f"autoshrink: error: --data-dir {tmp_path}: 'digits' is built from scikit-learn's "
        "embedded digits and reads no folder; drop --data-dir or choose another --dataset"
    )
    code, _, err = cli("search", "--preset", "demo", "--executor", "batched",
                       "--depthwise", "triton", "--out", out)  # fmt: skip
    assert code == 2 and err.strip() == (
        "autoshrink: error: depthwise (--depthwise) 'triton' chooses CUDA kernels; device "
        "(--device) is 'cpu'"
    )
    cell = resources.files("autoshrink") / "cells" / "shrinkcnn.json"
    code, _, err = cli("train", cell, "--dataset", "rotated-digits", "--data-dir", tmp_path,
                       "--out", out)  # fmt: skip
    assert code == 2 and "'rotated-digits' is built from scikit-learn's embedded" in err
    code, _, err = cli("singlepath", "--data-dir", tmp_path, "--out", out)
    assert code == 2 and "'digits' is built from scikit-learn's embedded" in err
    assert not out.exists()


def test_log_lines_are_written_above_the_bars_only_where_they_go_to_a_console(
    monkeypatch, tmp_path
) -> None:
    import logging

    from autoshrink.cli import lines_above_bars

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(root, "handlers", [console])
    with lines_above_bars():  # tqdm.write's handler in its place
        assert [type(h).__name__ for h in root.handlers] == ["_TqdmLoggingHandler"]
    assert root.handlers == [console]
    own = logging.FileHandler(tmp_path / "host.log")  # a host program's own handler
    monkeypatch.setattr(root, "handlers", [own])
    with lines_above_bars():
        assert root.handlers == [own]
    own.close()


@pytest.mark.parametrize(("status", "code"), [(1, 1), (0, 0), (None, 0)])
def test_the_exit_status_is_the_one_the_command_returns(cli, monkeypatch, status, code) -> None:
    # 1: a search that stopped early (cli.search_summary.stopped_early)
    from autoshrink.cli import show

    monkeypatch.setattr(show, "run", lambda args: status)
    assert cli("show", "cell.json")[0] == code


@pytest.mark.parametrize(
    ("kind", "highest"),
    [("count", 2**16), ("images", 2**31 - 1), ("seed", 2**63 - 1), ("classes", 2**24)],
)
def test_number_options_take_every_value_up_to_their_bound(kind, highest) -> None:
    # counts at most 65,536; images: int32 indices; seeds: 64-bit for torch and NumPy; classes:
    # ImageNet-21k's 21,841 and beyond
    import argparse

    from autoshrink.cli import count_number, images_number, int_at_most, seed_number
    from autoshrink.ranges import MAX_CLASSES

    parse = {
        "count": count_number,
        "images": images_number,
        "seed": seed_number,
        "classes": int_at_most(MAX_CLASSES),
    }[kind]
    assert parse(str(highest)) == highest and parse("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match=f"must be at most {highest:,}, got"):
        parse(str(highest + 1))
    if kind == "seed":
        with pytest.raises(argparse.ArgumentTypeError, match="must be >= 0, got -1"):
            parse("-1")


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["search", "--objective", "latency"],
            "autoshrink search: error: argument --objective: invalid choice: 'latency' "
            "(choose from 'erm', 'ood') (see: autoshrink search --help)",
        ),
        (
            ["train", "cell.json", "--epochs", "x"],
            "autoshrink train: error: argument --epochs: expected an integer, got 'x' "
            "(see: autoshrink train --help)",
        ),
        ([], "autoshrink: error: the following arguments are required: COMMAND"),
        (
            ["export", "cell.json"],
            "autoshrink export: error: the following arguments are required: --out",
        ),
        (  # an unset shell variable: it was the current folder
            ["search", "--out", ""],
            "autoshrink search: error: argument --out: expected a folder, got an empty path",
        ),
        (  # the same as the run to resume: it resumed the run in the current folder
            ["search", "--resume", ""],
            "autoshrink search: error: argument --resume: expected a folder, got an empty path",
        ),
        (  # --data "$PTB" with PTB unset: it searched the text in the current folder
            ["search", "--task", "rnn", "--data", ""],
            "autoshrink search: error: argument --data-dir/--data: expected a folder or file, "
            "got an empty path",
        ),
        (  # ... and trained on it
            ["train", "c.json", "--task", "rnn", "--data", " "],
            "autoshrink train: error: argument --data-dir/--data: expected a folder or file, "
            "got an empty path",
        ),
        (  # a slip of the keyboard: an overflow deep in torch before (a traceback)
            ["train", "c.json", "--task", "rnn", "--nhid", "99999999999999999999"],
            "autoshrink train: error: argument --nhid: must be at most 65,536, got "
            "99999999999999999999",
        ),
        (  # ran, and saved 20 digits of workers into config.json
            ["search", "--workers", "99999999999999999999"],
            "autoshrink search: error: argument --workers: must be at most 65,536",
        ),
        (  # trained until killed
            ["singlepath", "--out", "o", "--epochs", "99999999999999999999"],
            "autoshrink singlepath: error: argument --epochs: must be at most 65,536",
        ),
        (  # as every other command's --seed; the config refused it after parsing, in its words
            ["search", "--seed", "-1"],
            "autoshrink search: error: argument --seed: must be >= 0, got -1",
        ),
        (
            ["search", "--bogus", "1"],
            "autoshrink search: error: unrecognized arguments: --bogus 1 "
            "(see: autoshrink search --help)",
        ),
    ],
)
def test_usage_errors_are_one_line_without_the_usage_block(capsys, argv, line):
    from autoshrink.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line) and "usage:" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--device", "auto"],
        ["search", "--latency-device", "auto"],
        ["latency", "c.json", "--device", "auto"],
        ["singlepath", "--out", "o", "--device", "auto"],
    ],
)
def test_device_auto_is_what_it_resolves_to_here_in_every_command(argv) -> None:
    from autoshrink.cli import build_parser
    from autoshrink.devices import resolve_device

    args = build_parser(argv[0]).parse_args(argv)  # train took auto; the others refused it
    dest = argv[-2].lstrip("-").replace("-", "_")
    # cpu here, cuda on a GPU (cuda:0 was refused by --executor ray)
    assert getattr(args, dest) == resolve_device("auto").type


def test_verbose_is_taken_after_the_command_too(cli) -> None:
    """`autoshrink count CELL -v` was refused: -v was the top-level parser's only."""
    for flag in ("-v", "--verbose"):
        code, out, err = cli("count", SHRINKCNN, flag, "--json")
        assert code == 0 and json.loads(out)["params"] > 0, err


def test_verbose_debugs_the_package_not_its_libraries() -> None:
    """-v set the root logger to DEBUG: a report's 2,200 lines were matplotlib's font search."""
    code = (
        "import logging, sys\n"
        "from autoshrink.cli import main\n"
        "assert main(['-v', 'count', sys.argv[1]]) == 0\n"
        "print(logging.getLogger('autoshrink.search').isEnabledFor(logging.DEBUG),"
        " logging.getLogger('PIL.PngImagePlugin').isEnabledFor(logging.INFO))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, SHRINKCNN], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "True False"


def test_a_search_logged_to_a_file_has_no_progress_bars(cli, tmp_path) -> None:
    """With stderr not a terminal the bars wrote a line per update, with carriage returns and
    cursor moves, into the log."""
    code, out, err = cli(
        "search", "--preset", "demo", "--nodes", "3", "--k", "2", "--epochs", "1",
        "--executor", "inprocess", "--threads", "1", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0 and "best score" in out
    assert "\r" not in err and "\x1b[" not in err and "steps" not in err


@pytest.mark.parametrize("executor", ["inprocess", "batched"])
def test_a_candidate_timeout_is_refused_by_an_executor_that_cannot_stop_a_candidate(
    cli, tmp_path, executor
):
    # it would be saved and ignored: a hang would block the search all the same
    args = ["--executor", executor, "--candidate-timeout", "60", "--out", tmp_path / "r"]
    code, _, err = cli("search", "--preset", "demo", *args)
    assert code == 2 and err == (
        "autoshrink: error: candidate_timeout (--candidate-timeout) needs executor 'pool' or "
        f"'ray' (--executor), which kill a candidate's worker; '{executor}' trains in this "
        "process and cannot stop a candidate\n"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("bad", ["0", "-5", "nan", "inf"])
def test_a_candidate_timeout_of_no_finite_time_is_refused_naming_the_flag(cli, tmp_path, bad):
    code, _, err = cli("search", "--candidate-timeout", bad, "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("autoshrink: error: --candidate-timeout must be finite and > 0, got ")
    assert not (tmp_path / "r").exists()


def test_a_candidate_timeout_of_none_is_no_limit_and_a_word_else_is_refused(capsys) -> None:
    from autoshrink.cli import build_parser, main
    from autoshrink.cli.search import flag_settings

    args = build_parser("search").parse_args(["search", "--candidate-timeout", "None"])
    assert flag_settings(args)[1] == {"candidate_timeout": None}
    with pytest.raises(SystemExit) as stop:
        main(["search", "--candidate-timeout", "soon"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "--candidate-timeout: expected seconds or 'none', got 'soon'" in err, err


def test_patience_none_switches_the_early_stop_off(tmp_path) -> None:
    # only a whole number >= 1 was taken: the demo preset's patience of 5 could not be removed
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import flag_settings, new_run

    args = build_parser("search").parse_args(
        ["search", "--preset", "demo", "--patience", "none", "--out", str(tmp_path / "r")]
    )
    assert "patience" in flag_settings(args)[0] and flag_settings(args)[0]["patience"] is None
    config = new_run(args, *flag_settings(args))[1]
    assert config is not None and config.patience is None


def test_a_candidate_timeout_is_an_execution_setting_kept_or_changed_on_resume(tmp_path):
    # like --workers: saved in config.json for --resume, outside the fingerprint
    from autoshrink.cli import build_parser
    from autoshrink.cli.search import flag_settings, new_run, resumed_run
    from autoshrink.config import SearchConfig
    from autoshrink.executors.factory import executor_for
    from autoshrink.executors.pool import LocalPoolExecutor
    from autoshrink.presets import preset

    parse, run = build_parser("search").parse_args, tmp_path / "run"
    args = parse(["search", "--candidate-timeout", "90", "--out", str(run)])
    _, config, device, settings = new_run(args, *flag_settings(args))
    assert config is not None and settings.candidate_timeout == 90.0
    assert config.fingerprint() == preset("demo").fingerprint()
    run.mkdir()
    config.save(run / "config.json")
    assert SearchConfig.load(run / "config.json").execution.candidate_timeout == 90.0
    for flags, limit in [([], 90.0), (["--candidate-timeout", "30"], 30.0),
                         (["--candidate-timeout", "none"], None),  # could not be removed
                         (["--executor", "inprocess"], None)]:  # fmt: skip
        args = parse(["search", "--resume", str(run), *flags])
        assert resumed_run(args, flag_settings(args)[1])[3].candidate_timeout == limit
    pool = executor_for(settings, device)
    assert isinstance(pool, LocalPoolExecutor) and pool.candidate_timeout == 90.0


def test_the_help_examples_train_on_digits_as_the_readme_does():
    """``autoshrink --help`` showed ``train runs/demo/best_cell.json --dataset digits``: the
    cifar recipe's 200 epochs (hours on a busy 2-core box) of horizontally flipped digits, a
    mirrored digit being no digit; README.md's line trains 30 epochs without flips."""
    import shlex

    from autoshrink.cli import EPILOG, build_parser
    from autoshrink.cli.train import recipe_from_args, settle_task_options

    lines = [ln.strip().split("  ")[0] for ln in EPILOG.splitlines() if "autoshrink train" in ln]
    assert lines, EPILOG
    for line in lines:
        args = build_parser("train").parse_args(shlex.split(line)[1:])
        settle_task_options(args)
        recipe = recipe_from_args(args)
        assert args.dataset == "digits" and not recipe.flip and recipe.epochs == 30, line
