"""Tabular NAS-Bench-201 evaluation: the flat tables, the opt-in official archive reader, one
explicit query function, and the evaluator split between what a search may see (validation
numbers, costs) and what only the reporting code may see (test numbers)."""

from autoshrink.tabular.evaluator import Reporter, SearchEvaluator
from autoshrink.tabular.loader import load_tables
from autoshrink.tabular.tables import (
    FILE_12EPOCH,
    FILE_200EPOCH,
    SPLITS,
    NB201Tables,
    load_flat_tables,
    query,
)

__all__ = [
    "FILE_12EPOCH",
    "FILE_200EPOCH",
    "SPLITS",
    "NB201Tables",
    "Reporter",
    "SearchEvaluator",
    "load_flat_tables",
    "load_tables",
    "query",
]
