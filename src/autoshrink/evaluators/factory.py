"""Build the evaluator a search config asks for (loads data: call it where I/O is expected)."""

from __future__ import annotations

from autoshrink.config import SearchConfig
from autoshrink.data.images import load_images, proxy_split
from autoshrink.evaluators.base import Evaluator
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.costed import with_hardware_costs
from autoshrink.evaluators.rnn_proxy import rnn_evaluator
from autoshrink.spaces.macros import cifar_proxy


def build_evaluator(config: SearchConfig) -> Evaluator:
    """The proxy-training evaluator of ``config``: its data set, proxy split and macro."""
    if config.task == "rnn":
        return rnn_evaluator(config)
    # a multi-domain data set: its training domains only (the test domain is never built)
    data = load_images(config.dataset, config.data_dir, test_domain=config.test_domain)
    macro = cifar_proxy(
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        width=config.width,
    )
    if config.objective == "ood":
        from autoshrink.evaluators.ood_proxy import ood_evaluator

        evaluator = ood_evaluator(config, data, macro)
        return with_hardware_costs(evaluator, config, macro)
    split = proxy_split(
        data, per_class=config.per_class, val_size=config.val_size, seed=config.seed
    )
    evaluator = CNNProxyEvaluator(
        split, macro, config.training, device=config.device, threads=config.threads
    )
    return with_hardware_costs(evaluator, config, macro)  # latency costs, when asked for
