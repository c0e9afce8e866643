"""matplotlib's classes, imported in one place for every plot and picture.

matplotlib reads ``$MPLBACKEND`` when it is imported and fails on a name it does not know.
The plots here are drawn with the object API straight into files and need no backend, so such
a value is a one-line :class:`~autoshrink.errors.ConfigError` naming the variable instead of a
traceback from inside matplotlib. :func:`save_figure` writes every figure, in one step (a
report made while its folder is read shows the old picture or the new one), each log axis with
at least two labelled ticks, and under a decade no long stretch without one
(:func:`label_log_axis`).
"""

from __future__ import annotations

import itertools
import math
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
from matplotlib.ticker import FixedLocator, LogFormatterSciNotation, MaxNLocator, NullFormatter

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


#: The mantissas tried in turn for the ticks of a log axis that matplotlib labels too sparsely.
LOG_MANTISSAS = ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 8), tuple(range(1, 10)))

#: The largest share of a log view under a decade wide that may go without a labelled tick.
MAX_BARE_SHARE = 0.375


def _labelled(ax: Any, name: str) -> list[float]:
    """Where ``ax``'s ``name`` ("x" or "y") axis's ticks in view carry a label."""
    axis = ax.xaxis if name == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
    shown = []
    for ticker in (axis.major, axis.minor):
        locs = ticker.locator()
        texts = ticker.formatter.format_ticks(locs)
        shown += [v for v, text in zip(locs, texts, strict=True) if text and lo <= v <= hi]
    return shown


def _well_labelled(ticks: list[float], lo: float, hi: float) -> bool:
    """Whether labels at ``ticks`` serve the log view ``lo``..``hi``: at least two, and, in a
    view under a decade, no stretch (its ends included) over :data:`MAX_BARE_SHARE` of it
    without one."""
    logs = [math.log10(v) for v in (lo, *sorted(ticks), hi)]
    span = logs[-1] - logs[0]
    widest = max(b - a for a, b in itertools.pairwise(logs))
    return len(ticks) >= 2 and (span >= 1 or widest <= MAX_BARE_SHARE * span)


def _round_ticks(lo: float, hi: float) -> list[list[float]]:
    """Tick sets for the log view ``lo``..``hi``, coarse first: round mantissas of each power
    of ten (:data:`LOG_MANTISSAS`), then evenly spaced round values (for a view under a
    decade, where they are nearly even on the log scale too)."""
    powers = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    sets = [
        [m * 10.0**e for e in powers for m in mantissas if lo <= m * 10.0**e <= hi]
        for mantissas in LOG_MANTISSAS
    ]
    even = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return [*sets, [float(v) for v in even if lo <= v <= hi]]


def label_log_axis(ax: Any, name: str) -> None:
    """Label ``ax``'s log ``name`` axis well enough (``_well_labelled``): matplotlib labels
    one tick only where the view spans about 0.4 or 1 decade around a power of ten (MACs from
    66,834 to 188,800 read "10^5" alone), and leaves the top of a view of 0.3 decade past one
    bare (69,632 to 125,504 MACs: labels up to 10^5 only). Then the first set of round ticks
    that does (``_round_ticks``), else the evenly spaced one, replaces its own."""
    axis = ax.xaxis if name == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
    if axis.get_scale() != "log" or not (lo > 0 and math.isfinite(hi)):
        return
    if _well_labelled(_labelled(ax, name), lo, hi):
        return
    tries = _round_ticks(lo, hi)
    ticks = next((t for t in tries if _well_labelled(t, lo, hi)), tries[-1])
    if len(ticks) >= 2:
        axis.set_major_locator(FixedLocator(ticks))
        every = LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(math.inf,) * 2)
        axis.set_major_formatter(every)
        axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, path: str | Path, **options: Any) -> None:
    """Write ``fig`` to ``path`` in the format its suffix names, in one step
    (:func:`~autoshrink.atomic_write.write_atomic`); ``options`` go to ``savefig``. The same
    figure makes the same file: an SVG gets no date, and its ids come from a fixed salt, not
    a random one (two reports of one run differed in every plot). Each log axis gets at least
    two labelled ticks, and under a decade no long stretch without one
    (:func:`label_log_axis`)."""
    for ax in fig.axes:
        for name in ("x", "y"):
            label_log_axis(ax, name)
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt == "svg":
        options = {"metadata": {"Date": None}, **options}
    with rc_context({"svg.hashsalt": "autoshrink"}):
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **options))
