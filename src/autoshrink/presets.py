"""The named presets of a search (``demo`` and ``paper``, of CNN and of RNN cells) and
:func:`preset`, a :class:`~autoshrink.config.SearchConfig` made from one with overrides.

The command line spells some overrides otherwise: :data:`CLI_SPELLINGS` names them in the
error an unknown override raises, and ``autoshrink search`` maps its training options by
:data:`TRAINING_SPELLINGS`, so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any

from autoshrink.config import TASKS, SearchConfig, unread_settings
from autoshrink.errors import ConfigError
from autoshrink.objectives import Score
from autoshrink.training.proxy_settings import ProxyTraining, RNNProxyTraining

PRESETS: Mapping[str, SearchConfig] = MappingProxyType(
    {
        # The paper's protocol: CIFAR-10, 500 images/class, 1,000 validation, <= 20 epochs, K = 10.
        "paper": SearchConfig(),
        # Minutes on 2 CPU cores: the embedded digits, a smaller proxy, fewer epochs and candidates.
        "demo": SearchConfig(
            dataset="digits",
            nodes=8,
            k=4,
            keep_fraction=0.2,
            patience=5,
            per_class=100,
            val_size=300,
            width=0.5,
            training=ProxyTraining(epochs=6, batch_size=64, patience=3),
        ),
    }
)

#: The paper's RNN protocol: N = 6, K = 10, shrink to round(15 * 0.25) = 4 edges; the proxy
#: of §4 (first 4,000 / 300 lines, nhid 100, SGD lr 20, batch 128, <= 10 epochs).
_RNN_PAPER = SearchConfig(
    task="rnn",
    dataset="ptb",
    nodes=6,
    k=10,
    keep_fraction=0.25,
    training=RNNProxyTraining(),
    score=Score.rnn(),
)
#: RNN-cell presets (``task="rnn"``, PTB-style text data, method §3-§4). The demo takes
#: minutes on 2 CPU cores on the PTB proxy split: the first 1,000 training lines, nhid 32,
#: 4 epochs, K = 3 (at most 34 candidates).
RNN_PRESETS: Mapping[str, SearchConfig] = MappingProxyType(
    {
        "paper": _RNN_PAPER,
        "demo": replace(
            _RNN_PAPER,
            k=3,
            patience=3,
            training=RNNProxyTraining(
                nhid=32, train_lines=1000, epochs=4, batch_size=32, patience=2
            ),
        ),
    }
)


#: The command line's names of the proxy training's settings, each to the ``training_<name>``
#: override of :func:`preset` that sets it (``--epochs``: ``training_epochs``).
TRAINING_SPELLINGS: Mapping[str, str] = MappingProxyType(
    {"epochs": "training_epochs", "batch_size": "training_batch_size", "lr": "training_lr"}
)

#: The command line's names of settings that a preset's overrides spell otherwise.
CLI_SPELLINGS: Mapping[str, str] = MappingProxyType(
    {
        **TRAINING_SPELLINGS,
        "weight": "score=Score.cnn(weight=...) (Score.rnn for rnn cells)",
        "lam": "score=Score.cnn(weight=...) (Score.rnn for rnn cells)",
        "cost": "score=Score.cnn(cost=...)",
        "max_macs": 'constraints={"macs": ...}',
        "max_params": 'constraints={"params": ...}',
        "max_latency": 'constraints={"latency_ms": ...}',
        "executor": "execution=ExecutionSettings(executor=...)",
        "workers": "execution=ExecutionSettings(workers=...)",
        "candidate_timeout": "execution=ExecutionSettings(candidate_timeout=...)",
    }
)


def preset(name: str, task: str = "cnn", **overrides: Any) -> SearchConfig:
    """A named preset of ``task`` with keyword overrides of :class:`SearchConfig`'s fields;
    ``training_<name>`` overrides a field of its ``training`` settings (``training_epochs=2``),
    or of the ``training`` given beside it.
    An override applies as given, ``None`` included (``patience=None``: no early stop), as
    :func:`~autoshrink.training.recipes.get_recipe`'s do. An unknown name is a
    :class:`ConfigError` that says how it is spelled, and so is an override that changes a
    setting the search would not read (:data:`~autoshrink.config.READ_BY`)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {TASKS}")
    table = RNN_PRESETS if task == "rnn" else PRESETS
    try:
        base = table[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(table)}") from None
    known = [f.name for f in fields(SearchConfig)]
    known += [f"training_{f.name}" for f in fields(base.training)]
    for key in overrides:
        if key not in known:
            like = CLI_SPELLINGS.get(key) or " or ".join(difflib.get_close_matches(key, known, 2))
            hint = f"did you mean {like}?" if like else "see SearchConfig's fields"
            raise ConfigError(f"preset {name!r}: unknown setting {key!r}; {hint}")
    training = {k[9:]: v for k, v in overrides.items() if k.startswith("training_")}
    top = {k: v for k, v in overrides.items() if not k.startswith("training_")}
    if training:  # on the training given with them, if one is (it was dropped)
        top["training"] = replace(top.get("training", base.training), **training)
    config = replace(base, **top)
    changed = [k for k, v in top.items() if v != getattr(base, k)]  # the preset's own: kept
    unread = unread_settings(config, changed)
    if unread:
        said = "; ".join(f"{name} needs {needs}" for name, needs in unread)
        raise ConfigError(f"preset {name!r}: not read by this search: {said}")
    return config
