"""Search strategies, ask/tell only: no torch, no files, no evaluator calls."""
