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


def test_sigterm_logged_on_arrival(caplog):
    with caplog.at_level("WARNING", logger="pstroke.train.loop"), _StopFlag():
        _deliver(signal.SIGTERM)
        messages = [record.getMessage() for record in caplog.records]

    assert messages == ["SIGTERM received: saving after the current step"]


def test_ctrl_c_logged_on_arrival(caplog):
    with caplog.at_level("WARNING", logger="pstroke.train.loop"), _StopFlag():
        _deliver(signal.SIGINT)
        messages = [record.getMessage() for record in caplog.records]

    assert messages == ["Ctrl-C received: saving after the current step; press Ctrl-C again to quit without saving"]


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


class _FakeState:
    """The two fields `_run_steps` reads from a train state."""

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self.step = jnp.zeros((), jnp.int32)
        self.rng = jax.random.PRNGKey(0)


class _FakeCheckpointer:
    def __init__(self):
        self.saved = []

    def should_save(self, step):
        return False

    def save(self, step, state, data_state, force=False):
        self.saved.append(step)


class _FakeData:
    def __next__(self):
        return {}

    def get_state(self):
        return {}


def _stop_in_step(stop):
    """Return a step function during which SIGTERM lands."""

    def step_fn(state, batch, rng):
        stop.requested, stop.signal_name = True, "SIGTERM"
        return state, {"loss": 1.0, "ce": 0.5, "mse": 0.5, "tokens": 8.0}

    return step_fn


@pytest.mark.parametrize("steps, expected", [(1, "training is complete"), (3, "saved step 1 of 3")])
def test_stop_message_says_whether_steps_remain(tmp_path, caplog, steps, expected):
    import ml_collections

    from pstroke.train.loop import _run_steps

    stop = _StopFlag()
    checkpointer = _FakeCheckpointer()
    config = ml_collections.ConfigDict({"steps": steps, "log_every": 1})
    with caplog.at_level("WARNING"):
        _run_steps(_FakeState(), _stop_in_step(stop), _FakeData(), checkpointer, tmp_path, config, stop)

    assert checkpointer.saved == [1]
    assert expected in caplog.text
    assert ("Rerun to continue" in caplog.text) == (steps > 1)


@pytest.mark.parametrize("steps", [1, 3])
def test_stop_raised_after_save_on_request(tmp_path, steps):
    import ml_collections

    from pstroke.train.loop import StopRequested, _run_steps

    stop = _StopFlag()
    checkpointer = _FakeCheckpointer()
    config = ml_collections.ConfigDict({"steps": steps, "log_every": 1})
    with pytest.raises(StopRequested) as raised:
        _run_steps(_FakeState(), _stop_in_step(stop), _FakeData(), checkpointer, tmp_path, config, stop,
                   raise_on_stop=True)

    assert checkpointer.saved == [1]
    assert raised.value.signal_name == "SIGTERM"
    assert raised.value.step == 1
    assert raised.value.steps == steps


def test_stop_before_first_step_saves_nothing(tmp_path, caplog):
    import ml_collections

    from pstroke.train.loop import _run_steps

    stop = _StopFlag()
    stop.requested, stop.signal_name = True, "SIGTERM"
    checkpointer = _FakeCheckpointer()
    config = ml_collections.ConfigDict({"steps": 3, "log_every": 1})
    with caplog.at_level("WARNING"):
        _run_steps(_FakeState(), _stop_in_step(stop), _FakeData(), checkpointer, tmp_path, config, stop)

    assert checkpointer.saved == []
    assert "before the first step of this run" in caplog.text
    assert "saved step" not in caplog.text
