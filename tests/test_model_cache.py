"""KV-cache inference paths agree with the training forward, also batched with padding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke import batch as batch_format
from pstroke.model import cache as cache_lib
from pstroke.model import config as model_config
from pstroke.model.unified import UnifiedModel, latent_dim

TOKENS = cache_lib.SpecialTokens(bos=60, eos=61, vision_start=62, vision_end=63)
CAPACITY = 24


_JITTED = {}


def fast(function, config):
    """Return the jitted `function` with `config` bound, compiled once per test module."""
    if function not in _JITTED:
        _JITTED[function] = cache_lib.jit_bound(function, config)
    return _JITTED[function]


@pytest.fixture(scope="module")
def setup():
    config = model_config.shapes_model(hidden=64, layers=2, heads=4, kv_heads=2, vocab_size=64)
    dim = latent_dim(config)
    example = batch_format.empty_batch(1, 8, dim)
    example["noise"] = np.zeros_like(example["latent"])
    params = nn.unbox(jax.jit(UnifiedModel(config).init)(jax.random.key(0), example)["params"])
    params["llm2vae"]["kernel"] = jax.random.normal(jax.random.key(1), params["llm2vae"]["kernel"].shape) * 0.1
    return config, params


def train_sequence(config, text, x_t, t, latent_pos):
    """Packed batch [text (causal)] [vision_start, noisy latents, vision_end (noise)] for one row."""
    n_text, n_latent = len(text), x_t.shape[0]
    batch = batch_format.empty_batch(1, n_text + n_latent + 2, latent_dim(config))
    batch["noise"] = np.zeros_like(batch["latent"])
    batch["sample_id"][0] = 1
    batch["token_id"][0, :n_text] = text
    batch["position"][0, :n_text] = np.arange(n_text)
    image = slice(n_text, None)
    inner = slice(n_text + 1, n_text + 1 + n_latent)
    batch["split_id"][0, image] = 1
    batch["split_mode"][0, image] = batch_format.MODE_NOISE
    batch["token_id"][0, [n_text, -1]] = [TOKENS.vision_start, TOKENS.vision_end]
    batch["position"][0, image] = n_text
    batch["kind"][0, inner] = batch_format.KIND_LATENT
    batch["expert"][0, inner] = batch_format.EXPERT_GEN
    batch["latent"][0, inner] = x_t / (1.0 - t)  # noise 0, so (1 - t) * latent + t * noise = x_t
    batch["timestep"][0, inner] = t
    batch["latent_pos"][0, inner] = latent_pos
    return batch


def test_text_prefill_and_velocity_match_training_path(setup):
    config, params = setup
    rng = np.random.default_rng(0)
    text = np.array([TOKENS.bos, 5, 9, 14, 2, TOKENS.eos])
    x_t = rng.normal(size=(4, latent_dim(config))).astype(np.float32)
    latent_pos = np.arange(4)
    t = 0.3
    batch = train_sequence(config, text, x_t, t, latent_pos)
    outputs = jax.jit(UnifiedModel(config).apply)({"params": params}, batch)

    cache = cache_lib.empty_cache(config, 1, CAPACITY)
    cache, logits = fast(cache_lib.prefill_text, config)(params, cache, jnp.asarray(text)[None])
    velocity = fast(cache_lib.query_velocity, config)(params, cache, TOKENS, jnp.asarray(x_t)[None], t,
                                        jnp.asarray(latent_pos)[None])

    np.testing.assert_allclose(logits[0], outputs["logits"][0, :6], atol=1e-4)
    np.testing.assert_allclose(velocity[0], outputs["velocity"][0, 7:11], atol=1e-4)
    assert int(cache.length[0]) == 6
    assert int(cache.next_rope[0]) == 6


def test_padded_rows_match_single_rows(setup):
    config, params = setup
    prompts = [np.array([TOKENS.bos, 3, 4, 5, 6, TOKENS.eos]), np.array([TOKENS.bos, 7, TOKENS.eos])]
    padded = np.zeros((2, 6), np.int32)
    for row, prompt in enumerate(prompts):
        padded[row, :len(prompt)] = prompt
    x_t = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, latent_dim(config))), jnp.float32)
    latent_pos = jnp.tile(jnp.arange(4)[None], (2, 1))

    cache = cache_lib.empty_cache(config, 2, CAPACITY)
    cache, _ = fast(cache_lib.prefill_text, config)(params, cache, jnp.asarray(padded), num_valid=jnp.array([6, 3]))
    batched = fast(cache_lib.query_velocity, config)(params, cache, TOKENS, x_t, 0.5, latent_pos)

    for row, prompt in enumerate(prompts):
        single = cache_lib.empty_cache(config, 1, CAPACITY)
        single, _ = fast(cache_lib.prefill_text, config)(params, single, jnp.asarray(prompt)[None])
        alone = fast(cache_lib.query_velocity, config)(params, single, TOKENS, x_t[row:row + 1], 0.5, latent_pos[:1])
        np.testing.assert_allclose(batched[row], alone[0], atol=1e-5)
    np.testing.assert_array_equal(cache.next_rope, [6, 3])


def test_greedy_generation_matches_full_recompute(setup):
    config, params = setup
    prompt = jnp.array([[TOKENS.bos, 11, 12, TOKENS.eos]])
    cache = cache_lib.empty_cache(config, 1, CAPACITY)
    cache, _ = fast(cache_lib.prefill_text, config)(params, cache, prompt)

    _, fed, logits, next_tokens = fast(cache_lib.greedy_generate, config)(params, cache, jnp.array([TOKENS.bos]), 4)

    sequence = jnp.concatenate([prompt, fed], axis=1)
    fresh = cache_lib.empty_cache(config, 1, CAPACITY)
    _, full_logits = fast(cache_lib.prefill_text, config)(params, fresh, sequence)
    np.testing.assert_allclose(logits[0], full_logits[0, 4:], atol=1e-4)
    np.testing.assert_array_equal(next_tokens[0], jnp.argmax(full_logits[0, 4:], axis=-1))
    np.testing.assert_array_equal(fed[0, 1:], next_tokens[0, :-1])


def test_image_prefill_advances_rope_by_one(setup):
    config, params = setup
    cache = cache_lib.empty_cache(config, 1, CAPACITY)
    latent = jnp.ones((1, 4, latent_dim(config)))

    cache, logits = fast(cache_lib.prefill_latent, config)(params, cache, TOKENS, latent, jnp.arange(4)[None])

    assert int(cache.length[0]) == 6
    assert int(cache.next_rope[0]) == 1
    assert logits.shape == (1, config.llm.vocab_size)


def test_guidance_without_scales_is_conditional():
    v = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 8)), jnp.float32)
    u = v * 0.5

    out = cache_lib.combine_guidance(v, u, u, 1.0, 1.0, "global", 0.0)

    np.testing.assert_allclose(out, v, atol=1e-6)


@pytest.mark.parametrize("renorm_type", ["global", "channel"])
def test_guidance_renorm_caps_norm(renorm_type):
    rng = np.random.default_rng(0)
    v, u_text, u_img = (jnp.asarray(rng.normal(size=(1, 4, 8)), jnp.float32) for _ in range(3))

    out = cache_lib.combine_guidance(v, u_text, u_img, 4.0, 1.5, renorm_type, 0.0)
    unclamped = cache_lib.combine_guidance(v, u_text, u_img, 4.0, 1.5, renorm_type, 1.0)

    axes = (-1,) if renorm_type == "channel" else (-2, -1)
    out_norm = np.sqrt(np.sum(np.square(out), axis=axes))
    cond_norm = np.sqrt(np.sum(np.square(v), axis=axes))
    assert np.all(out_norm <= cond_norm * (1 + 1e-5))
    guided = u_img + 1.5 * (u_text + 4.0 * (v - u_text) - u_img)
    np.testing.assert_allclose(unclamped, guided, atol=1e-5)


def test_shifted_schedule_endpoints():
    plain = cache_lib.shifted_timesteps(5, 1.0)
    shifted = cache_lib.shifted_timesteps(5, 3.0)

    np.testing.assert_allclose(plain, [1.0, 0.75, 0.5, 0.25, 0.0])
    assert shifted[0] == 1.0
    assert shifted[-1] == 0.0
    np.testing.assert_allclose(shifted[2], 3 * 0.5 / (1 + 2 * 0.5))
