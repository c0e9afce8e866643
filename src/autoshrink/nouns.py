"""Counted nouns in what the toolkit prints: ``count(6, "edge")`` is "6 edges", ``count(1,
"edge")`` "1 edge" (messages, progress descriptions, report headings and titles)."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 edge", "6 edges"; a noun ending in a
    consonant and "y" ends in "ies" ("1 entry", "3 entries")."""
    if n == 1:
        return f"{n} {noun}"
    if noun.endswith("y") and noun[-2:-1] not in ("", *"aeiou"):
        return f"{n} {noun[:-1]}ies"
    return f"{n} {noun}s"
