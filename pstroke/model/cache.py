"""KV-cache inference: context prefill, velocity queries with CFG, the Euler sampler, greedy decoding.

Every function is pure and jittable over (params, cache pytree, inputs), batched over a leading
row axis B (one prompt per row), so a `lax.scan` rollout can call them. A context is a `KVCache`
with static capacity; blocks are appended with `jax.lax.dynamic_update_slice` at each row's
`length`. Keys are stored after QK-norm and RoPE.

Block rules (BAGEL's inference layout):
- text block [bos, ids..., eos]: und, causal, rope ids r, r+1, ...; r += number of tokens.
- clean latent block [vision_start, latents (t = 0), vision_end]: markers und, latents gen, full
  attention, one rope id r; r += 1.
- ViT block [vision_start, ViT tokens, vision_end]: und, full, one rope id r; r += 1.
- velocity query [vision_start, latents (x_t, t), vision_end] at r: attends to the cache and
  itself, never written.
Causal queries are bottom-right aligned: a new token attends to every cached key and to the new
keys up to its own position.
"""

import dataclasses
import functools
import inspect
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp

from pstroke.batch import EXPERT_GEN, EXPERT_UND
from pstroke.model.unified import UnifiedModel

Array = Any
RENORM_TYPES = ("global", "channel", "text_channel")
STATIC_ARGNAMES = ("tokens", "guidance", "steps", "num_timesteps", "shift", "return_layers", "causal")


