"""Signals held while the study storage is mid-step (`harness.sweep.signals`)."""

from __future__ import annotations

import signal

import pytest

from harness.sweep.signals import signals_held


def test_a_signal_inside_acts_after_the_block_once_delivered() -> None:
    steps = []
    with signals_held() as held:
        signal.raise_signal(signal.SIGINT)
        steps.append("the step finished")
    assert steps == ["the step finished"]
    with pytest.raises(KeyboardInterrupt):
        held.deliver()
    held.deliver()  # delivered once: nothing left


def test_a_second_signal_inside_acts_at_once_so_a_hung_step_can_be_stopped() -> None:
    before = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt), signals_held():
        signal.raise_signal(signal.SIGINT)
        steps.append("held")
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C again
        steps.append("never reached")
    assert steps == ["held"]
    assert signal.getsignal(signal.SIGINT) is before, "the handler is put back"
