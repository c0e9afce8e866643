"""Tied weights stored once in safetensors files, and put back on loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from autoshrink.errors import ConfigError
from autoshrink.evaluators.oneshot import FORMAT, read_cell_weights, save_cell_weights
from autoshrink.graph import Cell
from autoshrink.nn.rnn import RNNModel
from autoshrink.nn.tied_weights import retie, untie

CELL = Cell("rnn", ("input", "tanh", "relu"), [(0, 1), (1, 2)])


def test_an_rnn_state_is_stored_once_and_loads_back_strictly(tmp_path) -> None:
    model = RNNModel(CELL, 20, emsize=6, nhid=6)
    tensors, ties = untie(model.state_dict())
    assert ties == {"decoder.weight": "encoder.weight"} and "decoder.weight" not in tensors
    with pytest.raises(RuntimeError, match="share memory"):  # why: safetensors refuses ties
        save_file(model.state_dict(), str(tmp_path / "refused.safetensors"))
    save_file(tensors, str(tmp_path / "w.safetensors"))
    loaded = retie(load_file(str(tmp_path / "w.safetensors")), ties)
    other = RNNModel(CELL, 20, emsize=6, nhid=6)
    other.load_state_dict(loaded)  # strict: every key back
    assert other.decoder.weight is other.encoder.weight
    assert other.encoder.weight.equal(model.encoder.weight)


def test_only_the_same_data_viewed_alike_is_a_tie() -> None:
    base = torch.arange(12.0)
    state = {
        "a": base.view(3, 4),
        "same": base.view(3, 4),  # a tie
        "reshaped": base.view(4, 3),  # the same memory read otherwise: kept
        "slice": base[4:].view(2, 4),  # another offset: kept
        "empty": torch.empty(0),
        "empty_too": torch.empty(0),  # no data to share
        "copy": base.view(3, 4).clone(),
    }
    tensors, ties = untie(state)
    assert ties == {"same": "a"}
    assert list(tensors) == ["a", "reshaped", "slice", "empty", "empty_too", "copy"]
    assert retie(tensors, ties)["same"] is state["a"]


def test_one_shot_weight_files_keep_ties_and_read_old_copies(tmp_path) -> None:
    model = RNNModel(CELL, 20, emsize=6, nhid=6)
    path = tmp_path / "w.safetensors"
    save_cell_weights(path, CELL, model)
    assert "decoder.weight" not in load_file(str(path))
    cell, tensors = read_cell_weights(path)
    assert cell == CELL and tensors["decoder.weight"] is tensors["encoder.weight"]
    # a file of an earlier version: a copy under each key, no map of ties
    copies = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "key": CELL.key, "cell": CELL.to_json()}
    save_file(copies, str(tmp_path / "old.safetensors"), meta)
    assert read_cell_weights(tmp_path / "old.safetensors")[1].keys() == copies.keys()
    meta["tied"] = json.dumps({"decoder.weight": "no.such.key"})
    save_file(copies, str(tmp_path / "bad.safetensors"), meta)
    with pytest.raises(ConfigError, match="bad.safetensors: malformed tied-weights map"):
        read_cell_weights(tmp_path / "bad.safetensors")
