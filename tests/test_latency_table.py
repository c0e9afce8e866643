"""Latency tables: the block decomposition covers the network exactly (block count, output
shapes, torch's flop count), the prediction arithmetic, measuring only missing blocks, JSON
round trip, and clear errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from autoshrink.errors import ConfigError, HardwareError
from autoshrink.graph import Cell
from autoshrink.hardware.blocks import Block, network_blocks
from autoshrink.hardware.latency import environment
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.hardware.table import BlockEntry, LatencyTable, extend_table
from autoshrink.nn.cnn import build_network
from autoshrink.spaces.cells import published_cell
from autoshrink.spaces.macros import cifar_proxy, shrinkcnn_imagenet

FAST = LatencySettings(warmup=1, min_repeats=3, max_seconds=0.05)
TINY = cifar_proxy(width=0.25, image_size=8, num_classes=3)
ODD = Cell("cnn", ("input", "conv3x3", "maxpool3x3", "identity", "sep3x3"),
           ((0, 1), (0, 2), (1, 3), (2, 3), (0, 4)), "swish")  # fmt: skip


def run_counted(module: torch.nn.Module, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The output and torch's flop count of one forward pass."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = module.eval()(*inputs)
    return out, counter.get_total_flops()


def test_shrinkcnn_on_the_proxy_has_the_blocks_counted_by_hand() -> None:
    """Stem 1; cell 1: 4 ops + 2 node concats + leaf concat + add = 8; cells 2 and 3 add a
    pool and a projection: 10 each; classifier 1 -> 30."""
    blocks = network_blocks(published_cell("shrinkcnn"), cifar_proxy())
    kinds = [b.kind for b in blocks]
    assert len(blocks) == 30
    assert kinds.count("op") == 12 and kinds.count("concat") == 9 and kinds.count("proj") == 2
    assert kinds.count("pool") == 2 and kinds.count("add") == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell, spec",
    [
        (published_cell("shrinkcnn"), TINY),
        (ODD, TINY),
        (published_cell("shrinkcnn"), shrinkcnn_imagenet(width=0.25, depths=(1, 2), image_size=32)),
    ],
)
def test_blocks_cover_the_network_exactly(cell: Cell, spec) -> None:
    """Each block's output has the shape it declares and feeds the next block's size; the
    blocks' flops add up to the whole network's (torch's counter, independent of our counts),
    and their layers are the network's."""
    torch.manual_seed(0)
    total = 0
    for b in network_blocks(cell, spec):
        inputs = [torch.randn(s) for s in b.input_shapes(2)]
        out, n = run_counted(b.module(), inputs)
        channels, size = b.output()
        assert tuple(out.shape) == ((2, channels) if size == 0 else (2, channels, size, size))
        total += n
    x = torch.randn(2, spec.in_channels, spec.image_size, spec.image_size)
    network = build_network(cell, spec)
    assert total == run_counted(network, [x])[1]
    # and they hold its layers: each node's op (a leaf's without its final activation), the
    # cell's activation in the stem and head too
    blocks = network_blocks(cell, spec)
    assert sum((Counter(layers(b.module())) for b in blocks), Counter()) == Counter(layers(network))
    ops = [m.ops[str(k)] for m in network.cells for k in m.live[1:]]
    assert [layers(b.module()) for b in blocks if b.kind == "op"] == [layers(op) for op in ops]


def layers(module: torch.nn.Module) -> list[str]:
    """The layers of ``module`` in order, each as torch prints it with its settings (channels,
    kernel, stride, ...); not the no-op and joining helpers."""
    leaves = (m for m in module.modules() if not list(m.children()))
    return [repr(m) for m in leaves if type(m).__name__ not in {"Identity", "_Cat", "_Add"}]


def fake_table(blocks, block_ms: float, io_ms: float) -> LatencyTable:
    entries = {}
    for b in blocks:
        entries[b.key] = BlockEntry(b, block_ms, 0.0)
        entries[b.io().key] = BlockEntry(b.io(), io_ms, 0.0)
    return LatencyTable(FAST, entries, environment(FAST))  # "measured" on this machine


def test_a_blocks_key_names_all_its_latency_depends_on() -> None:
    leaf = Block("op", (32, 16), 16, 16, "sep3x3", "relu", linear=True)
    assert leaf.key == "op sep3x3 relu linear in=32+16 out=16 hw=16"
    assert Block("proj", (16,), 16, 32).key == "proj in=16 out=32 hw=16"
    assert Block("proj", (16,), 16, 32, stride=2).key == "proj in=16 out=32 hw=16 s=2"
    assert Block("pool", (16,), 8).key == "pool in=16 hw=8"
    assert Block("mbconv", (16,), 8, 24, "k5e3").placement().kernel == 5
    for kind, op in (("mbconv", "sep3x3"), ("op", "k3e6")):
        with pytest.raises(ConfigError, match=f"^block .{kind} {op} .* is not an mbconv block"):
            Block(kind, (16,), 8, 24, op).placement()


def test_prediction_is_the_sum_less_the_call_cost_counted_once() -> None:
    cell = published_cell("shrinkcnn")
    blocks = network_blocks(cell, TINY)
    table = fake_table(blocks, 1.0, 0.25)
    assert table.predict(cell, TINY) == pytest.approx(len(blocks) * 0.75 + 0.25)
    with pytest.raises(HardwareError, match="lacks"):
        LatencyTable(FAST, {}).predict(cell, TINY)


def test_table_measures_each_block_once_and_round_trips(tmp_path) -> None:
    cell = published_cell("shrinkcnn")
    blocks = network_blocks(cell, TINY)
    table = extend_table(None, [cell], TINY, FAST)
    distinct = {b.key for b in blocks} | {b.io().key for b in blocks}
    assert set(table.entries) == distinct and len(blocks) > len({b.key for b in blocks})
    assert all(e.median_ms > 0 for e in table.entries.values())
    assert extend_table(table, [cell], TINY) is table  # nothing missing: nothing measured
    predicted = table.predict(cell, TINY)
    assert predicted > 0
    path = tmp_path / "table.json"
    table.save(path)
    back = LatencyTable.load(path)
    assert back.settings == FAST and back.entries == table.entries
    assert back.predict(cell, TINY) == pytest.approx(predicted)
    saved = json.loads(path.read_text())
    assert saved["format"] == "autoshrink.latency-table/1"
    assert saved["environment"]["torch"] == torch.__version__
    bigger = extend_table(back, [ODD], TINY)
    assert set(back.entries) < set(bigger.entries)
    assert all(bigger.entries[k] == e for k, e in back.entries.items())  # measured once


def test_a_table_saved_into_a_new_folder_makes_it(tmp_path) -> None:
    table = fake_table(network_blocks(published_cell("shrinkcnn"), TINY), 1.0, 0.1)
    table.save(tmp_path / "new" / "table.json")
    assert LatencyTable.load(tmp_path / "new" / "table.json").entries == table.entries
    shared = table.save_shared(tmp_path / "other" / "table.json")  # its lock file beside it
    assert shared.entries == table.entries


def test_table_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="^a new latency table needs measurement settings$"):
        extend_table(None, [published_cell("shrinkcnn")], TINY)
    with pytest.raises(HardwareError, match="need backend torch"):
        extend_table(
            None, [published_cell("shrinkcnn")], TINY, LatencySettings(backend="onnxruntime")
        )
    table = fake_table(network_blocks(published_cell("shrinkcnn"), TINY), 1.0, 0.1)
    with pytest.raises(HardwareError, match="backend='torch'"):
        table.check_settings(LatencySettings(backend="onnxruntime"))
    # a table of wall-clock times was extended with CPU-clock ones (and the other way round)
    with pytest.raises(HardwareError, match=r"clock='wall' \(asked 'cpu'\)"):
        table.check_settings(LatencySettings(clock="cpu"))
    # devices by what they name: a table of "cuda" was refused for "cuda:0"
    from dataclasses import replace

    on_gpu = replace(table, settings=replace(FAST, device="cuda"))
    on_gpu.check_settings(replace(FAST, device="cuda:0"))
    with pytest.raises(HardwareError, match=r"device='cuda' \(asked 'cuda:1'\)"):
        on_gpu.check_settings(replace(FAST, device="cuda:1"))
    with pytest.raises(HardwareError, match="no such latency table"):
        LatencyTable.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HardwareError, match="not valid JSON"):
        LatencyTable.load(bad)
    data = table.to_dict()
    key = next(iter(data["blocks"]))
    data["blocks"]["op sep3x3 relu in=999 out=1 hw=1"] = data["blocks"].pop(key)
    bad.write_text(json.dumps(data))
    with pytest.raises(HardwareError, match="malformed"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(HardwareError, match="not a latency table"):
        LatencyTable.load(bad)


def test_a_table_of_another_machine_predicts_but_is_not_extended_here() -> None:
    from dataclasses import replace

    cell = published_cell("shrinkcnn")
    table = extend_table(None, [cell], TINY, FAST)
    foreign = replace(table, environment={**table.environment, "cpu": "Some Other CPU 9000"})
    assert foreign.predict(cell, TINY) == pytest.approx(table.predict(cell, TINY))
    assert extend_table(foreign, [cell], TINY, source="t.json") is foreign  # nothing to measure
    with pytest.raises(HardwareError, match="t.json was measured on Some Other CPU 9000"):
        extend_table(foreign, [ODD], TINY, source="t.json")


def test_a_table_that_records_no_machine_is_not_extended_and_a_new_one_is_stamped() -> None:
    """A table without its machine (a hand-made file, or one built in Python) was extended
    on any machine and saved still without one: a table mixing machines, unseen."""
    from dataclasses import replace

    cell = published_cell("shrinkcnn")
    table = extend_table(None, [cell], TINY, FAST)
    unknown = replace(table, environment={})
    assert extend_table(unknown, [cell], TINY) is unknown  # it predicts what it holds
    with pytest.raises(HardwareError, match="^t.json does not record the cpu it was measured on"):
        extend_table(unknown, [ODD], TINY, source="t.json")
    empty = LatencyTable(FAST, {}, {})  # nothing measured yet: it records this machine
    grown = extend_table(empty, [cell], TINY)
    assert grown.environment["cpu"] == table.environment["cpu"] and len(grown) == len(table)


def test_a_shared_table_file_of_another_machine_is_not_merged_into(tmp_path) -> None:
    """Two machines saving into one table file (a network disk): the second merged the first's
    blocks into its own and saved a table that recorded its machine only."""
    from dataclasses import replace

    blocks = network_blocks(published_cell("shrinkcnn"), TINY)
    here = fake_table(blocks[:3], 1.0, 0.1)
    there = replace(
        fake_table(blocks[3:], 2.0, 0.1), environment={**here.environment, "cpu": "Other CPU"}
    )
    path = tmp_path / "shared.json"
    there.save(path)
    with pytest.raises(HardwareError, match=f"^{path} holds blocks measured on Other CPU, this "):
        here.save_shared(path)
    assert LatencyTable.load(path) == there  # the file is left as it was
    assert here.save_shared(tmp_path / "mine.json").save_shared(tmp_path / "mine.json") == here
    assert here.merged(replace(there, entries={})) == here  # an empty table mixes nothing


def test_a_table_reached_by_a_symlink_is_extended_where_it_lies(tmp_path) -> None:
    """``latency --latency-table link.json`` with link.json a symlink to a shared table read the
    table through the link, then saved the extended table by renaming a file over the link:
    the shared file kept its old blocks, and the link was gone (its lock, beside the link, was
    not the one other processes took beside the file)."""
    blocks = network_blocks(published_cell("shrinkcnn"), TINY)
    real = tmp_path / "shared" / "table.json"
    real.parent.mkdir()
    fake_table(blocks[:3], 1.0, 0.1).save(real)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    grown = fake_table(blocks, 1.0, 0.1).save_shared(link)
    assert link.is_symlink() and link.resolve() == real
    assert LatencyTable.load(real) == grown and len(grown) == len(fake_table(blocks, 1.0, 0.1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "shared"]


def test_a_damaged_table_is_named_by_its_key(tmp_path) -> None:
    table = fake_table(network_blocks(published_cell("shrinkcnn"), TINY), 1.0, 0.1)
    key = next(iter(table.entries))
    cases = [
        (lambda d: d | {"blocks": None}, '"blocks" must be an object, got null'),
        (lambda d: d | {"settings": "x"}, '"settings" must be an object, got "x"'),
        (lambda d: d["blocks"][key].pop("block") and d, f'"blocks.{key}.block" is missing'),
        (lambda d: d["blocks"][key].update(median_ms=1e308) or d, "must be in 0..3.6e+06"),
        # settings of the wrong type were accepted, and 1.5 warm-ups failed the measurement
        (
            lambda d: d["settings"].update(warmup=1.5) or d,
            'latency settings: "warmup" must be an integer, got 1.5',
        ),
        (
            lambda d: d["settings"].update(min_repeats=True) or d,
            '"min_repeats" must be an integer, got true',
        ),
        (
            lambda d: d["settings"].update(steady_heap="no") or d,
            '"steady_heap" must be true or false, got "no"',
        ),
        (  # was "LatencySettings.__init__() got an unexpected keyword argument 'foo'"
            lambda d: d["settings"].update(foo=8) or d,
            "unknown setting(s) ['foo'] in 'settings')",
        ),
    ]
    for damage, says in cases:
        path = tmp_path / "t.json"
        path.write_text(json.dumps(damage(table.to_dict())))
        with pytest.raises(HardwareError) as caught:
            LatencyTable.load(path)
        assert str(caught.value).startswith(f"{path}: malformed latency table (")
        assert says in str(caught.value), str(caught.value)


def test_latency_refuses_a_table_of_other_settings_before_it_measures(
    cli, tmp_path, monkeypatch
) -> None:
    # the refusal came after the whole measurement (up to --max-seconds)
    import autoshrink.cli.latency as cli_latency

    path, cell = tmp_path / "t.json", tmp_path / "cell.json"
    fake_table(network_blocks(published_cell("shrinkcnn"), TINY), 1.0, 0.1).save(path)
    published_cell("shrinkcnn").save(cell)
    monkeypatch.setattr(cli_latency, "measure_cell", lambda *a: pytest.fail("measured first"))
    code, _, err = cli("latency", cell, "--latency-table", path, "--batch", "2")
    assert code == 2 and "was measured with batch=1 (asked 2)" in err


def test_latency_says_how_many_table_entries_it_measured_now(cli, tmp_path) -> None:
    # one entry missing: said "1 entries measured now"
    cell = published_cell("shrinkcnn")
    path, cell_file = tmp_path / "t.json", tmp_path / "cell.json"
    cell.save(cell_file)
    fake_table(network_blocks(cell, TINY)[1:], 1.0, 0.1).save(path)
    before = set(LatencyTable.load(path).entries)
    size = ["--macro", "cifar-proxy", "--width", "0.25", "--image-size", "8", "--num-classes", "3"]
    quick = ["--warmup", "1", "--repeats", "3", "--max-seconds", "0.05"]
    code, out, err = cli("latency", cell_file, "--latency-table", path, *size, *quick)
    assert code == 0, err
    new = len(set(LatencyTable.load(path).entries) - before)
    said = f"({new} entr{'y' if new == 1 else 'ies'} measured now, "
    assert said in out.splitlines()[-1], out


def test_latency_keeps_the_blocks_another_process_added_meanwhile(
    cli, tmp_path, monkeypatch
) -> None:
    # it read the table, measured, and saved its own copy: a search worker's blocks were lost
    import autoshrink.cli.latency as cli_latency

    cell = published_cell("shrinkcnn")
    path, cell_file = tmp_path / "t.json", tmp_path / "cell.json"
    cell.save(cell_file)
    blocks = network_blocks(cell, TINY)
    fake_table(blocks[1:], 1.0, 0.1).save(path)  # one block of the cell missing
    theirs = fake_table(network_blocks(ODD, TINY), 2.0, 0.2)
    measure = cli_latency.measure_cell

    def meanwhile(*args):  # another process adds its blocks while this one measures
        saved = LatencyTable.load(path)
        saved.merged(theirs).save(path)
        return measure(*args)

    monkeypatch.setattr(cli_latency, "measure_cell", meanwhile)
    size = ["--macro", "cifar-proxy", "--width", "0.25", "--image-size", "8", "--num-classes", "3"]
    quick = ["--warmup", "1", "--repeats", "3", "--max-seconds", "0.05", "--json"]
    code, out, err = cli("latency", cell_file, "--latency-table", path, *size, *quick)
    assert code == 0, err
    final = LatencyTable.load(path)
    assert set(theirs.entries) <= set(final.entries) and not final.missing(blocks)
    assert json.loads(out)["table_new_blocks"] >= 1
    code, out, err = cli("latency", cell_file, "--latency-table", path, *size, *quick[:-1])
    assert code == 0, err
    assert "(0 entries measured now" in out.splitlines()[-1]  # every block was in the table


def test_a_chain_pays_each_blocks_time_less_its_output_call_but_the_last_ones_whole() -> None:
    blocks = network_blocks(published_cell("shrinkcnn"), TINY)
    entries = {}
    for i, b in enumerate(blocks):  # every output call of its own cost
        entries[b.key] = BlockEntry(b, 10.0 + i, 0.0)
        entries[b.io().key] = BlockEntry(b.io(), 0.01 * (1 + len(entries)), 0.0)
    table = LatencyTable(FAST, entries)
    e = table.entries
    first, last = blocks[0], blocks[-1]
    assert table.predict_blocks([last]) == pytest.approx(e[last.key].median_ms)
    expected = e[first.key].median_ms - e[first.io().key].median_ms + e[last.key].median_ms
    assert table.predict_blocks([first, last]) == pytest.approx(expected)


def test_profiled_blocks_have_the_median_and_spread_of_their_times(monkeypatch) -> None:
    from autoshrink.hardware.table import profile_network

    def clock() -> int:  # every block takes exactly 1 ms by this clock
        clock.now += 1_000_000
        return clock.now

    clock.now = 0
    monkeypatch.setattr(LatencySettings, "nanoseconds", lambda self: clock)
    entries = profile_network(published_cell("shrinkcnn"), TINY, FAST)
    assert entries and all((e.median_ms, e.iqr_ms) == (1.0, 0.0) for e in entries)


def test_profiled_blocks_pool_their_occurrences_and_drop_the_warm_up(monkeypatch) -> None:
    """A scripted clock: in a warm-up pass every step takes 1000 ms, in a timed pass step j
    takes j + 1 ms. Every pass totals the same, so the stop rule ends after two rounds of
    min_repeats = 4 timed passes. A block at steps j1, j2, ... has 8 samples of each
    j + 1 ms: a block seen once has median j + 1 and no spread; one seen at two steps a < b
    has median (a + b) / 2 + 1 and IQR b - a (numpy's linear quartiles of 8 a's and 8 b's)."""
    from autoshrink.hardware.blocks import network_program
    from autoshrink.hardware.table import profile_network

    cell = published_cell("shrinkcnn")
    program = network_program(cell, TINY)
    settings = LatencySettings(warmup=2, min_repeats=4, max_seconds=30.0)
    state = {"now": 0, "reads": 0}

    def clock() -> int:  # read twice per step: before it, then after it
        passes, read = divmod(state["reads"], 2 * len(program))
        state["reads"] += 1
        if read % 2:  # the read after step read // 2: that step's time has passed
            ms = 1000 if passes < settings.warmup else read // 2 + 1
            state["now"] += ms * 1_000_000
        return state["now"]

    monkeypatch.setattr(LatencySettings, "nanoseconds", lambda self: clock)
    entries = {e.block.key: e for e in profile_network(cell, TINY, settings)}
    assert state["reads"] == 2 * len(program) * (2 + 8)
    steps: dict[str, list[int]] = {}
    for j, s in enumerate(program):
        steps.setdefault(s.block.key, []).append(j)
    assert set(entries) == set(steps) and any(len(js) == 2 for js in steps.values())
    for key, js in steps.items():
        if len(js) == 1:
            want = (js[0] + 1.0, 0.0)
        elif len(js) == 2:
            want = ((js[0] + js[1]) / 2 + 1.0, float(js[1] - js[0]))
        else:
            continue
        assert (entries[key].median_ms, entries[key].iqr_ms) == pytest.approx(want)
