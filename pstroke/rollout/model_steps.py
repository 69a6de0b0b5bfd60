"""`ModelSteps` of the unified model: text decoding, velocity queries and image writes over a KV cache.

The cache is static-shape: per layer, keys and values [L, B, S, kv_heads, head_dim] (after QK-norm
and RoPE), plus each row's kv length and next RoPE id. Every step runs `UnifiedModel.decode` with
the cache as `prefix_kv`, a mask that shows the first `length` slots of a row, and the new block.

Blocks follow the training layout of `pstroke.data.sequence`: a text token is one causal und token
at the next id; an image is `<|vision_start|>` + latents + `<|vision_end|>` in one full-attention
block at one id (markers und, latents gen), which the clean copy advances by one.
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from pstroke.batch import EXPERT_GEN, EXPERT_UND
from pstroke.model import embed
from pstroke.model.unified import UnifiedModel, latent_dim
from pstroke.rollout.steps import ModelSteps, SpecialTokens


@flax.struct.dataclass
class KVCache:
    """Static-shape KV cache of B rows with S slots each."""

    keys: jax.Array  # [L, B, S, kv_heads, head_dim] compute dtype
    values: jax.Array  # [L, B, S, kv_heads, head_dim]
    length: jax.Array  # [B] int32: filled slots
    next_position: jax.Array  # [B] int32: RoPE id of the next token


def image_grid(config) -> tuple[int, int]:
    """Return the (rows, cols) token grid of one image of `config.world.canvas` pixels."""
    model = config.model
    side = config.world.canvas // (model.latent_downsample * model.latent_patch_size)
    return side, side


def cache_capacity(config) -> int:
    """Return S, the slots a row needs for the longest trajectory the sample settings allow.

    Prompt + max_rounds x (text segment with its two markers + image with its two markers).
    """
    rows, cols = image_grid(config)
    sample = config.sample
    per_round = (sample.max_text_tokens + 2) + (rows * cols + 2)
    return sample.max_prompt_tokens + sample.max_rounds * per_round


def _empty_cache(model_config, capacity: int, batch: int) -> KVCache:
    llm = model_config.llm
    dtype = jnp.bfloat16 if model_config.compute_dtype == "bfloat16" else jnp.float32
    shape = (llm.num_layers, batch, capacity, llm.num_kv_heads, llm.head_dim)
    return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                   length=jnp.zeros((batch,), jnp.int32), next_position=jnp.zeros((batch,), jnp.int32))


def _prefix_mask(cache: KVCache, block: int) -> jax.Array:
    """Mask [B, block, S + block]: filled cache slots, then the block's own keys (full attention).

    A one-token block is also the causal case: the token sees the cache and itself.
    """
    batch, capacity = cache.keys.shape[1], cache.keys.shape[2]
    filled = jnp.arange(capacity)[None, :] < cache.length[:, None]
    cached = jnp.broadcast_to(filled[:, None, :], (batch, block, capacity))
    own = jnp.ones((batch, block, block), bool)
    return jnp.concatenate([cached, own], axis=-1)


def _run_block(module: UnifiedModel, cache: KVCache, x, expert):
    """Run a block of embeddings x [B, T, H] at each row's next id; return (residual, routing, k, v)."""
    batch, block = expert.shape
    position = jnp.broadcast_to(cache.next_position[:, None], (batch, block))
    residual, _, keys, values, routing = module.decode(
        x, expert, position, _prefix_mask(cache, block), prefix_kv=(cache.keys, cache.values))
    return residual, routing, keys, values


def _append(cache: KVCache, keys, values, position_advance: int) -> KVCache:
    """Write new keys/values [L, B, T, ...] at each row's length; advance length and RoPE id."""

    def write_row(buffer, new, start):  # buffer [L, S, ...], new [L, T, ...] of one row
        return jax.lax.dynamic_update_slice(buffer, new.astype(buffer.dtype), (0, start, 0, 0))

    write = jax.vmap(write_row, in_axes=(1, 1, 0), out_axes=1)
    block = keys.shape[2]
    return KVCache(keys=write(cache.keys, keys, cache.length), values=write(cache.values, values, cache.length),
                   length=cache.length + block, next_position=cache.next_position + position_advance)


def _decode(module: UnifiedModel, cache: KVCache, token):
    x = module.embed_text(token[:, None])
    expert = jnp.full(token.shape + (1,), EXPERT_UND, jnp.int32)
    residual, routing, keys, values = _run_block(module, cache, x, expert)
    _, logits, _ = module.heads(residual, routing)
    return _append(cache, keys, values, position_advance=1), logits[:, 0]


