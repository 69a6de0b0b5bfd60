"""The workdir checks that keep a wrong --config or train.steps from overwriting a run's record."""

import json
import pathlib
import subprocess
import sys

import pytest

from pstroke.config import load_config
from pstroke.errors import UserError
from pstroke.train import loop

REPO = pathlib.Path(__file__).resolve().parent.parent


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


def test_other_variant_is_rejected(tmp_path):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py:process"))
    with pytest.raises(UserError) as error:
        loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_tiny.py:baseline"))
    message = str(error.value)
    assert "variant 'process'" in message
    assert "--config gives variant 'baseline'" in message
    assert "--config=configs/shapes_tiny.py:process" in message
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["variant"] == "process"


def test_record_without_variant_resumes(tmp_path):
    old = load_config("configs/shapes_tiny.py")
    del old["variant"]
    _fake_run(tmp_path, old)
    loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_tiny.py:baseline"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["variant"] == "baseline"


@pytest.mark.parametrize("steps", [5, 10])
def test_finished_workdir_rejected_on_request(tmp_path, steps):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py"))
    before = (tmp_path / "config.json").read_text()
    config = load_config("configs/shapes_tiny.py", [f"train.steps={steps}", "train.lr=0.5"])

    with pytest.raises(UserError) as error:
        loop.prepare_workdir(str(tmp_path), config, reject_finished=True)
    assert str(error.value) == (f"workdir {str(tmp_path)!r} is already at step 10 >= train.steps {steps}; "
                                "raise --config.train.steps to continue")
    assert (tmp_path / "config.json").read_text() == before

    loop.prepare_workdir(str(tmp_path), config)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == steps


def test_steps_above_checkpoint_resume(tmp_path):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py"))
    loop.prepare_workdir(str(tmp_path), load_config("configs/shapes_tiny.py", ["train.steps=11"]),
                         reject_finished=True)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 11


def test_restore_step_checked_against_steps(tmp_path):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py"))
    (tmp_path / "checkpoints" / "4").mkdir()
    passing = load_config("configs/shapes_tiny.py", ["train.steps=8", "train.restore_step=4"])
    loop.prepare_workdir(str(tmp_path), passing, reject_finished=True)

    failing = load_config("configs/shapes_tiny.py", ["train.steps=4", "train.restore_step=4"])
    with pytest.raises(UserError, match=r"resumes from step 4 \(train.restore_step\) >= train.steps 4"):
        loop.prepare_workdir(str(tmp_path), failing, reject_finished=True)


@pytest.mark.parametrize("steps", [0, -3])
def test_nonpositive_steps_rejected(tmp_path, steps):
    config = load_config("configs/shapes_tiny.py", [f"train.steps={steps}"])
    with pytest.raises(UserError, match=f"invalid train.steps {steps}; pass a positive step count"):
        loop.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cli_finished_workdir_exits_2(tmp_path):
    _fake_run(tmp_path, load_config("configs/shapes_tiny.py"))
    before = (tmp_path / "config.json").read_text()
    command = [sys.executable, "-m", "pstroke.train", "--config=configs/shapes_tiny.py", f"--workdir={tmp_path}",
               "--config.train.steps=10"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: workdir {str(tmp_path)!r} is already at step 10 >= train.steps 10; "
                      "raise --config.train.steps to continue"]
    assert (tmp_path / "config.json").read_text() == before


def test_file_as_workdir_is_named(tmp_path):
    file = tmp_path / "passwd"
    file.write_text("keep")
    with pytest.raises(UserError, match="it is a file, not a folder") as error:
        loop.prepare_workdir(str(file), load_config("configs/shapes_tiny.py"))
    assert f"--workdir={str(file)!r}" in str(error.value)
    assert "not writable" not in str(error.value)
    assert file.read_text() == "keep"

