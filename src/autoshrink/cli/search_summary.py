"""What ``autoshrink search`` prints when a search ends: the best cell as text, its score and
the complete cell's (:func:`print_cnn_scores`, :func:`print_rnn_scores`), the totals, why it
ended, and the exit status of a search that stopped early (:func:`stopped_early`)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

from autoshrink.nouns import count
from autoshrink.report.picture import to_text
from autoshrink.run_folder import RESULT
from autoshrink.search_result import SearchResult


def print_summary(result: SearchResult, *, as_json: bool = False) -> int:
    """Print the end of a search to stdout (``as_json``: the run's ``result.json`` instead);
    returns the command's exit status (0, or 1 when the strategy stopped early)."""
    if as_json:
        print((result.run_dir / RESULT).read_text(encoding="utf-8").strip())
        return stopped_early(result)
    print(to_text(result.cell), end="")
    if result.cell.kind == "rnn":
        print_rnn_scores(result)
    else:
        print_cnn_scores(result)
    screened = (result.screening or {}).get("screened_out")
    out = f" ({screened} screened out now)" if screened else ""  # this session's
    print(
        f"{count(result.evaluations, 'candidate')}{out}, {result.trained} trained now, "
        f"{result.seconds:.1f} s; results in {result.run_dir}"
    )
    if result.ended and not result.stopped:  # an early stop has its own message
        print(f"ended: {result.ended}")
    return stopped_early(result)


def print_cnn_scores(result: SearchResult) -> None:
    """The scores ``autoshrink search`` prints after a cnn search: the best cell's (with the
    cost its score reads, and its MACs) and the complete cell's."""
    best, start = result.best, result.start
    cost = result.config.score.cost if result.config is not None else "macs"
    acc = best.metrics.get("accuracy")
    costs = [cost_phrase(best.metrics, name) for name in dict.fromkeys((cost, "macs"))]
    print(
        f"best score {best.score:.4f} (accuracy {acc:.4f}, {', '.join(costs)}, "
        f"{count(result.cell.num_edges, 'edge')}, step {best.proposal.step})"
    )
    if "synthetic_accuracy" in best.metrics:  # --objective ood: what the accuracy mixes
        print(
            f"  (validation accuracy {best.metrics['val_accuracy']:.4f} on the training "
            f"domains, synthetic-domain accuracy {best.metrics['synthetic_accuracy']:.4f})"
        )
    if start is not None and start.ok:
        print(f"complete cell score {start.score:.4f} (accuracy {start.metrics['accuracy']:.4f})")
    elif start is not None:  # e.g. rejected by --max-macs: no accuracy, no score
        print(f"complete cell {start.status}: no score")


def cost_phrase(metrics: Mapping[str, float], name: str) -> str:
    """A cost of ``metrics`` as the search's summary prints it: ``114,560 MACs``, ``806 params``,
    ``1.473 ms table latency``, ``1,024 edge_cost``."""
    value = metrics.get(name, math.nan)
    if name.endswith("latency_ms"):
        return f"{value:.3f} ms {'table ' if name.startswith('table') else ''}latency"
    return f"{value:,.0f} {'MACs' if name == 'macs' else name}"


def stopped_early(result: SearchResult) -> int:
    """Exit status 0, or 1 with a one-line message when the strategy stopped early."""
    if result.stopped is None:
        return 0
    print(
        f"autoshrink: search stopped early: {result.stopped}; the best cell so far is in "
        f"{result.run_dir}; see journal.jsonl, and train the failed candidates again with "
        f"autoshrink search --resume {result.run_dir} --retry-failed",
        file=sys.stderr,
    )
    return 1


def print_rnn_scores(result: SearchResult) -> None:
    """The scores ``autoshrink search`` prints after an rnn search: the best cell's (with the
    cost its score reads, and its parameters) and the complete cell's (the cell before them,
    the totals after, as for a cnn search)."""
    best, start = result.best, result.start
    m = best.metrics
    cost = result.config.score.cost if result.config is not None else "edge_cost"
    costs = [cost_phrase(m, name) for name in dict.fromkeys((cost, "params"))]
    print(
        f"best score {best.score:.4f} (perplexity {m.get('perplexity', float('nan')):.2f}, "
        f"{', '.join(costs)}, {count(result.cell.num_edges, 'edge')}, step {best.proposal.step})"
    )
    if start is not None and not start.ok:  # e.g. rejected by a constraint
        print(f"complete cell {start.status}: no score")
    elif start is not None:
        print(
            f"complete cell score {start.score:.4f} "
            f"(perplexity {start.metrics.get('perplexity', float('nan')):.2f})"
        )
