"""The workdir check that keeps a wrong --config from overwriting a run's record."""

import json

import pytest

from pstroke.config import load_config
from pstroke.errors import UserError
from pstroke.train import loop


def _fake_run(path, config):
    (path / "checkpoints" / "10").mkdir(parents=True)
    (path / "config.json").write_text(config.to_json_best_effort())


def test_other_model_config_is_rejected(tmp_path):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py"))
    with pytest.raises(UserError, match="model.llm"):
        loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_base.py"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["llm"]["hidden_size"] == 128


def test_same_model_config_resumes(tmp_path):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py"))
    loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_tiny.py", ["train.lr=0.5", "model.mot_routing=gather"]))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["lr"] == 0.5


def test_workdir_saved_before_remat_existed_resumes(tmp_path):
    old = load_config("configs/shapes_tiny.py")
    del old.model["remat"]
    _fake_run(tmp_path, old)
    loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_tiny.py", ["model.remat=layer"]))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["remat"] == "layer"


def test_workdir_without_checkpoints_takes_any_config(tmp_path):
    (tmp_path / "config.json").write_text(load_config("configs/shapes_tiny.py").to_json_best_effort())
    loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_base.py"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["llm"]["hidden_size"] == 384
