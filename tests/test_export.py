"""Export: the ONNX file runs in onnxruntime like PyTorch (any batch), the weights file holds
the network's tensors, and model.py imports nothing from autoshrink and reproduces PyTorch's
outputs from the weights -- for random init, for trained weights, and for every op; and the
same for architectures of the inverted-residual space (MobileNetV2, skips, mixed choices)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from autoshrink.export.bundle import import_file
from autoshrink.export.mbconv import export_arch
from autoshrink.graph import Cell
from autoshrink.nn.cnn import build_network
from autoshrink.singlepath.space import SKIP, MBConvArch, build_arch, mobilenetv2_arch
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import cifar_proxy

ort = pytest.importorskip(  # absent, or installed without its native library
    "onnxruntime",
    reason='the export tests need the onnx extra: pip install -e ".[onnx]"',
    exc_type=ImportError,
)

TINY = dict(width=0.25, image_size=8, num_classes=3)
ODD = Cell("cnn", ("input", "conv3x3", "maxpool3x3", "identity", "sep3x3", "conv1x1"),
           ((0, 1), (0, 2), (1, 3), (2, 3), (0, 4), (3, 5)), "swish")  # fmt: skip
EMPTY = Cell("cnn", ("input", "sep3x3", "conv1x1"), ())  # node 0 is the only leaf


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def reference(cell: Cell, spec, weights: Path) -> torch.nn.Module:
    model = build_network(cell, spec)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def check_folder(out: Path, cell: Cell, spec) -> None:
    """Every artefact in ``out`` against autoshrink's own network with the exported weights."""
    model = reference(cell, spec, out / "model.safetensors")
    x = torch.randn(5, spec.in_channels, spec.image_size, spec.image_size)  # another batch size
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    source = (out / "model.py").read_text()
    assert imported_modules(source) <= {"json", "struct", "pathlib", "torch", "sys"}
    alone = import_file(out / "model.py").load(out / "model.safetensors")
    assert alone.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        np.testing.assert_allclose(alone(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert Cell.load(out / "cell.json") == cell


def test_an_export_stopped_midway_leaves_no_stale_manifest(cli, tmp_path: Path, monkeypatch):
    from autoshrink.export import bundle

    cell_file = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell_file)
    out = tmp_path / "export"
    args = ["export", cell_file, "--macro", "cifar-proxy", "--width", "0.25", "--out", out]
    with monkeypatch.context() as m:  # a kill after model.py: no manifest said "ok" yet
        m.setattr(bundle, "import_file", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        assert cli(*args, "--image-size", "16")[0] == 130  # as Ctrl-C ends a command
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["status"] == "incomplete" and "checks" not in manifest
    code, _, err = cli(*args, "--image-size", "16")  # the folder is still export's own
    assert code == 0, err
    assert json.loads((out / "export.json").read_text())["input"] == ["batch", 3, 16, 16]


def test_an_export_again_over_a_killed_one_removes_its_temporary_files(
    cli, tmp_path: Path, ended_pid: int
) -> None:
    """A SIGKILL while model.onnx was written left its hidden temporary file (as large as the
    model), and the export run again over the unfinished folder kept it for good."""
    from autoshrink.outputs import mark_unfinished

    cell_file = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell_file)
    out = tmp_path / "export"
    out.mkdir()
    mark_unfinished(out / "export.json", "export")  # the killed export's first file
    dead = out / f".model.onnx.{ended_pid}.tmp"
    dead.write_bytes(b"half a model")
    args = ["export", cell_file, "--width", "0.25", "--image-size", "16", "--out", out]
    code, _, err = cli(*args)
    assert code == 0, err
    assert not dead.exists() and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_folder_another_export_holds_is_refused_naming_its_process(cli, tmp_path: Path):
    """Two exports into one --out at once both passed, each writing over the other's files
    (another cell's model.onnx beside this one's model.py, both said 'ok'): the second now
    stops at once, and an export leaves no run.lock behind."""
    import os

    from autoshrink.journal import LOCK, RunLock

    cell_file = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell_file)
    out = tmp_path / "export"
    out.mkdir()
    args = ["export", cell_file, "--macro", "cifar-proxy", "--width", "0.25", "--out", out]
    with RunLock(out):  # an export writing there
        code, stdout, err = cli(*args)
        assert code == 2 and stdout == "" and err.count("\n") == 1, err
        assert f"{out} is in use by process {os.getpid()}" in err
        assert [p.name for p in out.iterdir()] == [LOCK]
    code, _, err = cli(*args)
    assert code == 0, err
    assert not (out / LOCK).exists() and (out / "export.json").is_file()


