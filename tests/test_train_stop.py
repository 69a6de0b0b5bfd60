"""The training loop's stop flag: SIGTERM and a first Ctrl-C request a save-and-stop."""

import os
import signal
import time

import pytest

from pstroke.train.loop import _StopFlag


def _deliver(signum: int) -> None:
    """Send `signum` to this process and give Python time to run its handler."""
    os.kill(os.getpid(), signum)
    time.sleep(0.05)


def test_sigterm_requests_stop():
    before = signal.getsignal(signal.SIGTERM)
    with _StopFlag() as stop:
        assert not stop.requested
        _deliver(signal.SIGTERM)

        assert stop.requested
        assert stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_sigint_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    assert before is signal.default_int_handler, "the test needs Python's default Ctrl-C handler"
    with _StopFlag() as stop:
        _deliver(signal.SIGINT)

        assert stop.requested
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
