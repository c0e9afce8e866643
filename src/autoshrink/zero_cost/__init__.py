"""Zero-cost proxies: score a network at initialisation from one mini-batch, with no training.

Each proxy is a function ``(model, batch_x, batch_y) -> float`` in its own module of this
package (``synflow``, ``snip``, ``grad_norm``, ``jacov``, ``naswot``, ``params``); a larger
value predicts a better network. The definitions follow Abdelfattah et al., "Zero-Cost Proxies
for Lightweight NAS" (ICLR 2021) as implemented in NASLib, and Mellor et al., "Neural
Architecture Search without Training" (ICML 2021) for NASWOT. A proxy works on a deep copy of
``model`` and never changes it.

This module itself does not import torch: :data:`PROXY_NAMES` can be checked by torch-free
code (the config), and :func:`proxy` imports the proxy's module when asked for it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from autoshrink.errors import ConfigError
from autoshrink.nouns import count

#: Every proxy, by name (also its module's name).
PROXY_NAMES: tuple[str, ...] = ("synflow", "snip", "grad_norm", "jacov", "naswot", "params")

Proxy = Callable[[Any, Any, Any], float]  # (model, batch_x, batch_y) -> score


def check_proxy(name: str) -> str:
    """``name`` when it is a proxy; :class:`ConfigError` naming the choices when not."""
    if name not in PROXY_NAMES:
        raise ConfigError(f"unknown zero-cost proxy {name!r}; expected one of {list(PROXY_NAMES)}")
    return name


#: The fewest images a proxy scores: a Jacobian correlation needs two, and batch norm in training
#: mode normalises a single image's channels to zero.
MIN_BATCH = 2


def argument_problem(model: Any, batch_x: Any, batch_y: Any) -> str | None:
    """What is wrong with a proxy's arguments, in words: a model that is no ``torch.nn.Module``,
    images that are no tensor, labels that are no tensor of class indices (else ``None``).
    Imports torch, as every proxy does."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return f"model must be a torch.nn.Module, got {type(model).__name__}"
    if not isinstance(batch_x, torch.Tensor):
        return f"images must be a torch.Tensor, got {type(batch_x).__name__}"
    if not isinstance(batch_y, torch.Tensor) or batch_y.is_floating_point():
        got = batch_y.dtype if isinstance(batch_y, torch.Tensor) else type(batch_y).__name__
        return f"labels must be a torch.Tensor of integer class indices, got {got}"
    return None


def proxy(name: str) -> Proxy:
    """The proxy function called ``name`` (imports torch), which refuses a model, images or
    labels of another type (:func:`argument_problem`), and a batch of fewer than
    :data:`MIN_BATCH` images or with a label count that differs (:class:`ConfigError`)."""
    module = importlib.import_module(f"autoshrink.zero_cost.{check_proxy(name)}")
    score: Proxy = getattr(module, name)

    @functools.wraps(score)
    def checked(model: Any, batch_x: Any, batch_y: Any) -> float:
        if problem := argument_problem(model, batch_x, batch_y):
            raise ConfigError(f"zero-cost proxy {name}: {problem}")
        if len(batch_x) < MIN_BATCH or len(batch_y) != len(batch_x):
            raise ConfigError(
                f"zero-cost proxy {name} needs a batch of at least {MIN_BATCH} images with one "
                f"label each, got {count(len(batch_x), 'image')} and "
                f"{count(len(batch_y), 'label')}"
            )
        return score(model, batch_x, batch_y)

    return checked


__all__ = ["MIN_BATCH", "PROXY_NAMES", "Proxy", "check_proxy", "proxy"]