def _image_block(module: UnifiedModel, cache: KVCache, x_t, t, special: SpecialTokens, latent_pos):
    """Embed `<|vision_start|>` + latents x_t [B, N, D] at flow time t [B] + `<|vision_end|>` and run it."""
    batch, count, _ = x_t.shape
    start = module.embed_text(jnp.full((batch, 1), special.vision_start, jnp.int32))
    end = module.embed_text(jnp.full((batch, 1), special.vision_end, jnp.int32))
    times = jnp.broadcast_to(t[:, None], (batch, count))
    positions = jnp.broadcast_to(latent_pos[None, :], (batch, count))
    latents = module.embed_latent(x_t, times, positions)
    x = jnp.concatenate([start, latents.astype(start.dtype), end], axis=1)

    expert = np.full((count + 2,), EXPERT_GEN, np.int32)
    expert[0] = expert[-1] = EXPERT_UND
    expert = jnp.broadcast_to(jnp.asarray(expert)[None, :], (batch, count + 2))
    return _run_block(module, cache, x, expert)


def _velocity(module: UnifiedModel, cache: KVCache, x_t, t, special, latent_pos):
    residual, routing, _, _ = _image_block(module, cache, x_t, t, special, latent_pos)
    _, _, velocity = module.heads(residual, routing)
    return velocity[:, 1:-1]


def _write_image(module: UnifiedModel, cache: KVCache, x0, special, latent_pos):
    t = jnp.zeros((x0.shape[0],), jnp.float32)
    residual, routing, keys, values = _image_block(module, cache, x0, t, special, latent_pos)
    _, logits, _ = module.heads(residual, routing)
    return _append(cache, keys, values, position_advance=1), logits[:, -1]


def _apply(config, method, params, *args):
    """Call `method(module, *args)` on `UnifiedModel(config.model)` bound to `params`."""
    return UnifiedModel(config.model).apply({"params": params}, *args, method=method)


def _select_rows(mask, first: KVCache, second: KVCache) -> KVCache:
    def pick(a, b, axis):
        shape = [1] * a.ndim
        shape[axis] = mask.shape[0]
        return jnp.where(mask.reshape(shape), a, b)

    return KVCache(keys=pick(first.keys, second.keys, 1), values=pick(first.values, second.values, 1),
                   length=pick(first.length, second.length, 0),
                   next_position=pick(first.next_position, second.next_position, 0))


def _latents_to_images(config, params, tokens):
    """Decode tokens [..., N, D] of the pixel codec to uint8 images [..., H, W, 3]."""
    model = config.model
    grid = image_grid(config)

    def one(image_tokens):
        latent = embed.unpatchify_latent(image_tokens, grid, model.latent_patch_size, model.latent_channels)
        return embed.latent_to_pixels(latent)

    flat = tokens.reshape((-1,) + tokens.shape[-2:])
    images = jax.vmap(one)(flat)
    return images.reshape(tokens.shape[:-2] + images.shape[1:])


def build_model_steps(config, special: SpecialTokens, text_vocab_size: int) -> ModelSteps:
    """Return the `ModelSteps` of `UnifiedModel(config.model)` for the `config.sample` settings.

    `text_vocab_size` is the tokenizer's vocabulary size (at most model.llm.vocab_size).
    Build it once and reuse it: `rollout_jit` compiles once per `ModelSteps` value.
    """
    model = config.model
    if model.codec != "pixels":
        # TODO: decode "vae" latents with pstroke.model.vae once a trained autoencoder exists.
        raise NotImplementedError(f"the rollout decodes images only with model.codec='pixels', got {model.codec!r}")
    rows, cols = image_grid(config)
    latent_pos = jnp.asarray(embed.latent_positions((rows, cols), model.max_latent_size))
    capacity = cache_capacity(config)

    return ModelSteps(
        empty_cache=functools.partial(_empty_cache, model, capacity),
        decode=functools.partial(_apply, config, _decode),
        velocity=functools.partial(_apply_with, config, _velocity, special, latent_pos),
        write_image=functools.partial(_apply_with, config, _write_image, special, latent_pos),
        select_rows=_select_rows,
        latents_to_images=functools.partial(_latents_to_images, config),
        special=special,
        text_vocab_size=text_vocab_size,
        image_tokens=rows * cols,
        token_dim=latent_dim(model),
    )


def _apply_with(config, method, special, latent_pos, params, cache, *args) -> Any:
    return _apply(config, lambda module, *inner: method(module, *inner, special, latent_pos), params, cache, *args)
