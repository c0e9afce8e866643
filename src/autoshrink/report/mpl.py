"""matplotlib's classes, imported in one place for every plot and picture.

matplotlib reads ``$MPLBACKEND`` when it is imported and fails on a name it does not know.
The plots here are drawn with the object API straight into files and need no backend, so such
a value is a one-line :class:`~autoshrink.errors.ConfigError` naming the variable instead of a
traceback from inside matplotlib. :func:`save_figure` writes every figure, in one step (a
report made while its folder is read shows the old picture or the new one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_atomic
from autoshrink.errors import ConfigError

try:
    import matplotlib  # noqa: F401  (reads $MPLBACKEND)
except ValueError as err:
    raise ConfigError(
        f"MPLBACKEND={os.environ.get('MPLBACKEND', '')!r} is not a matplotlib backend ({err}); "
        "unset it: autoshrink draws its plots into files and needs none"
    ) from None

from matplotlib import rc_context
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["Figure", "ListedColormap", "MaxNLocator", "literal", "plain_numbers", "save_figure"]


def literal(text: str) -> str:
    """``text`` as matplotlib shows it letter for letter: a ``$`` (a folder's name may hold
    one) would start mathtext, which fails on what it cannot parse."""
    return text.replace("$", r"\$")


def plain_numbers(ax: Any) -> None:
    """Label ``ax``'s y axis with plain numbers, without an offset or a scientific multiplier
    (matplotlib's default for a narrow range far from 0: a perplexity axis read 0.003..0.008
    with +3.6991e2 in its corner); a log axis keeps its powers of ten. Call it after the
    axis's scale is set."""
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def save_figure(fig: Figure, path: str | Path, **options: Any) -> None:
    """Write ``fig`` to ``path`` in the format its suffix names, in one step
    (:func:`~autoshrink.atomic_write.write_atomic`); ``options`` go to ``savefig``. The same
    figure makes the same file: an SVG gets no date, and its ids come from a fixed salt, not
    a random one (two reports of one run differed in every plot)."""
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt == "svg":
        options = {"metadata": {"Date": None}, **options}
    with rc_context({"svg.hashsalt": "autoshrink"}):
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **options))