def test_a_sigterm_stops_an_export_in_one_line_and_lets_its_folder_go(tmp_path: Path) -> None:
    """SIGTERM ended an export without a word (status 143), its run.lock left behind."""
    cell_file = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell_file)
    out = tmp_path / "export"
    script = (  # the signal comes while the network is built: nothing written yet
        "import os, signal, sys\n"
        "from autoshrink.export import bundle\n"
        "from autoshrink.cli import main\n"
        "built = bundle.build_network\n"
        "def build(*a):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return built(*a)\n"
        "bundle.build_network = build\n"
        f"args = ['export', {str(cell_file)!r}, '--width', '0.25', '--out', {str(out)!r}]\n"
        "sys.exit(main(args))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 128 + 15, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "autoshrink: stopped by SIGTERM"
    assert not out.exists()  # made to be held, left empty: gone with the lock


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_a_missing_onnx_package_is_one_line_and_nothing_is_written(
    cli, tmp_path: Path, monkeypatch, missing: str
) -> None:
    """Without onnx, torch's exporter ended the export with a traceback (exit status 1);
    without onnxruntime it was one line, after export.json and model.onnx were written."""
    monkeypatch.setitem(sys.modules, missing, None)  # import now raises ImportError
    out, cell = tmp_path / "export", tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell)
    code, stdout, err = cli("export", cell, "--out", out)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"{missing} is not installed" in err
    assert not out.exists()


@pytest.mark.slow
def test_export_random_init(cli, tmp_path: Path) -> None:
    cell_file = tmp_path / "cell.json"
    cell = published_cell("shrinkcnn")
    cell.save(cell_file)
    out = tmp_path / "export"
    code, stdout, _ = cli(
        "export", cell_file, "--macro", "cifar-proxy", "--out", out, "--width", "0.25",
        "--image-size", "8", "--num-classes", "3", "--json",
    )  # fmt: skip
    assert code == 0
    report = json.loads(stdout)
    assert report["ok"] and report["input"] == [3, 8, 8]
    assert report["onnx_max_abs_diff"] < 1e-4 and report["standalone_max_abs_diff"] < 1e-6
    check_folder(out, cell, cifar_proxy(**TINY))
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["checks"]["ok"] and manifest["macro"]["name"] == "cifar-proxy"
    weights = load_file(str(out / "model.safetensors"))
    bn = weights["stem.1.running_var"]
    assert not torch.allclose(bn, torch.ones_like(bn))  # random statistics exercise BN
    norms = [k.removesuffix(".running_var") for k in weights if k.endswith(".running_var")]
    scales = torch.cat([weights[f"{m}.{t}"] for m in norms for t in ("weight", "running_var")])
    shifts = torch.cat([weights[f"{m}.{t}"] for m in norms for t in ("bias", "running_mean")])
    assert float(scales.min()) >= 0.5 and float(scales.max()) < 1.5  # 0.5 + U[0, 1)
    assert float(shifts.abs().max()) < 0.6 and bool((shifts != shifts.round()).all())  # 0.1 N
    source = (out / "model.py").read_text()
    for k in cell.live_nodes[1:]:  # the docstring draws the cell, node by node
        assert f"node {k} ({cell.ops[k]}) <- {list(cell.predecessors(k))}" in source
    run = subprocess.run(
        [sys.executable, "-I", str(out / "model.py")], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0 and "output (1, 3)" in run.stdout


def test_export_says_each_file_with_its_size_and_the_checks(cli, tmp_path: Path) -> None:
    """Without --json: the network, every file with its size in KiB, the checks' line; the
    same export with --json (seed 0 by default) writes the same weights."""
    cell = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell)
    tiny = ["--width", "0.25", "--image-size", "8", "--num-classes", "3"]
    code, stdout, _ = cli("export", cell, *tiny, "--out", tmp_path / "a")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("cifar-proxy") and lines[0].endswith("input [B, 3, 8, 8]")
    files = sorted(p for p in (tmp_path / "a").iterdir())
    for path in files:
        assert f"  {path}  ({path.stat().st_size / 1024:.1f} KiB)" in lines
    said = re.fullmatch(
        r"checks vs PyTorch \(atol 0.0001, rtol 0.001\): onnxruntime max \|diff\| (\S+), "
        r"standalone model.py (\S+) -> ok",
        lines[-1],
    )
    assert said and float(said[1]) < 1e-4 and float(said[2]) < 1e-6
    assert len(lines) == len(files) + 2
    code, _, _ = cli("export", cell, *tiny, "--seed", "0", "--json", "--out", tmp_path / "b")
    weights = [load_file(str(tmp_path / x / "model.safetensors")) for x in ("a", "b")]
    assert code == 0 and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_an_export_at_an_odd_size_matches_and_a_failed_standalone_check_fails_it(
    cli, tmp_path: Path, monkeypatch
) -> None:
    """At 7 px the down-sampling cells see odd sizes, where model.py's pooling must round up
    as its stride-2 shortcut does (every other export test ran at 8 px); and the export's
    "ok" needs the standalone check too, not only onnxruntime's."""
    import autoshrink.export.bundle as bundle

    cell = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell)
    tiny = ["--width", "0.25", "--image-size", "7", "--num-classes", "3", "--json"]
    code, stdout, _ = cli("export", cell, *tiny, "--out", tmp_path / "odd")
    report = json.loads(stdout)
    assert code == 0 and report["ok"] and report["standalone_max_abs_diff"] < 1e-6
    checks = []
    compare = bundle.compare

    def standalone_off(got, expected):  # the second comparison: model.py's
        checks.append(1)
        diff, ok = compare(got, expected)
        return (diff, ok and len(checks) < 2)

    monkeypatch.setattr(bundle, "compare", standalone_off)
    code, stdout, _ = cli("export", cell, *tiny, "--out", tmp_path / "off")
    assert code == 1 and json.loads(stdout)["ok"] is False and len(checks) == 2


