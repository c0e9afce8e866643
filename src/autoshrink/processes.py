"""Processes on this machine: whether one runs (:func:`process_running`: what tells a live
lock or temporary file from one a killed process left behind), a worker that ends with the
process that started it (:func:`die_with_parent`), and the end of a process whose work is done
without the interpreter's teardown (:func:`exit_now`)."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
from typing import NoReturn

log = logging.getLogger(__name__)

#: ``prctl``'s option that names the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no pid of any
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process (a worker of ``multiprocessing``) when its parent
    dies, on Linux: a driver killed by ``kill -9`` or the OOM killer then leaves no worker
    training on, orphaned, for minutes. A parent gone already ends it now. Elsewhere nothing:
    such a worker ends at its next message instead."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as err:  # no prctl in this C library
        log.debug("prctl(PR_SET_PDEATHSIG) failed: %s", err)
        return
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the prctl
        os._exit(1)


def exit_now(status: int) -> NoReturn:
    """End this process now with exit ``status``, skipping the interpreter's teardown (which
    takes a process that imported torch about half a second): logging and the standard streams
    are flushed first; ``atexit`` handlers do not run."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
