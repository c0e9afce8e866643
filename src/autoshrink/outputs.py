"""Where a command may write: checked before it computes or writes anything.

Each command that fills an output folder leaves files that say it did (:data:`SIGNATURES`).
:func:`claim_folder` refuses a folder that holds another command's results -- a Single-Path
search would otherwise replace a search's ``result.json``, or training a checkpointed
supernet's weights -- and an ``--out`` that is a file. :func:`check_output_file` refuses a file
path that cannot be written (a folder in its place, a file in the place of its folder), so a
command that measures for minutes does not fail only when it saves.
"""

from __future__ import annotations

from pathlib import Path

from autoshrink.errors import ConfigError
from autoshrink.run_folder import CONFIG, FINGERPRINT, JOURNAL

SIGNATURES: dict[str, tuple[str, ...]] = {
    "search": (JOURNAL, CONFIG, FINGERPRINT),
    "singlepath": ("settings.json", "decisions.jsonl"),
    "train": ("recipe.json", "log.jsonl", "metrics.json"),
    "export": ("export.json",),
}
"""For each command, the files of which any one marks a folder as holding its results."""


def holder(folder: Path) -> tuple[str, str] | None:
    """``(command, file)``: the command whose results ``folder`` holds, by the first of its
    signature files found there; ``None`` for a missing, empty or unmarked folder."""
    for command, files in SIGNATURES.items():
        for name in files:
            if (folder / name).exists():
                return command, name
    return None


def claim_folder(folder: str | Path, command: str, flag: str = "--out") -> Path:
    """Check that ``command`` may write its results into ``folder`` (created later by the
    caller): not a file, and not holding another command's results. Returns it as a Path."""
    if command not in SIGNATURES:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(SIGNATURES)}")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: a file is there, not a folder")
    found = holder(path)
    if found is not None and found[0] != command:
        raise ConfigError(
            f"{flag} {path} holds the results of `autoshrink {found[0]}` ({found[1]}); "
            f"{command} would write over them: choose another {flag}"
        )
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """Check that a file can be written at ``path`` -- no folder in its place, no file in the
    place of a folder above it (missing folders are created when it is saved) -- before the
    work that produces it starts. Returns it as a Path."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {target}: a folder is there, not a file")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {target}: {parent} is a file, not a folder")
            break
    return target
