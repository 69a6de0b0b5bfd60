"""With a ViT, a generated image is written as its clean latent block and then its ViT block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke.data.tokenizer import build_tokenizer
from pstroke.errors import UserError
from pstroke.model import embed
from pstroke.rollout import rollout as rollout_lib
from pstroke.rollout import testing
from pstroke.rollout.model_steps import build_model_steps, vit_grid, vit_patches
from pstroke.rollout.sampling import encode_prompt, special_tokens

VIT_OVERRIDES = ["model.vit.enabled=true", "model.vit.patch_size=4", "model.vit.hidden_size=16",
                 "model.vit.intermediate_size=32", "model.vit.num_heads=2", "model.vit.num_layers=1",
                 "model.vit.max_patches_per_side=8"]


def test_vit_patches_match_data_layout():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)

    patches = vit_patches(jnp.asarray(image)[None], grid=4, patch=4)

    expected = embed.patchify_latent(embed.pixels_to_latent(image), 4)  # (row, col, channel) per patch
    np.testing.assert_allclose(patches[0], expected, atol=1e-6)


def test_image_write_adds_vit_block():
    config = testing.tiny_config(VIT_OVERRIDES)
    tokenizer = build_tokenizer(config)
    steps = build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
    params = testing.random_params(config)
    segment = encode_prompt("a photo of a red circle", tokenizer, config.sample.max_prompt_tokens)
    prompt = jnp.asarray([segment + [tokenizer.pad_id] * (config.sample.max_prompt_tokens - len(segment))])
    state = rollout_lib.start_state(steps, params, prompt, jnp.asarray([len(segment)]),
                                    rollout_lib.prompt_keys(0, jnp.arange(1)))
    image = jax.random.uniform(jax.random.PRNGKey(1), (1, steps.image_tokens, steps.token_dim), minval=-1.0)

    cache, logits = jax.jit(steps.write_image)(params, state.cond, image)

    vit_tokens = vit_grid(config) ** 2
    assert vit_tokens == 16
    assert int(cache.length[0]) == len(segment) + (steps.image_tokens + 2) + (vit_tokens + 2)
    assert int(cache.next_rope[0]) == int(state.cond.next_rope[0]) + 2
    assert logits.shape == (1, config.model.llm.vocab_size)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_vit_grid_over_table_rejected():
    config = testing.tiny_config(VIT_OVERRIDES + ["model.vit.max_patches_per_side=2"])
    tokenizer = build_tokenizer(config)
    with pytest.raises(UserError, match="max_patches_per_side"):
        build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
