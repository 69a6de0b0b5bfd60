"""The jitted train step: it fits one batch, and sharding over 8 devices leaves the numbers unchanged."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from pstroke.config import load_config
from pstroke.train import loop, sharding, synthetic

TINY = [
    "data.source=synthetic", "data.seq_len=128", "world.canvas=16", "model.max_latent_size=4",
    "model.llm.hidden_size=64", "model.llm.intermediate_size=128", "model.llm.num_layers=2",
    "model.llm.num_heads=4", "model.llm.num_kv_heads=2", "model.llm.head_dim=16", "train.batch_size=8",
]


def _config(*overrides: str):
    return load_config("configs/shapes_tiny.py", TINY + list(overrides))


def _mesh(config, data: int, fsdp: int, tensor: int) -> jax.sharding.Mesh:
    config.mesh.update({"data": data, "fsdp": fsdp, "tensor": tensor})
    return sharding.make_mesh(config.mesh, jax.devices()[:data * fsdp * tensor])


def _run(config, mesh, steps: int, fixed_batch: bool = False):
    """Run `steps` train steps on `mesh`; return (host params, list of host metrics, param shardings)."""
    parts = loop.build(config, mesh)
    layout = synthetic.layout_from_config(config)
    data = synthetic.SyntheticIterator(layout, seed=0, sharding=sharding.batch_sharding(mesh))
    history = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(parts.rules):
        state = parts.init_state()
        batch = next(data)
        for step in range(steps):
            rng = jax.random.PRNGKey(0 if fixed_batch else step)
            state, metrics = parts.step_fn(state, batch if fixed_batch else next(data), rng)
            history.append(jax.device_get(metrics))
    return jax.device_get(state.params), history, jax.tree.map(lambda leaf: leaf.sharding, state.params)


def test_overfits_one_batch():
    config = _config("train.lr=0.01", "train.warmup_steps=0", "train.schedule=constant", "train.grad_clip=0",
                     "train.drop_text_rate=0.0", "train.drop_image_rate=0.0")
    _, history, _ = _run(config, _mesh(config, 1, 1, 1), steps=80, fixed_batch=True)
    first, last = history[0], history[-1]
    assert last["ce"] < first["ce"] / 10, (first["ce"], last["ce"])
    assert last["mse"] < first["mse"] / 10, (first["mse"], last["mse"])
    assert all(np.isfinite(metrics["loss"]) for metrics in history)

    for name in ("ce/plan", "ce/inspect", "ce/refine", "mse/draft_image", "mse/refined_image",
                 "grad_norm", "param_norm", "update_norm", "tokens"):
        assert name in first, name
    for name in ("ce/plan", "mse/draft_image", "mse/refined_image", "grad_norm", "update_norm"):
        assert first[name] > 0, name
    np.testing.assert_allclose(first["loss"], first["ce"] + first["mse"], rtol=1e-6)


@pytest.fixture(scope="module")
def single_device_run():
    config = _config()
    return _run(config, _mesh(config, 1, 1, 1), steps=3)


@pytest.mark.parametrize("layout", [(8, 1, 1), (2, 2, 2)])
def test_sharded_step_matches_one_device(layout, single_device_run):
    single_params, single, _ = single_device_run
    config = _config()
    sharded_params, sharded, shardings = _run(config, _mesh(config, *layout), steps=3)

    for one, many in zip(single, sharded):
        np.testing.assert_allclose(many["loss"], one["loss"], rtol=2e-5)
        np.testing.assert_allclose(many["grad_norm"], one["grad_norm"], rtol=2e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), sharded_params, single_params)

    # Parameters are sharded by their logical axes: the embedding is ('vocab', 'embed').
    embedding = shardings["language_model"]["embed_tokens"]["embedding"]
    _, fsdp, tensor = layout
    assert embedding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    vocab, hidden = single_params["language_model"]["embed_tokens"]["embedding"].shape
    assert embedding.shard_shape((vocab, hidden)) == (vocab // tensor, hidden // fsdp)


def test_ema_accumulation_bfloat16():
    config = _config("train.ema_decay=0.5", "train.grad_accum_steps=2", "train.warmup_steps=0",
                     "train.schedule=constant", "model.compute_dtype=bfloat16")
    mesh = _mesh(config, 1, 1, 1)
    parts = loop.build(config, mesh)
    layout = synthetic.layout_from_config(config)
    data = synthetic.SyntheticIterator(layout, seed=0, sharding=sharding.batch_sharding(mesh))
    with jax.set_mesh(mesh), nn.logical_axis_rules(parts.rules):
        state = parts.init_state()
        start = jax.device_get(state.params)
        state, first = parts.step_fn(state, next(data), jax.random.PRNGKey(0))
        after_one = jax.device_get((state.params, state.ema_params))
        state, _ = parts.step_fn(state, next(data), jax.random.PRNGKey(1))
        params, ema = jax.device_get((state.params, state.ema_params))

    # The first micro-batch only accumulates: parameters and EMA stay put.
    jax.tree.map(np.testing.assert_array_equal, after_one[0], start)
    jax.tree.map(np.testing.assert_array_equal, after_one[1], start)
    # The second applies the update, and the EMA moves halfway to the new parameters.
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), params, start))
    assert max(moved) > 0
    jax.tree.map(lambda e, p, s: np.testing.assert_allclose(e, 0.5 * s + 0.5 * p, rtol=1e-5, atol=1e-7),
                 ema, params, start)
    # bfloat16 compute keeps float32 parameters and a float32 loss.
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(np.float32)}
    assert first["loss"].dtype == np.float32
    assert np.isfinite(first["loss"])
