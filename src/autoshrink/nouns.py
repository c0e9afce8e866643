"""Counted nouns in what the toolkit prints: ``count(6, "edge")`` is "6 edges", ``count(1,
"edge")`` "1 edge" (messages, progress descriptions, report headings and titles)."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural (an added "s") unless ``n`` is 1: "1 edge", "6 edges"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
