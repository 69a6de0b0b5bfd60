"""Objective inputs of the train step: timesteps, noise, CFG dropout, and the synthetic batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke import batch as batch_format
from pstroke.config import load_config
from pstroke.errors import UserError
from pstroke.train import objective, sharding, synthetic

LAYOUT = synthetic.Layout(rows=4, length=256, latent_dim=12, image_side=4, max_latent_size=8, vocab_size=64)


def _batch(index: int = 0) -> dict:
    return synthetic.make_batch(LAYOUT, seed=0, index=index)


def test_shift_timestep_formula():
    t = jnp.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(objective.shift_timestep(t, 1.0), t)
    np.testing.assert_allclose(objective.shift_timestep(t, 3.0), [0.0, 0.5, 0.75, 1.0], rtol=1e-6)


def test_timesteps_shared_per_noise_split():
    batch = jax.tree.map(jnp.asarray, _batch())
    out = objective.add_flow_inputs(batch, jax.random.PRNGKey(0), shift=3.0)
    t = np.asarray(out["timestep"])
    noisy = (batch["split_mode"] == batch_format.MODE_NOISE) & (batch["kind"] == batch_format.KIND_LATENT)
    noisy = np.asarray(noisy)

    assert np.all(t[~noisy] == 0.0)
    assert np.all((t[noisy] > 0.0) & (t[noisy] < 1.0))
    split_id = np.asarray(batch["split_id"])
    per_split = {}
    for row, column in zip(*np.nonzero(noisy)):
        per_split.setdefault((row, split_id[row, column]), set()).add(float(t[row, column]))
    assert len(per_split) > 4
    assert all(len(values) == 1 for values in per_split.values())
    assert len({next(iter(values)) for values in per_split.values()}) == len(per_split)
    assert out["noise"].shape == batch["latent"].shape


def test_logit_normal_timestep_median():
    """With shift k, the median of t is k * 0.5 / (1 + (k - 1) * 0.5) because sigmoid(0) = 0.5."""
    layout = synthetic.Layout(rows=64, length=256, latent_dim=4, image_side=2, max_latent_size=4, vocab_size=64)
    batch = jax.tree.map(jnp.asarray, synthetic.make_batch(layout, seed=1, index=0))
    out = objective.add_flow_inputs(batch, jax.random.PRNGKey(1), shift=3.0)
    noisy = np.asarray((batch["split_mode"] == batch_format.MODE_NOISE) & (batch["kind"] == batch_format.KIND_LATENT))
    assert abs(np.median(np.asarray(out["timestep"])[noisy]) - 0.75) < 0.05


def test_cfg_dropout_all_or_nothing():
    batch = jax.tree.map(jnp.asarray, _batch())
    droppable = np.asarray(batch["drop_group"] != batch_format.DROP_NONE)
    assert droppable.any()

    kept = objective.apply_cfg_dropout(batch, jax.random.PRNGKey(0), text_rate=0.0, image_rate=0.0)
    assert np.all(np.asarray(kept["key_visible"]))
    np.testing.assert_array_equal(kept["ce_weight"], batch["ce_weight"])

    dropped = objective.apply_cfg_dropout(batch, jax.random.PRNGKey(0), text_rate=1.0, image_rate=1.0)
    visible = np.asarray(dropped["key_visible"])
    np.testing.assert_array_equal(visible, ~droppable)
    assert np.all(np.asarray(dropped["ce_weight"])[droppable] == 0.0)
    assert np.all(np.asarray(dropped["mse_weight"])[droppable] == 0.0)
    np.testing.assert_array_equal(np.asarray(dropped["ce_weight"])[~droppable],
                                  np.asarray(batch["ce_weight"])[~droppable])


def test_cfg_dropout_groups_use_own_rate():
    batch = jax.tree.map(jnp.asarray, _batch())
    out = objective.apply_cfg_dropout(batch, jax.random.PRNGKey(0), text_rate=1.0, image_rate=0.0)
    visible = np.asarray(out["key_visible"])
    group = np.asarray(batch["drop_group"])
    assert not visible[group == batch_format.DROP_TEXT].any()
    assert visible[group == batch_format.DROP_IMAGE].all()


def test_mask_hides_dropped_keys_from_other_splits():
    batch = _batch()
    row = 0
    sample_id, split_id, mode = batch["sample_id"][row], batch["split_id"][row], batch["split_mode"][row]
    prompt = (batch["drop_group"][row] == batch_format.DROP_TEXT) & (sample_id == 1)
    key_visible = ~prompt
    base = batch_format.attention_allowed(sample_id, split_id, mode)
    masked = batch_format.attention_allowed(sample_id, split_id, mode, key_visible=key_visible)

    later = (sample_id == 1) & ~prompt
    assert base[np.ix_(later, prompt)].all()
    assert not masked[np.ix_(later, prompt)].any()
    np.testing.assert_array_equal(masked[np.ix_(prompt, prompt)], base[np.ix_(prompt, prompt)])
    np.testing.assert_array_equal(masked[:, ~prompt], base[:, ~prompt])


def test_synthetic_batch_format():
    batch = _batch()
    assert set(batch) == set(batch_format.empty_batch(1, 1, 1))
    assert np.all(np.diff(batch["split_id"], axis=1) >= 0)
    padding = batch["sample_id"] == 0
    assert padding.any()
    assert np.all(batch["ce_weight"][padding] == 0)
    assert np.all(batch["mse_weight"][padding] == 0)
    assert np.all(batch["mse_weight"][batch["split_mode"] != batch_format.MODE_NOISE] == 0)

    # Every noisy split is followed by a clean copy with the same latents and position.
    row = batch["split_id"][0]
    noise_splits = np.unique(row[batch["split_mode"][0] == batch_format.MODE_NOISE])
    assert len(noise_splits) >= 1
    for split in noise_splits:
        noisy, clean = row == split, row == split + 1
        assert np.all(batch["split_mode"][0][clean] == batch_format.MODE_FULL)
        np.testing.assert_array_equal(batch["latent"][0][noisy], batch["latent"][0][clean])
        assert set(batch["position"][0][noisy]) == set(batch["position"][0][clean])


def test_synthetic_stream_is_deterministic():
    first, again, other = _batch(3), _batch(3), _batch(4)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["token_id"], other["token_id"])


def test_synthetic_row_too_short_names_seq_len():
    short = synthetic.Layout(rows=1, length=16, latent_dim=4, image_side=4, max_latent_size=4, vocab_size=64)
    with pytest.raises(UserError, match="data.seq_len"):
        synthetic.make_batch(short, seed=0, index=0)


@pytest.mark.parametrize("sizes, devices, expected", [
    ({"data": -1, "fsdp": 1, "tensor": 1}, 8, (8, 1, 1)),
    ({"data": 2, "fsdp": -1, "tensor": 2}, 8, (2, 2, 2)),
    ({"data": 1, "fsdp": 1, "tensor": 1}, 1, (1, 1, 1)),
])
def test_mesh_shape_resolves_fill(sizes, devices, expected):
    config = load_config("configs/shapes_tiny.py")
    config.mesh.update(sizes)
    assert sharding.mesh_shape(config.mesh, devices) == expected


@pytest.mark.parametrize("sizes", [
    {"data": 3, "fsdp": 1, "tensor": 1},
    {"data": -1, "fsdp": 3, "tensor": 1},
])
def test_mesh_mismatch_names_device_count(sizes):
    config = load_config("configs/shapes_tiny.py")
    config.mesh.update(sizes)
    with pytest.raises(UserError, match="8") as error:
        sharding.make_mesh(config.mesh)
    assert "mesh" in str(error.value)


def test_mesh_with_two_fills_is_invalid():
    config = load_config("configs/shapes_tiny.py")
    config.mesh.update({"data": -1, "fsdp": -1, "tensor": 1})
    with pytest.raises(UserError, match="at most one -1"):
        sharding.make_mesh(config.mesh)
