"""SIGINT and SIGTERM as a clean stop (stop_signals.py): raised at once, deferred to the end of
a held block (a journal record being written), handlers given back, and a checkpointed run's
stop that says how to go on. The signals are sent to this process itself."""

from __future__ import annotations

import os
import signal

import pytest

from autoshrink.stop_signals import SearchInterrupted, StopSignals, stop_says_resume


def send(signum: int) -> None:
    """Send ``signum`` to this process; its handler runs before the next statement."""
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_body_at_once_and_the_handlers_are_given_back(signum) -> None:
    before = signal.getsignal(signum)
    ran_on = False
    with pytest.raises(SearchInterrupted) as caught, StopSignals() as signals:
        send(signum)
        ran_on = True
    assert not ran_on and caught.value.signum == signum and signals.received == signum
    assert str(caught.value) == f"stopped by {signal.Signals(signum).name}"
    assert signal.getsignal(signum) is before


def test_a_signal_in_a_held_block_stops_the_search_when_the_block_ends() -> None:
    steps = []
    with pytest.raises(SearchInterrupted) as caught, StopSignals() as signals:
        with signals.held():  # a journal record being written
            send(signal.SIGTERM)
            steps.append("record written whole")
        steps.append("next record")
    assert steps == ["record written whole"] and caught.value.signum == signal.SIGTERM


def test_after_a_held_block_a_signal_stops_at_once_again() -> None:
    steps = []
    with pytest.raises(SearchInterrupted), StopSignals() as signals:
        with signals.held():
            steps.append("record")
        send(signal.SIGINT)
        steps.append("after the signal")
    assert steps == ["record"]


def test_a_checkpointed_run_stopped_by_a_signal_says_how_to_go_on(tmp_path) -> None:
    newest: list[int | None] = [None]
    with (
        pytest.raises(SearchInterrupted) as caught,
        stop_says_resume("training", tmp_path, lambda: newest[0]),
    ):
        newest[0] = 3  # read when the signal comes, not when the run starts
        send(signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM
    assert str(caught.value) == (
        "training stopped by SIGTERM; continue it with the same command and --resume (from the "
        f"checkpoint of epoch 3 in {tmp_path})"
    )
    with (
        pytest.raises(SearchInterrupted) as caught,
        stop_says_resume("training", tmp_path, lambda: None),
    ):
        send(signal.SIGINT)
    assert str(caught.value) == (  # it said "from the newest checkpoint", of which there was none
        "training stopped by SIGINT; no checkpoint was written yet, so the same command with "
        f"--resume starts it again from epoch 1 in {tmp_path}"
    )
    with (
        pytest.raises(SearchInterrupted, match="^training stopped by SIGINT;"),
        stop_says_resume("training", tmp_path, lambda: 1),
    ):
        raise KeyboardInterrupt  # a library's own, without a signal number
