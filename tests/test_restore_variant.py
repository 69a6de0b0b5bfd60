"""The variant check of `restore_params` and of the demo's pretrained model, run in-process."""

import json
import shutil

import pytest

from pstroke import demo
from pstroke.errors import UserError
from pstroke.rollout import restore, testing


def _copy_with_variant(source, target, variant):
    """Copy a workdir and record `variant` in its config.json (None: drop the key)."""
    shutil.copytree(source, target)
    saved = json.loads((target / "config.json").read_text())
    if variant is None:
        del saved["variant"]
    else:
        saved["variant"] = variant
    (target / "config.json").write_text(json.dumps(saved))
    return target


def test_baseline_workdir_rejects_process_config(random_workdir, tmp_path):
    workdir = _copy_with_variant(random_workdir, tmp_path / "run", "baseline")
    config = testing.tiny_config()
    assert config.variant == "process"

    with pytest.raises(UserError) as error:
        restore.restore_params(config, str(workdir))
    message = str(error.value)
    assert "variant 'baseline'" in message
    assert "--config gives variant 'process'" in message
    assert "':baseline'" in message
    assert str(workdir) in message


def test_workdir_without_variant_restores(random_workdir, tmp_path):
    workdir = _copy_with_variant(random_workdir, tmp_path / "run", None)

    params, step = restore.restore_params(testing.tiny_config(), str(workdir))

    assert step == 0
    assert params


def test_other_variant_allowed_when_not_checked(random_workdir, tmp_path):
    workdir = _copy_with_variant(random_workdir, tmp_path / "run", "baseline")

    _, step = restore.restore_params(testing.tiny_config(), str(workdir), same_variant=False)

    assert step == 0


def test_matching_variant_passes(random_workdir):
    restore.check_variant(random_workdir, testing.tiny_config())


def test_demo_rejects_pretrained_of_other_variant(random_workdir, tmp_path):
    config = testing.tiny_config()
    config.variant = "baseline"
    workdir = tmp_path / "demo"
    workdir.mkdir()

    with pytest.raises(UserError) as error:
        demo.get_model(config, workdir, random_workdir, train_steps=1)
    message = str(error.value)
    assert message.startswith(f"--pretrained_dir {str(random_workdir)!r}")
    assert "--pretrained_dir=''" in message
    assert not demo.has_checkpoint(workdir)
