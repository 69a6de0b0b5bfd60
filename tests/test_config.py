"""Config files load, take overrides, and reject misspelled keys by name."""

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
