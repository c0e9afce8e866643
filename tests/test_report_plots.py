"""The run report's plots (:mod:`autoshrink.report.plots`) show the journal's numbers.

Each plot is drawn into a real SVG; the figure itself is kept (``save_figure`` wrapped) and
its lines, dots and bands are read back and checked against values worked out here for a
four-step trajectory of known scores: per-step spreads and choices, a brute-force Pareto
front, the running best score.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from autoshrink.report import plots
from autoshrink.report.reading import Candidate, RunData, read_run
from test_executors import reference_run


@pytest.fixture
def figures(monkeypatch) -> list:
    """Every figure the plots save, in order (the SVG files are still written)."""
    saved: list = []
    real = plots.save_figure

    def keep(fig, path, **options):
        saved.append(fig)
        real(fig, path, **options)

    monkeypatch.setattr(plots, "save_figure", keep)
    return saved


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunData:
    """A finished four-step trajectory: the tiny run's first candidate as the template of
    every candidate, with these scores and metrics; one candidate failed (a cost, no score)."""
    real = read_run(reference_run(tmp_path_factory))
    steps = [  # (edges, score, accuracy, macs) per candidate, in proposal order
        [(6, 0.50, 0.80, 9e4)],
        [(5, 0.55, 0.82, 8e4), (5, 0.60, 0.84, 7e4), (5, None, None, 7.5e4)],
        [(4, 0.58, 0.80, 5e4), (4, 0.65, 0.83, 6e4)],
        [(3, 0.62, 0.79, 3e4), (3, 0.61, 0.84, 4e4)],
    ]
    cands = []
    for step, row in enumerate(steps):
        for i, (edges, score, acc, macs) in enumerate(row):
            metrics = {"macs": macs} | ({} if acc is None else {"accuracy": acc})
            status, score = ("ok", score) if score is not None else ("failed", -math.inf)
            fields = {"step": step, "index": i, "key": f"c{step}.{i}", "num_edges": edges}
            fields |= {"status": status, "score": score, "metrics": metrics}
            cands.append(replace(real.candidates[0], **fields))
    return replace(real, candidates=cands, result={"best": None}, events=[], reused=[])


def _dots(ax) -> np.ndarray:
    """The points of every scatter on ``ax``, rows of (x, y)."""
    return np.concatenate(
        [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    )


def _value(c: Candidate, metric: str | None) -> float | None:
    v = c.score if metric is None else c.metrics.get(metric)
    return v if v is not None and math.isfinite(v) else None


def test_the_steps_plot_shows_each_steps_choice_and_candidates(run, figures, tmp_path):
    steps = run.kept_steps
    path = plots.plot_steps(steps, "accuracy", "macs", tmp_path / "steps.svg", title="tiny")
    assert path.read_text().lstrip().startswith("<?xml")
    axes = figures[0].axes
    assert [ax.get_ylabel() for ax in axes] == ["score", "accuracy", "MACs (log)"]
    x = [0, 1, 2, 3]  # the steps; their ticks name the edges left: 6, 5, 4, 3
    assert [s.chosen.key for s in steps] == ["c0.0", "c1.1", "c2.1", "c3.0"]
    for ax, metric in zip(axes, [None, "accuracy", "macs"], strict=True):
        (line,) = ax.get_lines()
        assert list(line.get_xdata()) == x
        assert np.allclose(line.get_ydata(), [_value(s.chosen, metric) for s in steps])
        values = [[v for c in s.candidates if (v := _value(c, metric)) is not None] for s in steps]
        want = sorted((e, v) for e, vs in zip(x, values, strict=True) for v in vs)
        assert np.allclose(sorted(map(tuple, _dots(ax))), want)
        # one scatter of every candidate, not one a step (2,000 steps took 17 s so)
        assert sum(isinstance(c, PathCollection) for c in ax.collections) == 1
        band = ax.collections[-1].get_paths()[0].vertices  # fill_between: min to max per step
        for e, vs in zip(x, values, strict=True):
            ys = band[np.isclose(band[:, 0], e), 1]
            assert np.isclose(ys.min(), min(vs)) and np.isclose(ys.max(), max(vs))
    assert [ax.get_yscale() for ax in axes] == ["linear", "linear", "log"]
    assert list(axes[-1].get_xticks()) == x
    assert [t.get_text() for t in axes[-1].get_xticklabels()] == ["0\n6", "1\n5", "2\n4", "3\n3"]
    assert "edges left" in axes[-1].get_xlabel()
    assert figures[0]._suptitle.get_text() == "tiny"  # get_suptitle() is matplotlib 3.8+


def test_a_candidate_with_other_edges_than_the_chosen_is_drawn_at_its_step(run, figures, tmp_path):
    # removing an edge can strand nodes, whose edges go too: a step's candidates differ
    steps = run.kept_steps
    pruned = replace(steps[2].candidates[0], num_edges=2)  # c2.0: 2 edges, c2.1 (chosen): 4
    other = replace(steps[2], candidates=[pruned, *steps[2].candidates[1:]])
    plots.plot_steps([*steps[:2], other, steps[3]], "accuracy", None, tmp_path / "steps.svg")
    score = figures[0].axes[0]
    assert [1.0 * x for x, y in _dots(score) if np.isclose(y, pruned.score)] == [2.0]
    assert [t.get_text() for t in figures[0].axes[-1].get_xticklabels()][2] == "2\n4"


def test_a_single_step_has_integer_ticks_and_no_band_in_the_legend(run, figures, tmp_path):
    first = run.kept_steps[1]  # a live run in its first step over: one point per panel
    plots.plot_steps([first], "accuracy", "macs", tmp_path / "steps.svg")
    axes = figures[0].axes
    assert list(axes[-1].get_xticks()) == [1]
    assert [t.get_text() for t in axes[-1].get_xticklabels()] == ["1\n5"]
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend == ["chosen candidate"]  # no band drawn, none named
    assert not [c for c in axes[0].collections if not isinstance(c, PathCollection)]


def test_the_progress_plot_of_one_candidate_has_integer_ticks(run, figures, tmp_path):
    plots.plot_progress(replace(run, candidates=run.candidates[:1]), tmp_path / "p.svg")
    (ax,) = figures[0].axes
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_the_plots_label_metrics_by_their_display_names(run, figures, tmp_path):
    rnn = [replace(c, metrics={"perplexity": 1.0, "edge_cost": 1e4}) for c in run.candidates]
    plots.plot_steps(replace(run, candidates=rnn).kept_steps, "perplexity", "edge_cost",
                     tmp_path / "s.svg")  # fmt: skip
    plots.plot_pareto(rnn, "perplexity", "edge_cost", False, None, tmp_path / "p.svg")
    steps, pareto = figures
    assert steps.axes[-1].get_ylabel() == "edge cost (E·nhid²) (log)"
    assert pareto.axes[0].get_xlabel() == "edge cost (E·nhid²) (log)"
    assert pareto.axes[0].get_title().startswith("perplexity vs edge cost (E·nhid²): ")


def test_the_steps_plot_without_a_cost_has_two_panels(run, figures, tmp_path):
    plots.plot_steps(run.kept_steps, "accuracy", None, tmp_path / "steps.svg")
    assert [ax.get_ylabel() for ax in figures[0].axes] == ["score", "accuracy"]


def _undominated(points: list[tuple[float, float]], higher: bool) -> set[tuple[float, float]]:
    """The (cost, quality) points no other point matches or beats on both, by brute force."""
    sign = 1 if higher else -1

    def beats(a, b):
        return a != b and a[0] <= b[0] and sign * a[1] >= sign * b[1]

    return {p for p in points if not any(beats(q, p) for q in points)}


@pytest.mark.parametrize("higher", [True, False])
def test_the_pareto_plot_joins_the_undominated_candidates(run, figures, tmp_path, higher):
    quality = "accuracy"
    cands = list(run.candidates)
    # a candidate without a cost is left out of the plot, and counted out of its title
    cands.append(replace(cands[0], metrics={quality: 0.5}))
    best = run.best
    path = tmp_path / "pareto.svg"
    assert plots.plot_pareto(cands, quality, "macs", higher, best, path) == path
    (ax,) = figures[0].axes
    points = [(c.metrics["macs"], c.metrics[quality]) for c in run.candidates if c.ok]
    undominated = _undominated(points, higher)
    if not higher:  # lower is better: the cheapest candidate is the best too, a front of one
        assert len(undominated) == 1 and not ax.get_lines()
    else:
        (front,) = ax.get_lines()
        drawn = set(zip(front.get_xdata(), front.get_ydata(), strict=True))
        assert drawn == undominated and len(drawn) > 1
        assert list(front.get_xdata()) == sorted(front.get_xdata())
    assert np.allclose(
        ax.collections[-1].get_offsets(), [[best.metrics["macs"], best.metrics[quality]]]
    )
    assert ax.get_title() == f"{quality} vs MACs: every candidate ({len(points)})"
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "MACs (log)"


def test_a_pareto_front_of_one_point_is_neither_drawn_nor_named(run, figures, tmp_path):
    best = max(run.candidates, key=lambda c: c.score)
    # the cheapest candidate is also the most accurate: it dominates every other
    alone = replace(best, metrics={"accuracy": 0.99, "macs": 1e3})
    plots.plot_pareto([*run.candidates, alone], "accuracy", "macs", True, alone, tmp_path / "p.svg")
    (ax,) = figures[0].axes
    assert not ax.get_lines()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["candidates", "best score"]


def test_the_progress_plot_steps_up_to_each_new_best_score(run, figures, tmp_path):
    path = tmp_path / "progress.svg"
    assert plots.plot_progress(run, path, title="tiny") == path
    (ax,) = figures[0].axes
    scores = [0.50, 0.55, 0.60, np.nan, 0.58, 0.65, 0.62, 0.61]  # in evaluation order
    (curve,) = ax.get_lines()
    assert list(curve.get_xdata()) == list(range(1, 9))
    assert np.allclose(curve.get_ydata(), [0.50, 0.55, 0.60, 0.60, 0.60, 0.65, 0.65, 0.65])
    dots = ax.collections[0].get_offsets()
    assert np.allclose(dots, np.c_[np.arange(1, 9), scores], equal_nan=True)
    assert ax.get_title() == "tiny"


def test_the_comparison_plot_draws_one_curve_per_run_named_letter_for_letter(
    run, figures, tmp_path
):
    early = replace(run, candidates=run.candidates[:3])
    path = tmp_path / "compare.svg"
    assert plots.plot_comparison({"full": run, "cost $5": early}, path) == path
    (ax,) = figures[0].axes
    full, short = ax.get_lines()
    assert [full.get_label(), short.get_label()] == ["full", r"cost \$5"]
    assert np.allclose(full.get_ydata(), run.best_so_far())
    assert np.allclose(short.get_ydata(), early.best_so_far())
    assert list(short.get_xdata()) == [1, 2, 3]


def _drawn_points(line) -> list[tuple[float, float]]:
    """The points of ``line`` that its marker draws (none without a marker)."""
    if line.get_marker() in (None, "", "None", " "):
        return []
    every = line.get_markevery()
    xy = list(zip(line.get_xdata(), line.get_ydata(), strict=True))
    return xy if every is None else [xy[i] for i in every]


def test_a_best_score_curve_of_one_point_is_drawn_as_a_dot(run, figures, tmp_path):
    # a step curve through one finite point draws no segment: a run of one candidate (or whose
    # first score came last) was named in the comparison's legend and not seen
    first = replace(run, candidates=run.candidates[:1])
    late = [replace(c, status="failed", score=-math.inf) for c in run.candidates[:2]]
    late_run = replace(run, candidates=[*late, run.candidates[2]])
    plots.plot_comparison({"full": run, "one": first, "late": late_run}, tmp_path / "c.svg")
    plots.plot_progress(first, tmp_path / "p.svg")
    full, one, late_line = figures[0].axes[0].get_lines()
    assert _drawn_points(full) == []  # a curve with steps keeps its look
    assert _drawn_points(one) == [(1, run.candidates[0].score)]
    assert _drawn_points(late_line) == [(3, run.candidates[2].score)]
    (best,) = figures[1].axes[0].get_lines()
    assert _drawn_points(best) == [(1, run.candidates[0].score)]


def test_a_comparison_of_many_runs_tells_each_apart_and_keeps_its_legend_off_the_curves(
    run, figures, tmp_path
):
    """Pins that a comparison of seeds (40 runs here; 10 colours in matplotlib's cycle) gives
    each run its own colour and line style, and puts the legend of many runs below the plot."""
    runs = {f"seed {i}": replace(run, candidates=run.candidates[: 1 + i % 8]) for i in range(40)}
    plots.plot_comparison(runs, tmp_path / "many.svg")
    (ax,) = figures[0].axes
    looks = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()]
    assert len(looks) == 40 and len(set(looks)) == 40
    assert ax.get_legend() is None
    (legend,) = figures[0].legends
    assert [t.get_text() for t in legend.get_texts()] == list(runs)
    few = dict(list(runs.items())[: plots.LEGEND_INSIDE])
    plots.plot_comparison(few, tmp_path / "few.svg")
    (ax,) = figures[1].axes
    assert ax.get_legend() is not None and not figures[1].legends


def test_a_step_with_no_finite_value_leaves_a_gap(run, figures, tmp_path):
    first, *rest = run.kept_steps
    blank = replace(first, candidates=[replace(c, metrics={}) for c in first.candidates])
    plots.plot_steps([blank, *rest], "accuracy", None, tmp_path / "steps.svg")
    quality_line = figures[0].axes[1].get_lines()[0]
    assert np.isnan(quality_line.get_ydata()[0])
    assert not np.isnan(quality_line.get_ydata()[1:]).any()


def _says_no_values(ax) -> bool:
    """Whether ``ax`` names no y values (no ticks) and says why in its middle."""
    said = [t.get_text() for t in ax.texts]
    return not list(ax.get_yticks()) and any(t.startswith("no candidate has ") for t in said)


def test_plots_of_a_run_where_nothing_scored_say_so_and_count_the_candidates(
    run, figures, tmp_path
):
    # every candidate broke a constraint (--max-macs): costs, no score, no accuracy; the plots
    # showed empty axes from -0.04 to 0.04 with a single x tick at 0 candidates evaluated
    rejected = [
        replace(c, status="rejected", score=-math.inf, metrics={"macs": c.metrics["macs"]})
        for c in run.candidates
    ]
    none = replace(run, candidates=rejected)
    n = len(rejected)
    plots.plot_progress(none, tmp_path / "progress.svg")
    plots.plot_comparison({"a": none, "b": replace(none, candidates=rejected[:3])},
                          tmp_path / "compare.svg")  # fmt: skip
    plots.plot_steps(none.kept_steps, "accuracy", "macs", tmp_path / "steps.svg")
    progress, comparison, steps = figures
    for ax in (*progress.axes, *comparison.axes):
        assert _says_no_values(ax)
        lo, hi = ax.get_xlim()
        assert lo <= 1 and hi >= n  # the candidates evaluated, 1 to n
        shown = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert shown and min(shown) >= 1 and max(shown) <= n
    score, quality, cost = steps.axes
    assert _says_no_values(score) and _says_no_values(quality)
    assert list(cost.get_yticks()) and not cost.texts  # the costs are there


def _narrow(run: RunData, base: float) -> RunData:
    """``run`` with accuracies moved to ``base`` plus a few thousandths: a perplexity-like
    range far from 0, which matplotlib labels with an offset by default."""
    cands = [
        replace(c, metrics=c.metrics | {"accuracy": base + c.metrics["accuracy"] / 100})
        if "accuracy" in c.metrics
        else c
        for c in run.candidates
    ]
    return replace(run, candidates=cands)


def _assert_plain_y(ax) -> None:
    """``ax``'s y ticks (drawn: the SVG was written) read as plain numbers, no offset."""
    formatter = ax.yaxis.get_major_formatter()
    assert formatter.get_offset() == ""
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and not any("e" in t or "×" in t for t in labels), labels


def test_every_plot_labels_its_y_axis_with_plain_numbers_without_an_offset(run, figures, tmp_path):
    narrow = _narrow(run, 369.91)
    plots.plot_steps(narrow.kept_steps, "accuracy", "macs", tmp_path / "steps.svg")
    plots.plot_pareto(narrow.candidates, "accuracy", "macs", False, None, tmp_path / "p.svg")
    high = replace(run, candidates=[replace(c, score=c.score + 1000) for c in run.candidates])
    plots.plot_progress(high, tmp_path / "progress.svg")
    plots.plot_comparison({"a": high}, tmp_path / "compare.svg")
    steps, pareto, progress, comparison = figures
    score, quality, cost = steps.axes
    for ax in (score, quality, *pareto.axes, *progress.axes, *comparison.axes):
        _assert_plain_y(ax)
    labels = [float(t.get_text().replace("−", "-")) for t in quality.get_yticklabels()]
    assert min(labels) > 369 and max(labels) < 371  # the values themselves, not their offset
    assert cost.get_yscale() == "log"  # a log axis keeps its powers of ten


def test_a_plot_drawn_twice_is_the_same_file(run, tmp_path):
    # matplotlib stamps an SVG with the time it was written and names its clip paths and
    # markers by a random salt: two reports of one run folder (or of two runs of one seed)
    # differed in every plot
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    plots.plot_progress(run, first)
    plots.plot_progress(run, second)
    assert first.read_bytes() == second.read_bytes()
    assert b"<dc:date>" not in first.read_bytes() and b'clip-path="url(#' in first.read_bytes()


def _labels_in_view(ax) -> list[str]:
    """The x tick labels (major and minor) of ``ax`` inside its view, as drawn."""
    lo, hi = ax.get_xlim()
    ticks = [*ax.get_xticklabels(), *ax.get_xticklabels(minor=True)]
    return [t.get_text() for t in ticks if t.get_text() and lo <= t.get_position()[0] <= hi]


@pytest.mark.parametrize(
    ("lo", "hi", "first"),
    [
        (66834.0, 188_800.0, "8"),  # 0.45 decade around 10^5: "10^5" alone before
        (1e4, 1e7, None),  # three decades: matplotlib's own powers of ten stay
    ],
)
def test_a_log_axis_shows_at_least_two_labelled_ticks(tmp_path, lo, hi, first) -> None:
    from matplotlib.ticker import LogLocator

    from autoshrink.report.mpl import Figure, save_figure

    fig = Figure()
    ax = fig.add_subplot()
    ax.scatter([lo, hi], [0.5, 0.9])
    ax.set_xscale("log")
    save_figure(fig, tmp_path / "cost.png")
    shown = _labels_in_view(ax)
    assert len(shown) >= 2, shown
    if first is None:
        assert isinstance(ax.xaxis.get_major_locator(), LogLocator)
    else:  # round values, every one labelled, sorted: the first one's mantissa
        assert shown[0].startswith(rf"$\mathdefault{{{first}\times10^"), shown


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (69632.0, 125504.0),  # the demo's MACs: 7, 8, 9 x 10^4 and 10^5, its top 40% bare
        (66834.0, 188_800.0),
        (1.1e5, 1.8e5),
        (2.1e5, 2.2e5),
        (3e5, 4e5),  # 3 and 4 x 10^5 alone, 91% of the view between them
    ],
)
def test_a_log_axis_under_a_decade_has_no_long_stretch_without_a_label(tmp_path, lo, hi) -> None:
    import math

    from autoshrink.report.mpl import Figure, save_figure

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    ax.scatter([lo, hi], [0.5, 0.9])
    ax.set_xscale("log")
    save_figure(fig, tmp_path / "cost.png")
    view = sorted(ax.get_xlim())
    ticks = [*ax.get_xticklabels(), *ax.get_xticklabels(minor=True)]
    at = sorted(t.get_position()[0] for t in ticks if t.get_text())
    at = [v for v in at if view[0] <= v <= view[1]]
    logs = [math.log10(v) for v in (view[0], *at, view[1])]
    widest = max(b - a for a, b in zip(logs, logs[1:], strict=False))
    assert len(at) >= 2 and widest <= 0.375 * (logs[-1] - logs[0]), at


def test_the_progress_plot_legend_hides_no_candidate(run, figures, tmp_path):
    # "lower right" covered a late candidate of a low score: the r1 demo's third of three,
    # score 0.31 under best-so-far 0.57, was drawn beneath the legend
    low_last = [0.42, 0.57, 0.31]
    cands = [replace(c, score=s) for c, s in zip(run.candidates[:3], low_last, strict=True)]
    plots.plot_progress(replace(run, candidates=cands), tmp_path / "progress.png")
    (ax,) = figures[0].axes
    box = ax.get_legend().get_window_extent()
    dots = ax.transData.transform(np.c_[np.arange(1, 4), low_last])
    assert not any(box.contains(x, y) for x, y in dots), (box, dots)
