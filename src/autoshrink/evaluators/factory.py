"""Build the evaluator a search config asks for (loads data: call it where I/O is expected),
and the zero-cost ranker of ``--screening zero-cost``."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from autoshrink.config import CONSTRAINED, SearchConfig
from autoshrink.data.images import ImageData, ProxySplit, load_images, proxy_split
from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluator
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.costed import with_hardware_costs
from autoshrink.evaluators.oneshot import OneShotEvaluator
from autoshrink.evaluators.rnn_proxy import rnn_evaluator
from autoshrink.evaluators.zero_cost import ZeroCostRanker, screening_batch
from autoshrink.spaces.macros import MacroSpec, cifar_proxy


def proxy_data(config: SearchConfig) -> tuple[ImageData, MacroSpec]:
    """The data set of ``config`` -- of a multi-domain one, its training domains only (the
    test domain is never built on the search's path) -- and the proxy macro that fits it."""
    data = load_images(config.dataset, config.data_dir, test_domain=config.test_domain)
    macro = cifar_proxy(
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        width=config.width,
    )
    return data, macro


def proxy_task(config: SearchConfig) -> tuple[ProxySplit, MacroSpec]:
    """The CNN proxy split and macro of ``config`` (reads the data set)."""
    data, macro = proxy_data(config)
    split = proxy_split(
        data, per_class=config.per_class, val_size=config.val_size, seed=config.seed
    )
    return split, macro


#: The quality metric the built-in evaluator of each task measures by training.
QUALITY = MappingProxyType({"cnn": "accuracy", "rnn": "perplexity"})


def build_evaluator(config: SearchConfig) -> Evaluator:
    """The proxy-training evaluator of ``config``: its data set, proxy split and macro. A score
    whose cost or metric the evaluator does not give is refused first, before any data is
    read."""
    costs = CONSTRAINED[config.task]  # what its profile gives, before training
    if config.score.weight and config.score.cost not in costs:
        raise ConfigError(
            f"score cost {config.score.cost!r}: the built-in {config.task} evaluator gives "
            f"{', '.join(costs)}"
        )
    if config.score.metric not in (gives := (QUALITY[config.task], *costs)):
        raise ConfigError(
            f"score metric {config.score.metric!r}: the built-in {config.task} evaluator gives "
            f"{', '.join(gives)}"
        )
    if config.task == "rnn":
        rnn = rnn_evaluator(config)
        return (
            OneShotEvaluator(rnn, config.oneshot_epochs) if config.evaluator == "oneshot" else rnn
        )
    if config.objective == "ood":  # NAS-OoD's minimax proxy training
        from autoshrink.evaluators.ood_proxy import ood_evaluator

        data, macro = proxy_data(config)
        return with_hardware_costs(ood_evaluator(config, data, macro), config, macro)
    split, macro = proxy_task(config)
    proxy = CNNProxyEvaluator(
        split, macro, config.cnn_training, device=config.device, threads=config.threads
    )
    evaluator: Evaluator = proxy
    if config.evaluator == "oneshot":  # candidates start from the current cell's weights
        evaluator = OneShotEvaluator(proxy, config.oneshot_epochs)
    return with_hardware_costs(evaluator, config, macro)  # latency costs, when asked for


def build_ranker(config: SearchConfig, seed_of: Callable[[str], int]) -> ZeroCostRanker:
    """The zero-cost ranker of ``config`` (``zc_proxy`` on ``zc_batch`` proxy training images);
    ``seed_of(cell key)`` seeds each cell's initialisation."""
    split, macro = proxy_task(config)
    x, y = screening_batch(split, config.zc_batch, config.seed)
    return ZeroCostRanker(
        config.zc_proxy, macro, x, y, seed_of, device=config.device, threads=config.threads
    )
