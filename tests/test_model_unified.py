"""The unified model's training forward, routing, masks, dtypes and losses on a tiny config."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke import batch as batch_format
from pstroke.model import config as model_config
from pstroke.model.embed import (latent_to_pixels, patchify_latent, pixels_to_latent, sincos_table,
                                 unpatchify_latent)
from pstroke.model.losses import losses
from pstroke.model.unified import UnifiedModel, latent_dim


def tiny_config(routing="gather", dtype="float32"):
    config = model_config.shapes_model(hidden=64, layers=2, heads=4, kv_heads=2, vocab_size=64)
    config.mot_routing = routing
    config.compute_dtype = dtype
    return config


def two_sample_batch(config, seed=0):
    """One row of 2 samples: [text (CE)] [noisy image (MSE)] [clean copy] then [text] [noisy image]."""
    rng = np.random.default_rng(seed)
    dim = latent_dim(config)
    batch = batch_format.empty_batch(1, 40, dim)
    layout = [  # (sample, mode, kind, length, position)
        (1, batch_format.MODE_CAUSAL, batch_format.KIND_TEXT, 6, None),
        (1, batch_format.MODE_NOISE, batch_format.KIND_LATENT, 6, 6),
        (1, batch_format.MODE_FULL, batch_format.KIND_LATENT, 6, 6),
        (2, batch_format.MODE_CAUSAL, batch_format.KIND_TEXT, 5, None),
        (2, batch_format.MODE_NOISE, batch_format.KIND_LATENT, 6, 5),
    ]
    start = 0
    for split, (sample, mode, kind, length, position) in enumerate(layout):
        span = slice(start, start + length)
        batch["sample_id"][0, span] = sample
        batch["split_id"][0, span] = split
        batch["split_mode"][0, span] = mode
        if kind == batch_format.KIND_TEXT:
            batch["token_id"][0, span] = rng.integers(1, 60, length)
            batch["position"][0, span] = np.arange(length)
            batch["ce_label"][0, start:start + length - 1] = batch["token_id"][0, start + 1:start + length]
            batch["ce_weight"][0, start:start + length - 1] = 1.0
            batch["stage"][0, span] = batch_format.STAGE_INDEX["plan"]
        else:
            inner = slice(start + 1, start + length - 1)  # markers stay text tokens
            batch["token_id"][0, [start, start + length - 1]] = [61, 62]
            batch["kind"][0, inner] = kind
            batch["expert"][0, inner] = batch_format.EXPERT_GEN
            batch["latent"][0, inner] = rng.normal(size=(length - 2, dim))
            batch["latent_pos"][0, inner] = np.arange(length - 2)
            batch["position"][0, span] = position
            if mode == batch_format.MODE_NOISE:
                batch["timestep"][0, inner] = 0.4
                batch["mse_weight"][0, inner] = 1.0
                batch["stage"][0, inner] = batch_format.STAGE_INDEX["draft_image"]
        start += length
    batch["noise"] = rng.normal(size=batch["latent"].shape).astype(np.float32)
    return batch


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    batch = two_sample_batch(config)
    params = nn.unbox(jax.jit(UnifiedModel(config).init)(jax.random.key(0), batch)["params"])
    # llm2vae starts at zero; give it values so velocity depends on the hidden states.
    params["llm2vae"]["kernel"] = jax.random.normal(jax.random.key(1), params["llm2vae"]["kernel"].shape) * 0.1
    return config, batch, params


_FORWARDS = {}


def forward(config, params, batch):
    """Run the jitted training forward (one compilation per routing and dtype)."""
    key = (config.mot_routing, config.compute_dtype)
    if key not in _FORWARDS:
        model = UnifiedModel(config)
        _FORWARDS[key] = jax.jit(lambda p, b: model.apply({"params": p}, b, return_layers=True))
    return _FORWARDS[key](params, batch)


def test_outputs_have_documented_shapes(setup):
    config, batch, params = setup

    outputs = forward(config, params, batch)

    assert outputs["logits"].shape == (1, 40, 64)
    assert outputs["logits"].dtype == jnp.float32
    assert outputs["velocity"].shape == (1, 40, latent_dim(config))
    assert outputs["velocity"].dtype == jnp.float32
    assert outputs["hidden"].shape == (1, 40, 64)
    assert outputs["layer_outputs"].shape == (2, 1, 40, 64)


def test_gather_routing_equals_dense(setup):
    config, batch, params = setup

    gathered = forward(config, params, batch)
    dense = forward(tiny_config("dense"), params, batch)

    np.testing.assert_allclose(gathered["hidden"], dense["hidden"], atol=1e-5)
    np.testing.assert_allclose(gathered["velocity"], dense["velocity"], atol=1e-5)


def test_samples_do_not_see_each_other(setup):
    config, batch, params = setup
    changed = {key: value.copy() for key, value in batch.items()}
    changed["token_id"][0, 18:23] = 3
    changed["noise"][0, 23:] += 1.0

    before = forward(config, params, batch)["hidden"][0, :18]
    after = forward(config, params, changed)["hidden"][0, :18]

    np.testing.assert_allclose(before, after, atol=1e-6)


def test_noisy_split_is_invisible_to_clean_copy(setup):
    config, batch, params = setup
    changed = {key: value.copy() for key, value in batch.items()}
    changed["noise"][0, 6:12] += 1.0

    before = forward(config, params, batch)["hidden"][0]
    after = forward(config, params, changed)["hidden"][0]

    np.testing.assert_allclose(before[12:18], after[12:18], atol=1e-6)
    assert np.abs(before[7:11] - after[7:11]).max() > 1e-3


def test_gen_weights_only_touch_gen_tokens(setup):
    config, batch, params = setup
    changed = jax.tree_util.tree_map(lambda x: x, params)
    mlp = changed["language_model"]["layers"]["mlp"]["up_proj"]
    mlp["kernel"] = mlp["kernel"].at[:, 1].add(0.5)

    before = forward(config, params, batch)
    after = forward(config, changed, batch)

    np.testing.assert_allclose(before["logits"][0, :6], after["logits"][0, :6], atol=1e-6)
    assert np.abs(before["velocity"][0, 7:11] - after["velocity"][0, 7:11]).max() > 1e-4


def test_bfloat16_compute_stays_close(setup):
    config, batch, params = setup

    full = forward(config, params, batch)
    half = forward(tiny_config(dtype="bfloat16"), params, batch)

    assert half["logits"].dtype == jnp.float32
    assert half["hidden"].dtype == jnp.bfloat16
    np.testing.assert_allclose(half["logits"], full["logits"], atol=0.1)


def test_losses_match_manual_means(setup):
    config, batch, params = setup
    outputs = forward(config, params, batch)

    loss, metrics = losses(outputs, batch, ce_weight_lambda=0.5)

    logits = np.asarray(outputs["logits"][0], np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce_rows = np.flatnonzero(batch["ce_weight"][0])
    ce = -log_probs[ce_rows, batch["ce_label"][0, ce_rows]].mean()
    mse_rows = np.flatnonzero(batch["mse_weight"][0])
    target = batch["noise"][0, mse_rows] - batch["latent"][0, mse_rows]
    mse = ((np.asarray(outputs["velocity"][0, mse_rows]) - target) ** 2).mean()
    assert metrics["ce"] == pytest.approx(ce, rel=1e-5)
    assert metrics["mse"] == pytest.approx(mse, rel=1e-5)
    assert loss == pytest.approx(0.5 * ce + mse, rel=1e-5)
    assert metrics["ce/plan"] == pytest.approx(ce, rel=1e-5)
    assert metrics["mse/draft_image"] == pytest.approx(mse, rel=1e-5)
    assert metrics["ce/inspect"] == 0.0
    assert metrics["ce_tokens"] == len(ce_rows)


def test_every_param_has_logical_axes(setup):
    config, batch, _ = setup
    boxed = jax.eval_shape(UnifiedModel(config).init, jax.random.key(0), batch)["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))

    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned)
        assert len(leaf.names) == leaf.value.ndim


def test_latent_patchify_order_and_inverse():
    latent = jnp.arange(3 * 4 * 6, dtype=jnp.float32).reshape(3, 4, 6)

    tokens = patchify_latent(latent, 2)

    assert tokens.shape == (6, 12)
    # element (p * 2 + q) * C + c of token (i, j) is latent[c, 2i + p, 2j + q]
    assert tokens[4, (1 * 2 + 0) * 3 + 2] == latent[2, 2 * 1 + 1, 2 * 1 + 0]
    np.testing.assert_array_equal(unpatchify_latent(tokens, (2, 3), 2, 3), latent)


def test_pixel_codec_round_trip_is_exact():
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)

    latent = pixels_to_latent(image)

    assert latent.shape == (3, 8, 12)
    assert float(latent.min()) >= -1.0
    assert float(latent.max()) <= 1.0
    np.testing.assert_array_equal(latent_to_pixels(latent), image)


def test_sincos_table_layout():
    table = sincos_table(4, 16)
    row, col = 2, 3

    values = table[row * 4 + col]

    np.testing.assert_allclose(values[0], np.sin(col), atol=1e-2)
    np.testing.assert_allclose(values[4], np.cos(col), atol=1e-2)
    np.testing.assert_allclose(values[8], np.sin(row), atol=1e-2)
    np.testing.assert_allclose(values[12], np.cos(row), atol=1e-2)


def _loss_and_grads(config, params, batch):
    model = UnifiedModel(config)

    def loss(p):
        outputs = model.apply({"params": p}, batch)
        return losses(outputs, batch)[0]

    return jax.value_and_grad(loss), jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("remat", ["attention", "layer"])
def test_remat_keeps_loss_and_gradients(setup, remat):
    config, batch, params = setup
    plain = tiny_config()
    plain.remat = "none"
    recomputed = tiny_config()
    recomputed.remat = remat

    plain_fn, (plain_loss, plain_grads) = _loss_and_grads(plain, params, batch)
    remat_fn, (remat_loss, remat_grads) = _loss_and_grads(recomputed, params, batch)

    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The recomputation must really be in the program, not only the same numbers.
    assert "remat" in str(jax.make_jaxpr(remat_fn)(params))
    assert "remat" not in str(jax.make_jaxpr(plain_fn)(params))


def test_unknown_remat_mode_is_named(setup):
    config, batch, params = setup
    bad = tiny_config()
    bad.remat = "everything"

    with pytest.raises(ValueError, match="'everything'.*none, attention, layer"):
        UnifiedModel(bad).apply({"params": params}, batch)
