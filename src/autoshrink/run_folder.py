"""The files of a search's run folder, and the fingerprint that keeps a resume honest.

A run folder holds ``config.json`` (the resolved settings), ``fingerprint.json`` (the hash of
the settings that decide which candidates the search asks for, and those settings), the
``journal.jsonl`` of evaluated candidates, ``run.lock`` while a search runs and, when it ends,
``best_cell.json`` with its picture and ``result.json``. :func:`check_fingerprint` refuses to
resume with a config edited since the journal was made, naming the settings that changed.
No torch in this module: the report reads run folders with these names too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from autoshrink.atomic_write import write_json
from autoshrink.errors import JournalError
from autoshrink.settings_diff import differences, first_three

if TYPE_CHECKING:
    from autoshrink.config import SearchConfig

log = logging.getLogger(__name__)

CONFIG, JOURNAL, RESULT, BEST_CELL = "config.json", "journal.jsonl", "result.json", "best_cell.json"
FINGERPRINT = "fingerprint.json"


def write_fingerprint(run_dir: Path, config: SearchConfig) -> None:
    """Write ``fingerprint.json``: the hash and the search settings the journal is made with."""
    out = {
        "format": "autoshrink.fingerprint/1",
        "config_hash": config.fingerprint(),
        "settings": config.search_settings(),
    }
    write_json(run_dir / FINGERPRINT, out, sort_keys=True)


def check_fingerprint(run_dir: Path, config: SearchConfig) -> None:
    """Raise a :class:`JournalError` naming the changed settings when ``config`` is not the
    config the run's journal was made with; a folder without ``fingerprint.json`` (made before
    there were fingerprints) gets one from its ``config.json``."""
    path = run_dir / FINGERPRINT
    if not path.is_file():
        log.warning(
            "%s: no %s (an older run folder); writing it from %s", run_dir, FINGERPRINT, CONFIG
        )
        write_fingerprint(run_dir, config)
        return
    try:
        saved = json.loads(path.read_text())
        saved_hash, settings = str(saved["config_hash"]), saved.get("settings", {})
        if not isinstance(settings, dict):
            raise TypeError(f"settings is a {type(settings).__name__}, not an object")
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise JournalError(f"{path}: not a fingerprint file ({err})") from None
    if saved_hash == config.fingerprint():
        return
    changed = differences(settings, config.search_settings())
    raise JournalError(
        f"{run_dir / CONFIG} is not the config the journal was made with (changed: "
        f"{first_three(changed) or 'unknown'}; {FINGERPRINT} holds hash {saved_hash[:12]}, "
        f"config.json hashes to {config.fingerprint()[:12]}); restore it or start a new search"
    )
