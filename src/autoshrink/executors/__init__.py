"""Executors run a batch of candidate evaluations: in this process, a process pool, or Ray."""