@pytest.mark.slow
def test_export_trained_weights_of_every_op(cli, tmp_path: Path) -> None:
    """Weights saved like ``autoshrink train`` does (a 1-channel, 8-pixel, 10-class data set):
    input channels and classes are read from the file, and the exported network is that one."""
    spec = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25)
    for cell in (ODD, EMPTY):
        torch.manual_seed(1)
        model = build_network(cell, spec)
        for p in model.parameters():  # "trained": anything but the initialisation
            p.data.normal_()
        weights = tmp_path / f"{cell.key}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        cell_file = tmp_path / f"{cell.key}.json"
        cell.save(cell_file)
        out = tmp_path / cell.key
        code, stdout, _ = cli(
            "export", cell_file, "--out", out, "--weights", weights, "--width", "0.25",
            "--image-size", "8",
        )  # fmt: skip
        assert code == 0 and "-> ok" in stdout
        check_folder(out, cell, spec)
        exported = load_file(str(out / "model.safetensors"))
        assert all(torch.equal(exported[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_the_weights_of_autoshrink_train_say_what_to_export(cli, tmp_path: Path, one_thread):
    """``autoshrink train``'s weights record the image size, width and normalisation: export
    needs no size flags, and export.json says how to prepare an image."""
    cell_file = tmp_path / "cell.json"
    ODD.save(cell_file)
    run = tmp_path / "t"
    code, _, err = cli(
        "train", cell_file, "--dataset", "digits", "--epochs", "1", "--width", "0.25",
        "--no-flip", "--out", run,
    )  # fmt: skip
    assert code == 0, err
    code, stdout, err = cli("export", cell_file, "--weights", run / "weights.safetensors",
                            "--out", tmp_path / "x")  # fmt: skip
    assert code == 0 and "input [B, 1, 8, 8]" in stdout, stdout + err
    manifest = json.loads((tmp_path / "x" / "export.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert manifest["normalisation"] == metrics["normalisation"]
    assert manifest["macro"]["stem_channels"] == 8 and manifest["macro"]["image_size"] == 8  # width
    code, _, err = cli("export", cell_file, "--weights", run / "weights.safetensors",
                       "--macro", "shrinkcnn-imagenet", "--out", tmp_path / "y")  # fmt: skip
    assert code == 2 and err.strip().endswith(
        "the weights of a cifar-proxy network; pass --macro cifar-proxy"
    )
    # another cell whose tensors have the same shapes, and the same cell numbered otherwise:
    # the weights would load, and the export compute something else
    weights = run / "weights.safetensors"
    other = Cell("cnn", (*ODD.ops[:3], "maxpool3x3", *ODD.ops[4:]), ODD.edges, "swish")
    swapped = Cell("cnn", ("input", "maxpool3x3", "conv3x3", *ODD.ops[3:]), ODD.edges, "swish")
    assert swapped.key == ODD.key and swapped != ODD
    for cell, says in (
        (other, f"the weights of another cell (key {ODD.key}, 6 edges), not of this one (key "
                f"{other.key}, 6 edges)"),
        (swapped, "trained for this cell with its nodes numbered otherwise"),
    ):  # fmt: skip
        cell.save(tmp_path / "given.json")
        code, _, err = cli("export", tmp_path / "given.json", "--weights", weights,
                           "--out", tmp_path / "z")  # fmt: skip
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.strip() == (
            f"autoshrink: error: {weights}: {says}"
            + ("; " if cell is other else ", and the weights follow the node numbers; ")
            + "export the cell file autoshrink train wrote beside them, cell.json"
        )
        assert not (tmp_path / "z").exists()
    build = build_network(other, cifar_proxy(**{**TINY, "num_classes": 10}, in_channels=1))
    assert {k: v.shape for k, v in build.state_dict().items()} == {
        k: v.shape for k, v in load_file(str(weights)).items()
    }  # the case the check is for: shapes alone would not tell
    # an export's own weights say the same (they said nothing: another cell was exported with
    # them, and the sizes and the normalisation had to be given again or were lost)
    exported = tmp_path / "x" / "model.safetensors"
    code, stdout, err = cli("export", cell_file, "--weights", exported, "--out", tmp_path / "x2")
    assert code == 0 and "input [B, 1, 8, 8]" in stdout, stdout + err
    again = json.loads((tmp_path / "x2" / "export.json").read_text())
    assert again["normalisation"] == metrics["normalisation"]
    other.save(tmp_path / "given.json")
    code, _, err = cli("export", tmp_path / "given.json", "--weights", exported,
                       "--out", tmp_path / "z")  # fmt: skip
    assert code == 2 and "the weights of another cell" in err and not (tmp_path / "z").exists()


def test_weights_that_do_not_fit_are_a_clear_error(cli, tmp_path: Path) -> None:
    cell_file = tmp_path / "cell.json"
    published_cell("shrinkcnn").save(cell_file)
    model = build_network(published_cell("shrinkcnn"), cifar_proxy(**TINY))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    code, _, err = cli("export", cell_file, "--out", tmp_path / "o", "--weights", weights)
    assert code == 2 and err.count("\n") == 1 and "--width" in err
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    code, _, err = cli(
        "export", cell_file, "--out", tmp_path / "o", "--weights", tmp_path / "junk.safetensors"
    )
    assert code == 2 and "junk.safetensors" in err
    flat = {"stem.0.weight": torch.zeros(3), "classifier.weight": torch.zeros(10, 8)}
    save_file(flat, str(tmp_path / "flat.safetensors"))  # a 1-D stem was an IndexError
    code, _, err = cli(
        "export", cell_file, "--out", tmp_path / "o", "--weights", tmp_path / "flat.safetensors"
    )
    assert code == 2 and "flat.safetensors: not the weights of a macro network (stem.0" in err


@pytest.mark.parametrize(
    ("name", "kind"),
    [("stem.0.weight", torch.int32), ("stem.1.num_batches_tracked", torch.float32)],
)
def test_weights_of_another_kind_than_the_networks_are_refused(cli, tmp_path, name, kind) -> None:
    """An integer tensor where the network has a float one (or a float where it counts) was
    cast without a word: integer weights are not a training's."""
    spec = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.25)
    state = {k: v.contiguous() for k, v in build_network(EMPTY, spec).state_dict().items()}
    own = state[name].dtype
    state[name] = state[name].round().to(kind)
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    EMPTY.save(tmp_path / "cell.json")
    code, _, err = cli(
        "export", tmp_path / "cell.json", "--out", tmp_path / "o", "--weights", weights,
        "--width", "0.25", "--image-size", "8",
    )  # fmt: skip
    said = str(kind).removeprefix("torch.")
    assert code == 2 and err.count("\n") == 1, err
    assert (
        f"{weights}: tensor {name} holds {said} values, the network's are "
        f"{str(own).removeprefix('torch.')}; nothing exported"
    ) in err, err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ mbconv architectures

MIXED = ("k5e3", SKIP, "k3e6", SKIP, "k5e6", "k3e3", SKIP, SKIP,
         "k5e3", "k3e6", SKIP, "k5e6", "k3e3", SKIP, "k5e3", "k3e6")  # fmt: skip


@pytest.mark.parametrize(
    "arch",
    [
        mobilenetv2_arch(1.0, image_size=32, num_classes=10),
        MBConvArch(width=0.5, image_size=32, num_classes=7, in_channels=1, layers=MIXED),
    ],
    ids=["mobilenetv2", "mixed"],
)
def test_mbconv_export_model_py_loads_the_weights_strictly(
    arch: MBConvArch, tmp_path: Path, one_thread
) -> None:
    """``model.py`` of an mbconv export (trained weights given) defines the network of the
    architecture: the state dict names of build_arch, a block per layer not skipped with its
    kernel and expansion, and PyTorch's outputs."""
    torch.manual_seed(2)
    model = build_arch(arch)
    for p in model.parameters():  # "trained": anything but the initialisation
        p.data.normal_(0, 0.1)
    weights = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "export"
    r = export_arch(arch, out, weights=weights)
    assert r.ok and r.standalone_max_abs_diff < 1e-6 and r.onnx_max_abs_diff < 1e-4
    manifest = json.loads((out / "export.json").read_text())
    assert "model.py" in manifest["files"] and "model.py" in r.files
    assert manifest["checks"]["standalone_vs_torch_max_abs_diff"] == r.standalone_max_abs_diff
    assert MBConvArch.load(out / "architecture.json") == arch
    source = (out / "model.py").read_text()
    assert imported_modules(source) <= {"json", "struct", "pathlib", "torch", "sys"}
    module = import_file(out / "model.py")
    alone = module.Network()
    state = load_file(str(out / "model.safetensors"))
    alone.load_state_dict(state, strict=True)
    alone.eval()
    model.eval()
    assert alone.state_dict().keys() == model.state_dict().keys()
    # the blocks of the chosen layers: skipped ones absent, kernels and expansions as chosen
    assert len(alone.blocks) == 1 + sum(c != SKIP for c in arch.layers)
    chosen = [c for c in arch.layers if c != SKIP]
    for block, choice in zip(list(alone.blocks)[1:], chosen, strict=True):
        depthwise = [m for m in block.body if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
        (dw,) = depthwise
        c_in = block.body[0].in_channels
        assert choice == f"k{dw.kernel_size[0]}e{dw.out_channels // c_in}"
    x = torch.randn(3, arch.in_channels, arch.image_size, arch.image_size)  # another batch size
    with torch.no_grad():
        expected = model(x).numpy()
        np.testing.assert_allclose(alone(x).numpy(), expected, rtol=1e-5, atol=1e-6)
        loaded = module.load(out / "model.safetensors")
        np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_mbconv_model_py_runs_without_autoshrink(tmp_path: Path, one_thread) -> None:
    """A random init (with random batch-norm statistics) passes the export's own checks, and
    model.py runs as a script in Python's isolated mode, next to its weights."""
    arch = MBConvArch(width=0.35, image_size=32, num_classes=3, layers=MIXED)
    r = export_arch(arch, tmp_path / "export", seed=3)
    assert r.ok
    bn = load_file(str(tmp_path / "export" / "model.safetensors"))["stem.1.running_var"]
    assert not torch.allclose(bn, torch.ones_like(bn))  # random statistics exercise BN
    run = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "export" / "model.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0 and "output (1, 3)" in run.stdout, run.stderr


def test_weights_trained_for_another_architecture_are_refused(tmp_path: Path) -> None:
    from autoshrink.errors import ConfigError
    from autoshrink.export.bundle import check_trained_network
    from autoshrink.training.weights_file import TrainedFor

    arch = MBConvArch(width=0.5, image_size=32, num_classes=7, in_channels=1, layers=MIXED)
    other = MBConvArch(width=0.5, image_size=32, num_classes=7, in_channels=1,
                       layers=("k3e3", *MIXED[1:]))  # fmt: skip
    trained = TrainedFor({}, {"mean": [0.5], "std": [0.2]}, architecture=arch.to_dict())
    weights = tmp_path / "w.safetensors"
    check_trained_network(weights, trained, {"architecture": arch.to_dict()})  # its own: fine
    with pytest.raises(ConfigError, match=r"w.safetensors: the weights of another architecture "
                       r"\(layers k5e3,skip,.*\), not of this one \(k3e3,skip,"):  # fmt: skip
        check_trained_network(weights, trained, {"architecture": other.to_dict()})
    with pytest.raises(ConfigError, match="trained for an architecture, not for a cell"):
        check_trained_network(weights, trained, {"cell": ODD.to_dict()})


def test_an_empty_check_batch_is_refused_before_any_file(tmp_path: Path) -> None:
    # it failed in numpy after model.onnx and an "incomplete" export.json were written
    from autoshrink.errors import ConfigError
    from autoshrink.export.bundle import export_network

    cell = published_cell("shrinkcnn")
    with pytest.raises(ConfigError, match="check_batch must be a whole number >= 1, got 0"):
        export_network(cell, cifar_proxy(image_size=8, width=0.25), tmp_path / "x", check_batch=0)
    assert not (tmp_path / "x").exists()


def trained_weights(path: Path, model: torch.nn.Module, network: dict) -> Path:
    """``model``'s weights at ``path`` with the metadata ``autoshrink train`` writes for
    ``network``."""
    from autoshrink.training.weights_file import weights_metadata

    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=weights_metadata(network, [0.5], [0.25]))
    return path


def test_train_s_weights_give_the_macro_the_size_and_the_live_cell(cli, tmp_path) -> None:
    # the macro defaulted to cifar-proxy (and refused the weights), an architecture's size to
    # the file's, and a cell that differed only in dead nodes was "numbered otherwise"
    from autoshrink.spaces.macros import get_macro

    dead = Cell("cnn", ("input", "conv3x3", "conv1x1", "sep3x3"), [(0, 1), (1, 2)])
    spec = get_macro("shrinkcnn-imagenet", width=0.1, image_size=16, in_channels=1)
    macro = {"name": spec.name, "width": 0.1, "image_size": 16, "in_channels": 1}
    weights = trained_weights(
        tmp_path / "c.safetensors",
        build_network(dead, spec),
        {"cell": dead.to_dict(), "macro": {**macro, "num_classes": spec.num_classes}},
    )
    given = Cell("cnn", ("input", "conv3x3", "conv1x1"), [(0, 1), (1, 2)])  # no dead node 3
    given.save(tmp_path / "cell.json")
    code, out, err = cli("export", tmp_path / "cell.json", "--weights", weights,
                         "--out", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    assert "shrinkcnn-imagenet network" in out and "input [B, 1, 16, 16]" in out
    arch = mobilenetv2_arch(0.1, image_size=224, num_classes=10, in_channels=1)
    arch.save(tmp_path / "arch.json")  # as written, for 224 px; trained at 32
    trained = arch.with_settings(image_size=32)
    weights = trained_weights(
        tmp_path / "a.safetensors", build_arch(trained), {"architecture": trained.to_dict()}
    )
    code, out, err = cli("export", tmp_path / "arch.json", "--weights", weights,
                         "--out", tmp_path / "a")  # fmt: skip
    assert code == 0 and "input [B, 1, 32, 32]" in out, err
    assert json.loads((tmp_path / "a" / "export.json").read_text())["input"] == ["batch", 1, 32, 32]


# ------------------------------------------------------------------ weights metadata

NET = {"cell": ODD.to_dict(), "macro": {"name": "cifar-proxy", **TINY, "in_channels": 1}}


def with_macro(**settings) -> str:
    return json.dumps({**NET, "macro": {**NET["macro"], **settings}})


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ({"normalisation": '{"mean": ["a"], "std": [1]}'},
         """metadata 'normalisation': "mean[0]" must be a number, got "a\""""),
        ({"normalisation": '{"mean": [0.3], "std": [0.3], "foo": 1}'},
         "metadata 'normalisation': unknown key(s) ['foo']; expected mean and std"),
        ({"normalisation": '{"mean": 0.3, "std": 0.3}'},
         """metadata 'normalisation': "mean" must be a list, got 0.3"""),
        ({"normalisation": '{"mean": [NaN], "std": [0.3]}'},
         """metadata 'normalisation': "mean[0]" must be finite, got nan"""),
        ({"normalisation": '{"mean": [0.3], "std": [0.0]}'},
         """metadata 'normalisation': "std[0]" must be finite and > 0, got 0"""),
        ({"normalisation": '{"mean": [0.3], "std": [Infinity]}'},
         """metadata 'normalisation': "std[0]" must be finite and > 0, got inf"""),
        ({"normalisation": '{"mean": [0.3], "std": [0.3, 0.3]}'},
         "metadata 'normalisation': mean and std must have one value per channel, got 1 and 2"),
        ({"normalisation": '{"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}'},
         "metadata 'normalisation' has 3 channel(s), the network's input 1"),
        ({"normalisation": '{"mean": [0.3]}'},
         """metadata 'normalisation': "std" is missing"""),
        ({"normalisation": "NaN"},
         "metadata 'normalisation': expected a JSON object, got float"),
        ({"normalisation": None},
         "metadata 'normalisation' is missing (format 'autoshrink.weights/1' has it)"),
        ({"network": '{"cell": '},
         "metadata 'network': not valid JSON (Expecting value, line 1)"),
        ({"network": "[]"}, "metadata 'network': expected a JSON object, got list"),
        ({"network": '{"cell": {}, "macro": 5}'},
         """metadata 'network': "macro" must be an object or null, got 5"""),
        ({"network": '{"macro": {"name": "cifar-proxy"}}'},
         "metadata 'network' names neither a cell nor an architecture"),
        ({"format": "autoshrink.weights/9"},
         "metadata 'format' is 'autoshrink.weights/9', a version this autoshrink does not read "
         "(it reads 'autoshrink.weights/1')"),
        ({"network": with_macro(name="resnet")},
         "metadata 'network': unknown macro 'resnet'; expected one of ['cifar-proxy', "
         "'shrinkcnn-imagenet']"),
        ({"network": with_macro(name=["cifar-proxy"])},
         """metadata 'network': the macro's name must be a string, got ['cifar-proxy']"""),
        ({"network": with_macro(image_size=-5)},
         "metadata 'network': macro cifar-proxy: image_size must be a whole number >= 1, got -5"),
        ({"network": with_macro(image_size=10**6)},  # it ran out of memory
         "metadata 'network': macro cifar-proxy: image_size must be at most 65536, got 1000000"),
    ],
    ids=["string-mean", "extra-key", "not-lists", "nan-mean", "zero-std", "inf-std",
         "lengths", "three-channels", "no-std", "nan", "no-normalisation", "network-not-json",
         "network-list", "macro-not-object", "no-cell", "format-9", "unknown-macro",
         "macro-name-list", "negative-size", "huge-size"],
)  # fmt: skip
def test_malformed_weights_metadata_is_one_line_naming_the_file_and_nothing_is_written(
    cli, tmp_path: Path, entries: dict, says: str
) -> None:
    # they were tracebacks left after model.onnx and an "incomplete" export.json, or read as
    # no metadata (the export took 32 px and lost the normalisation), or accepted as they were
    from autoshrink.training.weights_file import weights_metadata

    ODD.save(tmp_path / "cell.json")
    model = build_network(ODD, cifar_proxy(**TINY, in_channels=1))
    metadata = {**weights_metadata(NET, [0.5], [0.25]), **entries}
    weights = tmp_path / "w.safetensors"
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(weights), {k: v for k, v in metadata.items() if v is not None})
    out = tmp_path / "x"
    code, stdout, err = cli("export", tmp_path / "cell.json", "--weights", weights, "--out", out)
    assert (code, stdout) == (2, "") and err == f"autoshrink: error: {weights}: {says}\n"
    assert not out.exists()


def test_metadata_that_is_not_autoshrink_weights_reads_as_none(tmp_path: Path) -> None:
    """Weights from elsewhere (transformers writes ``{"format": "pt"}``) and other files of
    autoshrink (a checkpoint) say nothing of their network: the flags size it."""
    from autoshrink.training.weights_file import read_trained_for, weights_metadata

    path = tmp_path / "w.safetensors"
    for metadata in (None, {"format": "pt"}, {"format": "autoshrink.checkpoint/1", "epoch": "3"}):
        save_file({"x": torch.zeros(2)}, str(path), metadata)
        assert read_trained_for(path) is None
    save_file({"x": torch.zeros(2)}, str(path), weights_metadata(NET, [0], [1]))  # JSON's ints
    trained = read_trained_for(path)
    assert trained is not None and trained.normalisation == {"mean": [0.0], "std": [1.0]}


def test_an_architecture_in_the_metadata_out_of_range_names_the_file(tmp_path: Path) -> None:
    from autoshrink.errors import ConfigError
    from autoshrink.export.bundle import check_trained_settings
    from autoshrink.training.weights_file import TrainedFor

    arch = {**mobilenetv2_arch(0.5, image_size=32, num_classes=7).to_dict(), "image_size": 10**6}
    weights = tmp_path / "w.safetensors"
    with pytest.raises(ConfigError, match=r"^\S+w.safetensors: metadata 'network': architecture: "
                       "MobileNetV2: image_size must be at most 65536, got 1000000$"):  # fmt: skip
        check_trained_settings(weights, TrainedFor({}, None, architecture=arch))


@pytest.mark.parametrize(
    ("seed", "says"),
    [
        (2**64, "export: seed must be at most 9223372036854775807, got 18446744073709551616"),
        (-1, "export: seed must be a whole number >= 0, got -1"),
        ("1", "export: seed must be a whole number >= 0, got '1'"),
        (1.5, "export: seed must be a whole number >= 0, got 1.5"),
    ],
)
def test_a_seed_torch_cannot_take_is_refused_before_any_file(tmp_path: Path, seed, says) -> None:
    # torch's manual_seed raised its own ValueError or RuntimeError (-1 was taken as 2**64 - 1)
    from autoshrink.errors import ConfigError
    from autoshrink.export.bundle import export_network

    cell = published_cell("shrinkcnn")
    with pytest.raises(ConfigError, match=f"^{re.escape(says)}$"):
        export_network(cell, cifar_proxy(image_size=8, width=0.25), tmp_path / "x", seed=seed)
    assert not (tmp_path / "x").exists()


IDENTITY_CELL = Cell("cnn", ("input", "identity"), ((0, 1),), "relu")


@pytest.mark.parametrize("seed", range(4))
def test_the_checks_pass_float_rounding_at_any_output_scale(seed: int) -> None:
    """A cell of identities in the ImageNet macro, randomly initialised, outputs logits in the
    thousands; float32 rounding then reaches ~1e-3 on logits near 0, and the check (absolute
    1e-4 there) failed correct exports (``export ident.json --macro shrinkcnn-imagenet
    --image-size 32 --seed 3`` said FAILED, exit status 1). The same network in float64 is the
    oracle: float32 must pass against it, and a logit off by 1% of the scale must not."""
    from autoshrink.export.bundle import compare, randomize_batchnorm
    from autoshrink.spaces.macros import shrinkcnn_imagenet

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_network(IDENTITY_CELL, shrinkcnn_imagenet(image_size=32)).eval()
    randomize_batchnorm(net, gen)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        single, double = net(x).numpy(), net.double()(x.double()).numpy()
    scale = np.abs(double).max()
    assert scale > 1000 and compare(single, double)[1]
    wrong = single.copy()
    wrong[0, np.abs(double[0]).argmin()] += 0.01 * scale
    assert not compare(wrong, double)[1]


def test_an_export_with_logits_in_the_thousands_passes_its_checks(cli, tmp_path: Path) -> None:
    IDENTITY_CELL.save(tmp_path / "cell.json")
    flags = ["--macro", "shrinkcnn-imagenet", "--image-size", "32", "--seed", "3", "--json"]
    code, out, err = cli("export", tmp_path / "cell.json", *flags, "--out", tmp_path / "e")
    assert code == 0 and json.loads(out)["ok"], err
    checks = json.loads((tmp_path / "e" / "export.json").read_text())["checks"]
    assert checks["ok"] and checks["tolerance"]["atol"] > 0.1
