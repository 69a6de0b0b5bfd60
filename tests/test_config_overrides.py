"""Misspelled config overrides: the error quotes the flag as typed and suggests the closest key."""

import subprocess
import sys

import pytest

from pstroke.config import load_config, unknown_key_message
from pstroke.errors import UserError


@pytest.fixture(scope="module")
def config():
    return load_config("configs/shapes_tiny.py")


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_misspelled_leaf_suggests_key(config):
    message = unknown_key_message(config, "train.stepz")

    assert "'train.stepz'" in message
    assert "did you mean 'train.steps'?" in message


def test_misspelled_section_keeps_rest(config):
    message = unknown_key_message(config, "trian.steps", flag_prefix="--config.", typed="--config.trian.steps=5")

    assert message.endswith("did you mean --config.train.steps=5?")


def test_key_without_close_match_lists_keys(config):
    message = unknown_key_message(config, "train.qqqqqq")

    assert "valid keys under 'train':" in message
    assert "batch_size" in message
    assert "steps" in message


def test_key_below_a_value_rejected(config):
    message = unknown_key_message(config, "train.steps.x")

    assert "'train.steps' is a value, not a section" in message


def test_valid_key_has_no_message(config):
    assert unknown_key_message(config, "model.llm.hidden_size") is None


def test_load_config_suggests_key():
    with pytest.raises(UserError, match=r"did you mean 'model\.llm\.hidden_size'\?"):
        load_config("configs/shapes_tiny.py", ["model.llm.hiden_size=7"])


@pytest.mark.parametrize("module, flags", [
    ("pstroke.train", ["--config=configs/shapes_tiny.py", "--workdir=unused", "--config.train.stepz=5"]),
    # The demo's config flag has a default, which must not load before the overrides are checked.
    ("pstroke.demo", ["--workdir=unused", "--config.train.stepz=5"]),
])
def test_cli_quotes_flag_as_typed(module, flags):
    result = subprocess.run([sys.executable, "-m", module, *flags], capture_output=True, text=True, timeout=120)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = _error_lines(result)
    assert len(errors) == 1, result.stderr[-2000:]
    assert "'--config.train.stepz=5'" in errors[0]
    assert "did you mean --config.train.steps=5?" in errors[0]


def test_cli_value_as_next_argument():
    command = [sys.executable, "-m", "pstroke.train", "--config=configs/shapes_tiny.py", "--workdir=unused",
               "--config.train.stepz", "5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)

    errors = _error_lines(result)
    assert len(errors) == 1, result.stderr[-2000:]
    assert "'--config.train.stepz 5'" in errors[0]
    assert "did you mean --config.train.steps 5?" in errors[0]