def jit_bound(function, model_config):
    """Return `function` of this module with `model_config` bound, jitted.

    Settings arguments (special tokens, guidance, step counts, the shift, flags) are static, so a
    new value compiles again; arrays and pytrees (params, caches) are traced.
    """
    bound = functools.partial(function, model_config)
    names = [name for name in STATIC_ARGNAMES if name in inspect.signature(bound).parameters]
    return jax.jit(bound, static_argnames=names)


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Token ids of the segment and image markers."""

    bos: int
    eos: int
    vision_start: int
    vision_end: int


@flax.struct.dataclass
class KVCache:
    """A static-capacity context per row.

    Fields:
      keys: [layers, B, capacity, kv_heads, head_dim], after QK-norm and RoPE.
      values: [layers, B, capacity, kv_heads, head_dim].
      length: [B] int32, number of valid cached tokens.
      next_rope: [B] int32, rope id of the next input.
    """

    keys: Array
    values: Array
    length: Array
    next_rope: Array


def empty_cache(model_config, rows: int, capacity: int, dtype=None) -> KVCache:
    """Return an empty cache of `rows` contexts holding up to `capacity` tokens each."""
    llm = model_config.llm
    dtype = dtype or {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[model_config.compute_dtype]
    shape = (llm.num_layers, rows, capacity, llm.num_kv_heads, llm.head_dim)
    zeros = jnp.zeros((rows,), jnp.int32)
    return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype), length=zeros, next_rope=zeros)


def _block_mask(cache: KVCache, block_len: int, causal: bool, num_valid: Optional[Array]) -> Array:
    """Return the [B, n, capacity + n] mask of a new block over the cache and itself."""
    capacity = cache.keys.shape[2]
    cached = jnp.arange(capacity)[None, None, :] < cache.length[:, None, None]
    cached = jnp.broadcast_to(cached, (cache.length.shape[0], block_len, capacity))

    query = jnp.arange(block_len)[:, None]
    key = jnp.arange(block_len)[None, :]
    own = (key <= query) if causal else jnp.ones((block_len, block_len), bool)
    own = jnp.broadcast_to(own, cached.shape[:2] + (block_len,))
    if num_valid is not None:
        own = own & (key[None] < num_valid[:, None, None])
    own = own | (key == query)[None]  # a padding query attends to itself, so no softmax row is empty
    return jnp.concatenate([cached, own], axis=-1)


def run_block(model_config, params, cache: KVCache, x: Array, expert: Array, position: Array,
              causal: bool, num_valid: Optional[Array] = None, return_layers: bool = False):
    """Run a block of embeddings x [B, n, H] on top of the cache without writing it.

    Returns (final hidden [B, n, H], new keys, new values [L, B, n, K, D], layer residuals or None).
    """
    model = UnifiedModel(model_config)
    mask = _block_mask(cache, x.shape[1], causal, num_valid)

    def forward(module, x, expert, position, mask, prefix):
        residual, layer_outputs, keys, values, routing = module.decode(x, expert, position, mask, prefix)
        hidden = module.language_model.final_norm(residual, routing)
        return hidden, keys, values, layer_outputs

    hidden, keys, values, layer_outputs = model.apply(
        {"params": params}, x, expert, position, mask, (cache.keys, cache.values), method=forward)
    return hidden, keys, values, (layer_outputs if return_layers else None)


def write_block(cache: KVCache, keys: Array, values: Array, num_new: Array, rope_advance: Array) -> KVCache:
    """Append new keys/values [L, B, n, K, D] at each row's length.

    NOTE: the caller keeps length + n <= capacity; past that, dynamic_update_slice clamps the
    start index and overwrites the newest cached tokens.
    """
    def write(buffer, new, start):
        return jax.lax.dynamic_update_slice(buffer, new.astype(buffer.dtype), (0, start, 0, 0))

    write_rows = jax.vmap(write, in_axes=(1, 1, 0), out_axes=1)
    return KVCache(keys=write_rows(cache.keys, keys, cache.length),
                   values=write_rows(cache.values, values, cache.length),
                   length=cache.length + num_new.astype(jnp.int32),
                   next_rope=cache.next_rope + rope_advance.astype(jnp.int32))


def _apply(model_config, params, method, *args):
    return UnifiedModel(model_config).apply({"params": params}, *args, method=method)


def logits_of(model_config, params, hidden: Array) -> Array:
    """Return float32 lm_head logits of final hidden states."""
    return _apply(model_config, params, lambda m, h: m.language_model.logits(h), hidden)


def velocity_of(model_config, params, hidden: Array) -> Array:
    """Return float32 llm2vae velocities of final hidden states."""
    return _apply(model_config, params, lambda m, h: m.llm2vae(h).astype(jnp.float32), hidden)


def text_positions(cache: KVCache, length: int) -> Array:
    """Return the rope ids [B, length] of a text block appended to the cache."""
    return cache.next_rope[:, None] + jnp.arange(length, dtype=jnp.int32)[None, :]


def prefill_text(model_config, params, cache: KVCache, token_ids: Array, num_valid: Optional[Array] = None):
    """Append a text block token_ids [B, n] (bos and eos included by the caller): und, causal.

    `num_valid` [B] counts the real tokens of each row (the rest is right padding). Returns
    (cache, logits [B, n, vocab] float32).
    """
    rows, length = token_ids.shape
    num_valid = jnp.full((rows,), length, jnp.int32) if num_valid is None else num_valid
    x = _apply(model_config, params, UnifiedModel.embed_text, token_ids)
    position = text_positions(cache, length)
    expert = jnp.full((rows, length), EXPERT_UND, jnp.int32)
    hidden, keys, values, _ = run_block(model_config, params, cache, x, expert, position, True, num_valid)
    cache = write_block(cache, keys, values, num_valid, num_valid)
    return cache, logits_of(model_config, params, hidden)


def _image_block(model_config, params, tokens: SpecialTokens, inner: Array, inner_expert: int):
    """Wrap inner embeddings [B, n, H] with the vision_start / vision_end marker embeddings."""
    rows = inner.shape[0]
    markers = jnp.broadcast_to(jnp.array([tokens.vision_start, tokens.vision_end], jnp.int32), (rows, 2))
    marker_x = _apply(model_config, params, UnifiedModel.embed_text, markers).astype(inner.dtype)
    x = jnp.concatenate([marker_x[:, :1], inner, marker_x[:, 1:]], axis=1)
    expert = jnp.full(x.shape[:2], EXPERT_UND, jnp.int32).at[:, 1:-1].set(inner_expert)
    return x, expert


def prefill_latent(model_config, params, cache: KVCache, tokens: SpecialTokens, latent: Array,
                   latent_pos: Array):
    """Append a clean latent block: latent tokens [B, n, D] at table ids [B, n], with t = 0.

    Returns (cache, logits [B, vocab] at the block's vision_end token), which choose what follows.
    """
    t = jnp.zeros(latent.shape[:2], jnp.float32)
    inner = _apply(model_config, params, UnifiedModel.embed_latent, latent, t, latent_pos)
    x, expert = _image_block(model_config, params, tokens, inner, EXPERT_GEN)
    return _prefill_image(model_config, params, cache, x, expert)


def _prefill_image(model_config, params, cache: KVCache, x: Array, expert: Array):
    """Write an image block x [B, n, H] at one rope id; return (cache, logits at its last token)."""
    rows = x.shape[0]
    position = jnp.broadcast_to(cache.next_rope[:, None], expert.shape)
    hidden, keys, values, _ = run_block(model_config, params, cache, x, expert, position, False)
    cache = write_block(cache, keys, values, jnp.full((rows,), x.shape[1]), jnp.ones((rows,), jnp.int32))
    return cache, logits_of(model_config, params, hidden[:, -1])


def prefill_vit(model_config, params, cache: KVCache, tokens: SpecialTokens, patches: Array, vit_pos: Array):
    """Append a ViT block: one image per row as patches [B, n, P] at position ids [B, n].

    Returns (cache, logits [B, vocab] at the block's vision_end token).
    """
    rows, length = patches.shape[:2]
    vit_mask = jnp.ones((rows, length, length), bool)
    inner = _apply(model_config, params, UnifiedModel.embed_vit, patches, vit_pos, vit_mask)
    x, expert = _image_block(model_config, params, tokens, inner, EXPERT_UND)
    return _prefill_image(model_config, params, cache, x, expert)


def query_velocity(model_config, params, cache: KVCache, tokens: SpecialTokens, x_t: Array, t: Array,
                   latent_pos: Array, return_layers: bool = False):
    """Predict the velocity [B, n, D] of noisy latent tokens x_t at flow time t ([B] or scalar).

    The query [vision_start, latents, vision_end] sits at the context's next rope id; the cache is
    not written. With `return_layers`, also returns the query's residuals [L, B, n + 2, H].
    """
    t_tokens = jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(-1, 1), x_t.shape[:2])
    inner = _apply(model_config, params, UnifiedModel.embed_latent, x_t, t_tokens, latent_pos)
    x, expert = _image_block(model_config, params, tokens, inner, EXPERT_GEN)
    position = jnp.broadcast_to(cache.next_rope[:, None], expert.shape)
    hidden, _, _, layers = run_block(model_config, params, cache, x, expert, position, False,
                                     return_layers=return_layers)
    velocity = velocity_of(model_config, params, hidden[:, 1:-1])
    return (velocity, layers) if return_layers else velocity


def _norm(x: Array, per_token: bool) -> Array:
    axes = (-1,) if per_token else (-2, -1)
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def combine_guidance(v_cond: Array, v_text_uncond: Array, v_img_uncond: Optional[Array], text_scale: float,
                     img_scale: float, renorm_type: str, renorm_min: float) -> Array:
    """Combine branch velocities [B, n, D] with text and image guidance and renormalisation.

    global / channel: v1 = u_t + s_t (v - u_t); v2 = u_i + s_i (v1 - u_i) (v2 = v1 when s_i <= 1);
    result v2 * clamp(|v| / (|v2| + 1e-8), renorm_min, 1), norms over each row's tokens and
    channels (global) or per token (channel). text_channel: v1 rescaled per token by
    clamp(|v| / (|v1| + 1e-8), renorm_min, 1), then image guidance without renorm.
    """
    if renorm_type not in RENORM_TYPES:
        raise ValueError(f"unknown renorm type {renorm_type!r}: expected one of {RENORM_TYPES}")
    guided = v_text_uncond + text_scale * (v_cond - v_text_uncond)
    if renorm_type == "text_channel":
        scale = jnp.clip(_norm(v_cond, True) / (_norm(guided, True) + 1e-8), renorm_min, 1.0)
        guided = guided * scale
        if img_scale > 1.0:
            guided = v_img_uncond + img_scale * (guided - v_img_uncond)
        return guided

    if img_scale > 1.0:
        guided = v_img_uncond + img_scale * (guided - v_img_uncond)
    per_token = renorm_type == "channel"
    scale = jnp.clip(_norm(v_cond, per_token) / (_norm(guided, per_token) + 1e-8), renorm_min, 1.0)
    return guided * scale


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """Classifier-free guidance settings (static under jit).

    Fields:
      text_scale, img_scale: guidance scales; a branch runs only when its scale is > 1, and no
        guidance at all is applied unless text_scale > 1.
      interval: (lo, hi); guidance is applied only at steps with lo < t <= hi (shifted t).
      renorm_type: "global", "channel" or "text_channel".
      renorm_min: lower clamp of the renorm factor; 1.0 disables renorm.
    """

    text_scale: float = 1.0
    img_scale: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)
    renorm_type: str = "global"
    renorm_min: float = 0.0


@flax.struct.dataclass
class GuidanceContexts:
    """The three CFG contexts: cond (everything), text-uncond and image-uncond (None when unused)."""

    cond: KVCache
    text_uncond: Optional[KVCache] = None
    img_uncond: Optional[KVCache] = None


def guided_velocity(model_config, params, contexts: GuidanceContexts, tokens: SpecialTokens, x_t: Array,
                    t: Array, latent_pos: Array, guidance: GuidanceConfig):
    """Return (velocity [B, n, D], guided flag) at scalar flow time t, with CFG when it applies."""
    def branch(cache):
        return query_velocity(model_config, params, cache, tokens, x_t, t, latent_pos)

    v_cond = branch(contexts.cond)
    if guidance.text_scale <= 1.0:
        return v_cond, jnp.array(False)

    lo, hi = guidance.interval
    in_interval = (t > lo) & (t <= hi)

    def guided(_):
        v_text = branch(contexts.text_uncond)
        v_img = branch(contexts.img_uncond) if guidance.img_scale > 1.0 else None
        return combine_guidance(v_cond, v_text, v_img, guidance.text_scale, guidance.img_scale,
                                guidance.renorm_type, guidance.renorm_min)

    velocity = jax.lax.cond(in_interval, guided, lambda _: v_cond, None)
    return velocity, in_interval


def shifted_timesteps(num_timesteps: int, shift: float) -> Array:
    """Return linspace(1, 0, num_timesteps) in float32 shifted by t <- s t / (1 + (s - 1) t)."""
    t = jnp.linspace(1.0, 0.0, num_timesteps, dtype=jnp.float32)
    return shift * t / (1.0 + (shift - 1.0) * t)


@flax.struct.dataclass
class SampleTrace:
    """Per-step record of the Euler sampler.

    Fields:
      t: [steps] flow time of each model evaluation.
      guided: [steps] bool, whether guidance was applied.
      x: [steps, B, n, D] latent tokens before each step.
      v: [steps, B, n, D] velocity used at each step.
    """

    t: Array
    guided: Array
    x: Array
    v: Array


def sample_latents(model_config, params, contexts: GuidanceContexts, tokens: SpecialTokens, noise: Array,
                   latent_pos: Array, num_timesteps: int, shift: float, guidance: GuidanceConfig):
    """Integrate x from t = 1 (noise [B, n, D]) to 0 with Euler steps on the shifted schedule.

    num_timesteps points give num_timesteps - 1 evaluations: x <- x - v(x, t_k) (t_k - t_{k+1}).
    Returns (final latent tokens [B, n, D], SampleTrace).
    """
    timesteps = shifted_timesteps(num_timesteps, shift)

    def step(x, k):
        t, t_next = timesteps[k], timesteps[k + 1]
        velocity, guided = guided_velocity(model_config, params, contexts, tokens, x, t, latent_pos, guidance)
        x_next = x - velocity * (t - t_next)
        return x_next, SampleTrace(t=t, guided=guided, x=x, v=velocity)

    final, trace = jax.lax.scan(step, noise, jnp.arange(num_timesteps - 1))
    return final, trace


def decode_step(model_config, params, cache: KVCache, token: Array):
    """Feed one token [B] at each row's next rope id (und, cached); return (cache, logits [B, vocab])."""
    cache, logits = prefill_text(model_config, params, cache, token[:, None])
    return cache, logits[:, 0]


def greedy_generate(model_config, params, cache: KVCache, first_token: Array, steps: int):
    """Feed `first_token` [B], then `steps - 1` greedy tokens, one per step.

    Returns (cache, fed tokens [B, steps], logits [B, steps, vocab], next tokens [B, steps]) where
    next_tokens[:, k] = argmax(logits[:, k]) and fed[:, k + 1] = next_tokens[:, k]. No early stop.
    """
    def step(carry, _):
        cache, token = carry
        cache, logits = decode_step(model_config, params, cache, token)
        next_token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return (cache, next_token), (token, logits, next_token)

    (cache, _), (fed, logits, next_tokens) = jax.lax.scan(step, (cache, first_token.astype(jnp.int32)), None,
                                                           length=steps)
    return cache, fed.T, logits.transpose(1, 0, 2), next_tokens.T
