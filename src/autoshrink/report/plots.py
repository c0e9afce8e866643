"""The run report's plots, drawn with matplotlib's object API (no pyplot state) into SVG files.

- :func:`plot_steps`: score, quality metric and cost per step (each step's tick labelled with
  the edges its chosen cell has left): the chosen candidate as a line, the spread (min to max)
  of the step's K candidates as a band, and every candidate of the step as a dot.
- :func:`plot_pareto`: quality against cost of every candidate that scored, the Pareto front
  drawn through the undominated ones (when there are two or more) and the chosen best cell
  marked.
- :func:`plot_progress`: every candidate's score in evaluation order and the best score so far
  (any strategy: the curve strategies are compared by); :func:`plot_comparison`: that curve for
  several runs, each in its own colour and line style (:func:`run_style`), the legend of many
  below the plot.

The y axes of linear scale show plain numbers, never an offset or a power of ten in the
corner (:func:`~autoshrink.report.mpl.plain_numbers`): a perplexity of 369.91 reads 369.91,
not 0.01 with +3.6991e2 above.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.report.labels import label as shown
from autoshrink.report.mpl import Figure, MaxNLocator, literal, plain_numbers, save_figure
from autoshrink.report.reading import Candidate, RunData, Step
from autoshrink.tabular.comparison import pareto_front

_BEST = "#d62728"
_LINE = "#1f77b4"


def _finite(values: list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _value(c: Candidate, metric: str | None) -> float | None:
    v = c.score if metric is None else c.metrics.get(metric)
    return v if v is not None and math.isfinite(v) else None


def _say_none(ax: Any, values: list[float], what: str, candidates: int | None = None) -> None:
    """When ``values`` (what ``ax`` plots) holds no finite number, say so in the middle of
    ``ax`` and name no y values: matplotlib's default range of an empty axis, -0.05 to 0.05,
    read as scores or accuracies that no candidate had. An x axis of ``candidates`` evaluated
    then runs from 1 to their number (it was centred on 0)."""
    if _finite(list(values)):
        return
    ax.set_yticks([])
    ax.text(0.5, 0.5, f"no candidate has {what}", transform=ax.transAxes, ha="center",
            va="center", color="0.4")  # fmt: skip
    if candidates is not None:
        ax.set_xlim(0.5, max(candidates, 1) + 0.5)


def plot_steps(
    steps: list[Step], quality: str, cost: str | None, path: Path, title: str = ""
) -> Path:
    """Score, ``quality`` and ``cost`` (log axis) per step; write ``path``.

    The x axis is the step, each tick labelled with the edges the step's chosen cell has
    left: a step's candidates lost one edge each, and as many more as became unreachable, so
    they have different edge counts; they are drawn at their step, where the band of their
    spread is. A single step has no band (and no legend entry for one)."""
    panels: list[tuple[str | None, str]] = [(None, "score"), (quality, shown(quality))]
    if cost:
        panels.append((cost, f"{shown(cost)} (log)"))
    fig = Figure(figsize=(7.5, 2.6 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    x = [s.step for s in steps]
    for ax, (metric, label) in zip(axes, panels, strict=True):
        lo, hi, chosen = [], [], []
        dots_x: list[int] = []  # every candidate, drawn as one scatter: one a step took
        dots_y: list[float] = []  # 17 s at 2,000 steps, one in all 1.4 s
        for s in steps:
            values = _finite([_value(c, metric) for c in s.candidates])
            lo.append(min(values) if values else np.nan)
            hi.append(max(values) if values else np.nan)
            v = _value(s.chosen, metric)
            chosen.append(np.nan if v is None else v)
            dots_x += [s.step] * len(values)
            dots_y += values
        if dots_x:
            ax.scatter(dots_x, dots_y, s=12, color="0.55", zorder=2)
        if len(steps) > 1:  # a band over one step is not drawn: it would be a legend entry only
            ax.fill_between(x, lo, hi, color=_LINE, alpha=0.15, label="spread of the K candidates")
        ax.plot(x, chosen, "-o", color=_LINE, markersize=4, label="chosen candidate", zorder=3)
        ax.set_ylabel(label)
        if metric == cost and cost:
            ax.set_yscale("log")
        plain_numbers(ax)
        _say_none(ax, dots_y, "a score" if metric is None else shown(metric))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    _step_ticks(axes[-1], steps)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return path


#: At most this many labelled ticks on the steps plot's x axis (every n-th step beyond).
STEP_TICKS = 15


def _step_ticks(ax: Any, steps: list[Step]) -> None:
    """Integer ticks at the steps (every n-th of many), each labelled with its step and the
    edges left after it; one step is centred in a range of two."""
    ticked = steps[:: math.ceil(len(steps) / STEP_TICKS)] if steps else []
    ax.set_xticks([s.step for s in ticked], [f"{s.step}\n{s.chosen.num_edges}" for s in ticked])
    ax.set_xlabel("step (above) and edges left after it (below); the search goes left to right")
    if len(steps) == 1:
        ax.set_xlim(steps[0].step - 1, steps[0].step + 1)


def plot_pareto(
    candidates: list[Candidate],
    quality: str,
    cost: str,
    higher_is_better: bool,
    best: Candidate | None,
    path: Path,
) -> Path:
    """``quality`` against ``cost`` of every candidate with both, the front (of two points or
    more) joined; write it."""
    pts = [(c.metrics.get(cost), c.metrics.get(quality), c) for c in candidates]
    pts = [(x, y, c) for x, y, c in pts if len(_finite([x, y])) == 2]
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    if pts:
        xs = np.array([p[0] for p in pts], dtype=float)
        ys = np.array([p[1] for p in pts], dtype=float)
        ax.scatter(xs, ys, s=14, color="0.55", label="candidates", zorder=2)
        front = pareto_front(ys if higher_is_better else -ys, xs)
        if len(front) > 1:  # a front of one point is the best cell's star: no line, no label
            ax.plot(xs[front], ys[front], "-o", color=_LINE, markersize=5, label="Pareto front")
        ax.set_xscale("log")
    if best is not None and _value(best, quality) is not None and _value(best, cost):
        ax.scatter(
            [best.metrics[cost]],
            [best.metrics[quality]],
            s=120,
            marker="*",
            color=_BEST,
            label="best score",
            zorder=4,
        )
    ax.set_xlabel(f"{shown(cost)} (log)")
    ax.set_ylabel(shown(quality))
    plain_numbers(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{shown(quality)} vs {shown(cost)}: every candidate ({len(pts)})")
    save_figure(fig, path)
    return path


def plot_progress(run: RunData, path: Path, title: str = "") -> Path:
    """Score of every candidate in evaluation order and the best score so far; write ``path``."""
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    ordered = run.ordered
    xs = np.arange(1, len(ordered) + 1)
    scores = [c.score if c.ok else np.nan for c in ordered]
    ax.scatter(xs, scores, s=12, color="0.55", label="candidate", zorder=2)
    _best_curve(ax, _best_so_far(run), color=_BEST, label="best so far", zorder=3)
    _finish_progress(ax, title)
    _say_none(ax, scores, "a score", len(ordered))
    save_figure(fig, path)
    return path


#: The comparison plot's line styles: each of the ten colours of matplotlib's cycle solid, then
#: dashed, dotted and dash-dotted, so that 40 runs have 40 looks (an 11th run was the 1st's).
RUN_DASHES = ("-", "--", ":", "-.")
#: A comparison of more runs than this has its legend below the plot, in
#: :data:`LEGEND_COLUMNS` columns: in the corner of the axes, 16 runs' names hid half the curves.
LEGEND_INSIDE = 6
LEGEND_COLUMNS = 3


def run_style(i: int) -> tuple[str, str]:
    """The colour and line style of the ``i``-th run of a comparison (see :data:`RUN_DASHES`)."""
    return f"C{i % 10}", RUN_DASHES[i // 10 % len(RUN_DASHES)]


def plot_comparison(runs: dict[str, RunData], path: Path) -> Path:
    """The best score so far against candidates evaluated, one line per run (each its own
    :func:`run_style`); write ``path``."""
    below = len(runs) > LEGEND_INSIDE
    rows = math.ceil(len(runs) / LEGEND_COLUMNS) if below else 0
    fig = Figure(figsize=(7.5, 4.2 + 0.2 * rows), layout="constrained")
    ax = fig.subplots()
    bests = {label: _best_so_far(run) for label, run in runs.items()}
    for i, (label, best) in enumerate(bests.items()):
        colour, dashes = run_style(i)
        _best_curve(ax, best, label=literal(label), color=colour, linestyle=dashes)
    _finish_progress(ax, "best score so far", legend=not below)
    every = [v for best in bests.values() for v in best]
    _say_none(ax, every, "a score", max((len(best) for best in bests.values()), default=0))
    if below:
        fig.legend(loc="outside lower center", ncols=LEGEND_COLUMNS, fontsize=8)
    save_figure(fig, path)
    return path


def _best_curve(ax: Any, best: np.ndarray, **style: Any) -> None:
    """Draw the best score so far ``best`` (one value per candidate evaluated) as steps; a
    curve of one finite value (a run of one candidate, or whose first score came last) has no
    step to draw, and gets a dot there instead of nothing."""
    finite = np.flatnonzero(np.isfinite(best))
    lone = {"marker": "o", "markersize": 4, "markevery": list(finite)} if len(finite) == 1 else {}
    ax.step(np.arange(1, len(best) + 1), best, where="post", **lone, **style)


def _best_so_far(run: RunData) -> np.ndarray:
    """The run's best score after each candidate, as a curve (NaN, not drawn, before any)."""
    best = np.array(run.best_so_far(), dtype=float)
    return np.where(np.isfinite(best), best, np.nan)


def _finish_progress(ax: Any, title: str, legend: bool = True) -> None:
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("score")
    plain_numbers(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="best", fontsize=8)  # "lower right" hid late low candidates
    if title:
        ax.set_title(title)
