"""Whether a process runs on this machine (:func:`process_running`): what tells a live lock
or temporary file from one a killed process left behind."""

from __future__ import annotations

import os


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no pid of any
        return False
    except PermissionError:
        return True
    return True
