"""`python -m pstroke.build_data` into a folder that already contains a dataset."""

import json
import logging
import subprocess
import sys

import pytest

from pstroke.config import load_config
from pstroke.data import tfds_builder
from pstroke.errors import UserError

SIZES = ["data.num_train=3", "data.num_validation=2", "data.num_heldout=2"]


def _config(*overrides):
    return load_config("configs/shapes_tiny.py", SIZES + list(overrides))


def _records(out) -> dict[str, bytes]:
    folder = tfds_builder.dataset_folder(str(out))
    return {path.name: path.read_bytes() for path in folder.glob("*.array_record-*")}


def test_build_stores_record_settings(tmp_path):
    info = tfds_builder.build(_config("data.seed=7"), str(tmp_path))
    settings = json.loads((tfds_builder.dataset_folder(str(tmp_path)) / "metadata.json").read_text())["settings"]
    assert settings["data.seed"] == 7
    assert settings["data.num_train"] == 3
    assert settings["world.canvas"] == 32
    assert set(settings) == set(tfds_builder.RECORD_SETTINGS)
    assert info.metadata["train"]["samples"] == 3


def test_same_settings_reuse_dataset(tmp_path, caplog):
    tfds_builder.build(_config(), str(tmp_path))
    before = _records(tmp_path)
    assert len(before) == 3

    with caplog.at_level(logging.INFO, logger="pstroke.data.tfds_builder"):
        info = tfds_builder.build(_config(), str(tmp_path))
    assert "reusing the existing dataset" in caplog.text
    assert _records(tmp_path) == before
    assert info.metadata["validation"]["samples"] == 2


@pytest.mark.parametrize("override, setting", [
    ("data.num_train=4", "data.num_train=3 (this config: 4)"),
    ("data.seed=1", "data.seed=0 (this config: 1)"),
    ("world.canvas=48", "world.canvas=32 (this config: 48)"),
])
def test_other_settings_rejected(tmp_path, override, setting):
    tfds_builder.build(_config(), str(tmp_path))
    before = _records(tmp_path)

    with pytest.raises(UserError) as error:
        tfds_builder.build(_config(override), str(tmp_path))
    message = str(error.value)
    assert setting in message
    assert "pass a new --out" in message
    assert str(tfds_builder.dataset_folder(str(tmp_path))) in message
    assert _records(tmp_path) == before


def test_dataset_without_settings_compares_split_sizes(tmp_path, caplog):
    tfds_builder.build(_config(), str(tmp_path))
    metadata_path = tfds_builder.dataset_folder(str(tmp_path)) / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["settings"]
    metadata_path.write_text(json.dumps(metadata))

    with pytest.raises(UserError, match=r"data\.num_heldout=2 \(this config: 5\)"):
        tfds_builder.build(_config("data.num_heldout=5"), str(tmp_path))
    with caplog.at_level(logging.INFO, logger="pstroke.data.tfds_builder"):
        tfds_builder.build(_config(), str(tmp_path))
    assert "split sizes only" in caplog.text
    assert "reusing the existing dataset" in caplog.text


@pytest.mark.parametrize("size", ["num_train", "num_validation", "num_heldout"])
def test_empty_split_rejected_before_writing(tmp_path, size):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=f"data.{size}=0") as error:
        tfds_builder.build(_config(f"data.{size}=0"), str(out))
    assert f"--config.data.{size}=1 or more" in str(error.value)
    assert not out.exists()


def test_empty_split_command_prints_one_line(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pstroke.build_data", "--config=configs/shapes_tiny.py",
                           f"--out={out}", "--config.data.num_validation=0"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: invalid data.num_validation=0")
    assert not out.exists()
