"""Where a command may write: checked before it computes or writes anything.

Each command that fills an output folder leaves files that say it did (:data:`SIGNATURES`).
:func:`claim_folder` refuses a folder that holds another command's results -- a Single-Path
search would otherwise replace a search's ``result.json``, or training a checkpointed
supernet's weights --, an earlier run of the same command unless it is resumed, files of
someone else's that the command would write over, and an ``--out`` that is a file.
:func:`check_output_file` refuses a file path that cannot be written (a folder, a pipe or a
device in its place, a file in the place of its folder). Both try a scratch file where the
output will go (:func:`check_writable`), so a command that measures for minutes does not fail
only when it saves.
"""

from __future__ import annotations

import json
import logging
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from autoshrink.atomic_write import remove_dead_temporaries, through_link, write_json
from autoshrink.errors import ConfigError
from autoshrink.journal import RunLock
from autoshrink.run_folder import CONFIG, FINGERPRINT, JOURNAL
from autoshrink.training.train_folder import LOG, METRICS, RECIPE

SIGNATURES: dict[str, tuple[str, ...]] = {
    "search": (JOURNAL, CONFIG, FINGERPRINT),
    "singlepath": ("settings.json", "decisions.jsonl"),
    "train": (RECIPE, LOG, METRICS),
    "export": ("export.json",),
    "bench": ("bench.json",),
    "report": ("comparison.json",),  # a comparison page's folder (a run's report is inside it)
}
"""For each command, the files of which any one marks a folder as holding its results."""

log = logging.getLogger(__name__)


def mark_unfinished(path: Path, command: str) -> None:
    """Write ``command``'s signature file ``path`` (:data:`SIGNATURES`) as a note that its
    output is being written, before the first file: one killed midway leaves a folder that is
    still marked as its own (the next run writes over it), and whose signature file no longer
    describes the files of an earlier run; the finished output replaces the note."""
    write_json(
        path,
        {
            "status": "incomplete",
            "note": f"autoshrink {command} began writing this folder and did not finish; run it "
            "again",
        },
    )


def unfinished(path: Path) -> bool:
    """Whether the signature file ``path`` is :func:`mark_unfinished`'s note: its command
    stopped before the end, and left nothing finished to keep."""
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(note, dict) and note.get("status") == "incomplete"


#: The commands that continue a run of theirs in its folder (``--resume``).
RESUMABLE = ("search", "singlepath", "train")


def holder(folder: Path) -> tuple[str, str] | None:
    """``(command, file)``: the command whose results ``folder`` holds, by the first of its
    signature files found there; ``None`` for a missing, empty or unmarked folder."""
    for command, files in SIGNATURES.items():
        for name in files:
            if (folder / name).exists():
                return command, name
    return None


def claim_folder(
    folder: str | Path,
    command: str,
    flag: str = "--out",
    *,
    resume: bool | None = None,
    writes: Iterable[str] = (),
) -> Path:
    """Check that ``command`` may write its results into ``folder`` (created later by the
    caller): not a file, somewhere this process can write, and not holding another command's
    results -- nor, with ``resume=False``, an earlier run of ``command`` (resume it instead)
    unless it stopped before its end (:func:`unfinished`),
    nor, unless an earlier run of ``command`` wrote them, files of the names in ``writes`` (the
    files it will write: someone else's). Returns it as a Path."""
    if command not in SIGNATURES:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(SIGNATURES)}")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: a file is there, not a folder")
    check_writable(path, flag)
    found = holder(path)
    if found is not None and found[0] != command:
        raise ConfigError(
            f"{flag} {path} holds the results of `autoshrink {found[0]}` ({found[1]}); "
            f"{command} would write over them: choose another {flag}"
        )
    if found is not None and resume is False and not unfinished(path / found[1]):
        go_on = "continue it with --resume or " if command in RESUMABLE else ""
        raise ConfigError(
            f"{flag} {path} already holds the results of an `autoshrink {command}` run "
            f"({found[1]}); {go_on}choose another {flag}"
        )
    taken = sorted(name for name in writes if found is None and (path / name).exists())
    if taken:
        raise ConfigError(
            f"{flag} {path} holds {', '.join(taken)}, which no `autoshrink {command}` wrote; "
            f"{command} would write over it: choose another {flag}"
        )
    return path


@contextmanager
def held_folder(folder: Path, *, resume: bool = False) -> Iterator[None]:
    """Run the body holding ``folder`` (made if missing) for this process alone: an exclusive
    :class:`~autoshrink.journal.RunLock` on its ``run.lock``, so that a second run there (a
    second ``--resume``, or a new run started before the first wrote anything) stops at once
    with a :class:`~autoshrink.errors.JournalError` naming the first one's process instead of
    writing into the same files. A ``resume`` first removes the temporary files that a run
    killed while it replaced a file there left behind
    (:func:`~autoshrink.atomic_write.remove_dead_temporaries`: a checkpoint's are as large as
    the checkpoint). The folders made for the lock are removed again when the body left
    nothing in them (a start refused or stopped before it wrote anything)."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with RunLock(folder):
            for tmp in remove_dead_temporaries(folder) if resume else ():
                log.info("removed %s, left by a run killed while it wrote the file", tmp)
            yield
    finally:
        for path in made:
            try:
                path.rmdir()
            except OSError:  # something was written there, and so above it
                break


def check_output_file(path: str | Path, flag: str) -> Path:
    """Check that a file can be written at ``path`` -- no folder, pipe or device in its place
    (saved atomically, the file would replace ``/dev/null``), no file in the place of a folder
    above it (missing folders are created when it is saved) -- before the work that produces
    it starts. Returns it as a Path."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {target}: a folder is there, not a file")
    kind = special_file_kind(target)
    if kind is not None:  # the atomic save would rename a file over it
        raise ConfigError(f"{flag} {target}: not a regular file ({kind}); give a file path")
    led = through_link(target)  # a symlink: the file is written where it leads
    if led != target and not led.parent.is_dir():
        raise ConfigError(
            f"{flag} {target}: a symlink to {target.readlink()}, whose folder does not exist"
        )
    check_writable(led.parent, flag, target)
    return target


def special_file_kind(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder (``"a
    pipe"``, ``"a device"``, ``"a socket"``); ``None`` otherwise."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else None


def check_writable(folder: Path, flag: str, named: Path | None = None) -> None:
    """Raise a ConfigError naming ``named`` (default ``folder``) when nothing can be written
    in ``folder`` or, while it does not exist yet, in the nearest path above it that does: a
    file there, or a folder where a scratch file cannot be made and removed (permission bits
    alone do not tell, for root or on /proc)."""
    dangling = next(
        (p for p in (folder, *folder.parents) if p.is_symlink() and not p.exists()), None
    )
    if dangling is not None:
        target = dangling.readlink()
        there = target if target.is_absolute() else dangling.parent / target
        why = "leads nowhere (a loop of symlinks?)" if there.is_symlink() else "does not exist"
        raise ConfigError(
            f"{flag} {named or folder}: {dangling} is a symlink to {target}, which {why}"
        )
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise ConfigError(f"{flag} {named or folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(
            f"{flag} {named or folder}: cannot write in {existing} ({err.strerror})"
        ) from None
