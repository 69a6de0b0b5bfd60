"""Checkpoints of `pstroke.train.loop.train`: restore onto another mesh, and clean errors."""

import json
import pathlib
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from pstroke.config import load_config
from pstroke.errors import UserError
from pstroke.train import checkpoint, loop, sharding

TINY = [
    "data.source=synthetic", "data.seq_len=128", "world.canvas=16", "model.max_latent_size=4",
    "model.llm.hidden_size=64", "model.llm.intermediate_size=128", "model.llm.num_layers=2",
    "model.llm.head_dim=16", "train.batch_size=8", "train.steps=2", "train.checkpoint_every=1",
    "train.log_every=1", "train.warmup_steps=1", "train.async_checkpoints=false",
]


def _config(*overrides: str):
    return load_config("configs/shapes_tiny.py", TINY + list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """A workdir trained for 2 steps on the 8-device (8, 1, 1) mesh, and its last metrics."""
    workdir = tmp_path_factory.mktemp("trained")
    last = loop.train(_config(), str(workdir))
    return workdir, last


def _copy(trained, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir)
    return workdir


def test_workdir_holds_run_files(trained):
    workdir, last = trained
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 2
    assert (workdir / "git_revision.txt").read_text().strip()
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()) == [1, 2]
    assert np.isfinite(last["loss"])


def test_restore_onto_other_mesh(trained):
    workdir, _ = trained
    config = _config()
    config.mesh.update({"data": 2, "fsdp": 2, "tensor": 2})
    mesh = sharding.make_mesh(config.mesh)
    parts = loop.build(config, mesh)
    saver = checkpoint.Checkpointer(workdir / "checkpoints", 1, 3, use_async=False)
    state, data_state = saver.restore(2, parts.abstract_state)
    saver.close()

    assert int(state.step) == 2
    assert data_state == {"index": 2}
    embedding = state.params["language_model"]["embed_tokens"]["embedding"]
    assert embedding.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")

    # Same values as restored on the mesh they were saved from.
    original = _config()
    original_mesh = sharding.make_mesh(original.mesh)
    saver = checkpoint.Checkpointer(workdir / "checkpoints", 1, 3, use_async=False)
    reference, _ = saver.restore(2, loop.build(original, original_mesh).abstract_state)
    saver.close()
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(reference.params))
    assert not np.array_equal(jax.device_get(state.params)["language_model"]["embed_tokens"]["embedding"],
                              _fresh_embedding(original, original_mesh))


def _fresh_embedding(config, mesh) -> np.ndarray:
    parts = loop.build(config, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(parts.rules):
        state = parts.init_state()
    return jax.device_get(state.params["language_model"]["embed_tokens"]["embedding"])


def test_nan_stops_and_keeps_checkpoint(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    with pytest.raises(loop.TrainingDiverged, match=r"step 3: metric '\w+' is (nan|inf)"):
        loop.train(_config("train.steps=4", "train.lr=inf"), str(workdir))

    steps = sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())
    assert steps == [1, 2]
    config = _config()
    saver = checkpoint.Checkpointer(workdir / "checkpoints", 1, 3, use_async=False)
    state, _ = saver.restore(2, loop.build(config, sharding.make_mesh(config.mesh)).abstract_state)
    saver.close()
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))


def test_corrupt_checkpoint_is_user_error(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    for file in (workdir / "checkpoints" / "2" / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="checkpoint step 2 .* could not be restored"):
        loop.train(_config("train.steps=3"), str(workdir))


def test_missing_restore_step_lists_available(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    with pytest.raises(UserError, match=r"step 7 not found .*\[1, 2\]"):
        loop.train(_config("train.steps=3", "train.restore_step=7"), str(workdir))


def test_unwritable_workdir_is_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="file' is a file, not a folder"):
        loop.train(_config(), str(blocker / "run"))


def test_batch_size_must_split_over_mesh(tmp_path):
    with pytest.raises(UserError, match="batch_size 4 .* multiple of 8"):
        loop.train(_config("train.batch_size=4"), str(tmp_path / "run"))


def test_init_from_starts_from_the_source_parameters(trained, tmp_path):
    source, _ = trained
    frozen = ("train.lr=0.0", "train.schedule=constant", "train.steps=1")
    loop.train(_config(*frozen, f"train.init_from={source}"), str(tmp_path / "tuned"))
    loop.train(_config(*frozen, "train.seed=1"), str(tmp_path / "fresh"))

    from pstroke.rollout.restore import restore_params

    expected, _ = restore_params(_config(), str(source))
    tuned, tuned_step = restore_params(_config(), str(tmp_path / "tuned"))
    fresh, _ = restore_params(_config(), str(tmp_path / "fresh"))
    assert tuned_step == 1
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(tuned)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(fresh)))


def test_init_from_without_checkpoint_names_the_setting(tmp_path):
    with pytest.raises(UserError, match="train.init_from"):
        loop.train(_config(f"train.init_from={tmp_path / 'empty'}"), str(tmp_path / "run"))
