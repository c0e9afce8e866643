"""SIGINT and SIGTERM as a clean stop: of a search, never in the middle of a journal record
(:class:`StopSignals`, kept through libraries that install their own: :func:`handlers_kept`);
of a checkpointed run, with the way to go on (:func:`stop_says_resume`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by SIGINT (Ctrl-C) or SIGTERM; the message says how to resume it."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """While active (a context manager, main thread only): SIGINT and SIGTERM raise
    :class:`SearchInterrupted` -- deferred to the end of a :meth:`held` block, so that a
    journal record is never cut by a signal. ``received`` is the last signal handled (a
    library that catches the exception may raise a plain ``KeyboardInterrupt`` instead: Ray's
    waits do)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}
        self._held = False
        self._pending: int | None = None
        self.received: int | None = None

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        if self._held:
            self._pending = signum
        else:
            raise SearchInterrupted(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Defer SIGINT and SIGTERM until the block ends."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise SearchInterrupted(signum)


@contextmanager
def handlers_kept() -> Iterator[None]:
    """Run the body, which installs SIGINT and SIGTERM handlers of its own (``ray.init`` makes
    SIGTERM ``sys.exit``, and its native handler then aborts the process), and give back the
    handlers there were before -- a search's :class:`StopSignals` -- after (main thread only:
    elsewhere no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:  # None: set outside Python, nothing to give back
                signal.signal(sig, handler)


@contextmanager
def sigint_deferred() -> Iterator[list[int]]:
    """Run the body with a first SIGINT (Ctrl-C) recorded in the list it yields instead of
    raised -- for a call that a stop would leave half done (Ray starting its processes, which
    it then does not know to stop) -- and a second one raised at once as
    :class:`SearchInterrupted`; the handler there was before comes back after (main thread
    only: elsewhere the list stays empty)."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def record(signum: int, frame: object) -> None:
        if got:
            raise SearchInterrupted(signum)
        got.append(signum)

    before = signal.signal(signal.SIGINT, record)
    try:
        yield got
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


@contextmanager
def stop_says_resume(
    what: str, out: str | Path, newest_checkpoint: Callable[[], int | None]
) -> Iterator[None]:
    """Run the body so that SIGINT and SIGTERM stop it as a :class:`SearchInterrupted` that
    says how to go on: the same command with ``--resume`` continues ``what`` (``"training"``)
    from the checkpoint of the epoch ``newest_checkpoint()`` gives, read when the signal comes,
    or starts it again from epoch 1 when that is ``None`` (SIGTERM would end the process
    without a word)."""
    try:
        with StopSignals():
            yield
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        epoch = newest_checkpoint()
        go_on = (
            f"continue it with the same command and --resume (from the checkpoint of epoch "
            f"{epoch} in {out})"
            if epoch is not None
            else f"no checkpoint was written yet, so the same command with --resume starts "
            f"it again from epoch 1 in {out}"
        )
        raise SearchInterrupted(
            signum, f"{what} stopped by {signal.Signals(signum).name}; {go_on}"
        ) from None
