"""Config files load, take overrides, and reject misspelled keys by name."""

import logging

import pytest

from pstroke.config import load_config
from pstroke.errors import UserError


def test_override_sets_nested_value():
    config = load_config("configs/shapes_tiny.py", ["train.steps=7", "model.llm.rope_theta=5.0"])
    assert config.train.steps == 7
    assert config.model.llm.rope_theta == 5.0


def test_misspelled_override_names_key():
    with pytest.raises(UserError, match="train.stepz"):
        load_config("configs/shapes_tiny.py", ["train.stepz=7"])


def test_override_with_wrong_type_names_key():
    with pytest.raises(UserError, match="train.steps"):
        load_config("configs/shapes_tiny.py", ["train.steps=many"])


def test_missing_config_file_is_user_error():
    with pytest.raises(UserError, match="not found"):
        load_config("configs/does_not_exist.py")


CLI_SCRIPT = """
from pstroke.config import define_config_flag, run_cli
CONFIG = define_config_flag()
def main(argv):
    print("steps", CONFIG.value.train.steps)
run_cli(main)
"""


def _run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", CLI_SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_cli_override_applies():
    result = _run_cli("--config=configs/shapes_tiny.py", "--config.train.steps=3")
    assert result.returncode == 0, result.stderr
    assert "steps 3" in result.stdout


def test_cli_misspelled_key_exits_cleanly():
    result = _run_cli("--config=configs/shapes_tiny.py", "--config.train.stepz=3")
    assert result.returncode == 2
    assert "stepz" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file_exits_cleanly():
    result = _run_cli("--config=configs/nope.py")
    assert result.returncode == 2
    assert "configs/nope.py" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_variant_quotes_the_flag():
    result = _run_cli("--config=configs/shapes_tiny.py:basline")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --config=configs/shapes_tiny.py:basline: unknown config variant 'basline'")
    assert "ValueError" not in result.stderr


def test_cli_empty_variant_names_variants():
    result = _run_cli("--config=configs/shapes_tiny.py:")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --config=configs/shapes_tiny.py:: the config variant after ':' is empty")
    assert "configs/shapes_tiny.py:process or configs/shapes_tiny.py:baseline" in lines[0]
    assert "drop the colon" in lines[0]
    assert lines[0].count("'") % 2 == 0, "unbalanced quote"


def test_cli_empty_variant_without_variants():
    result = _run_cli("--config=configs/bagel_7b.py:")
    assert result.returncode == 2
    assert "configs/bagel_7b.py has no variants; drop the colon" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command, flag_name", [("pstroke.sample", "--workdir"), ("pstroke.parity", "--fixtures")])
def test_command_help_exits_zero(command, flag_name):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert flag_name in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["-?", "--helpshort", "--helpfull"])
def test_cli_help_flags_exit_zero(flag):
    result = _run_cli(flag)
    assert result.returncode == 0, result.stderr
    assert "USAGE" in result.stdout


def test_cli_help_false_still_runs():
    result = _run_cli("--help=false", "--config=configs/shapes_tiny.py")
    assert result.returncode == 0, result.stderr
    assert "steps" in result.stdout


BACKEND_SCRIPT = """
import logging
from pstroke.config import define_config_flag, run_cli
CONFIG = define_config_flag()
def main(argv):
    logging.basicConfig(level=logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    import jax
    print(jax.devices())
    logging.getLogger("pstroke.progress").info("progress line")
    logging.getLogger("pstroke.progress").warning("warning line")
run_cli(main)
"""


def test_cli_hides_missing_backend_line():
    import os
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items() if name != "JAX_PLATFORMS"}  # as users run it
    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, "--config=configs/shapes_tiny.py"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "Unable to initialize backend" not in result.stderr
    assert "progress line" in result.stderr
    assert "warning line" in result.stderr


def test_missing_backend_filter_keeps_warnings(caplog):
    from pstroke.config import quiet_missing_backend_log

    quiet_missing_backend_log()
    logger = logging.getLogger("jax._src.xla_bridge")
    with caplog.at_level(logging.INFO):
        logger.info("Unable to initialize backend 'tpu': libtpu.so not found")
        logger.info("another backend message")
        logger.warning("Unable to initialize backend 'tpu': a warning stays")

    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["another backend message", "Unable to initialize backend 'tpu': a warning stays"]


def test_cli_non_python_config_file_exits_cleanly():
    result = _run_cli("--config=README.md")
    assert result.returncode == 2
    assert "'README.md' is not a Python config file" in result.stderr
    assert "Traceback" not in result.stderr


def test_baseline_variant_trains_single_step():
    assert load_config("configs/shapes_tiny.py:baseline").data.t2i_fraction == 1.0
    assert load_config("configs/shapes_tiny.py").data.t2i_fraction == 0.0


def test_unknown_variant_is_user_error():
    with pytest.raises(UserError, match="basline"):
        load_config("configs/shapes_tiny.py:basline")


@pytest.mark.parametrize("spec", ["configs/shapes_tiny.py:", "configs/bagel_7b.py:"])
def test_empty_variant_is_user_error(spec):
    with pytest.raises(UserError, match="variant after ':' is empty") as error:
        load_config(spec)
    assert "drop the colon" in str(error.value)
