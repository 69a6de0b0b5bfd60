"""`ModelSteps` of the unified model, built on the KV-cache functions of `pstroke.model.cache`.

Blocks follow the training layout of `pstroke.data.sequence`: a text segment is a causal und
block, one RoPE id per token; a generated image is written as its clean copy,
`<|vision_start|>` + latents (t = 0) + `<|vision_end|>` at one RoPE id, which advances it by one.
Image sampling is the model's shifted Euler sampler with BAGEL's three CFG contexts.
"""

import functools

import jax
import jax.numpy as jnp

from pstroke.errors import UserError
from pstroke.model import cache as cache_lib
from pstroke.model import embed
from pstroke.model.unified import latent_dim
from pstroke.rollout.steps import ModelSteps, SpecialTokens


def image_grid(config) -> tuple[int, int]:
    """Return the (rows, cols) token grid of one image of `config.world.canvas` pixels."""
    model = config.model
    side = config.world.canvas // (model.latent_downsample * model.latent_patch_size)
    return side, side


def cache_capacity(config) -> int:
    """Return the slots a row needs for the longest trajectory the sample settings allow.

    Prompt + max_rounds x (text segment with its two markers + image with its two markers), plus
    room for one image block past the end. An append that `keep_appends` undoes in a finished row
    then never reaches the capacity, where `dynamic_update_slice` would clamp its start and
    overwrite cached tokens.
    """
    rows, cols = image_grid(config)
    sample = config.sample
    per_round = (sample.max_text_tokens + 2) + (rows * cols + 2)
    return sample.max_prompt_tokens + sample.max_rounds * per_round + (rows * cols + 2)


def guidance_config(sample) -> cache_lib.GuidanceConfig:
    """Return the model's CFG settings from the `sample` config section.

    Raises:
      UserError: an unknown renorm type, or an interval whose bounds are not 0 <= low <= high <= 1.
    """
    if sample.cfg_renorm_type not in cache_lib.RENORM_TYPES:
        raise UserError(f"invalid sample.cfg_renorm_type {sample.cfg_renorm_type!r}; expected one of "
                        f"{', '.join(cache_lib.RENORM_TYPES)}")
    low, high = (float(bound) for bound in sample.cfg_interval)
    if not 0.0 <= low <= high <= 1.0:
        raise UserError(f"invalid sample.cfg_interval {tuple(sample.cfg_interval)}; expected (low, high) "
                        "with 0 <= low <= high <= 1")
    return cache_lib.GuidanceConfig(text_scale=float(sample.cfg_text_scale), img_scale=float(sample.cfg_img_scale),
                                    interval=(low, high), renorm_type=str(sample.cfg_renorm_type),
                                    renorm_min=float(sample.cfg_renorm_min))


def _prefill(model_config, params, cache, tokens, length):
    cache, logits = cache_lib.prefill_text(model_config, params, cache, tokens, num_valid=length)
    last = jnp.take_along_axis(logits, (length - 1)[:, None, None], axis=1)
    return cache, last[:, 0]


def _decode(model_config, params, cache, token):
    return cache_lib.decode_step(model_config, params, cache, token)


def _sample_image(model_config, markers, latent_pos, num_steps, shift, guidance, params, cond, text_uncond,
                  image_uncond, noise):
    contexts = cache_lib.GuidanceContexts(
        cond=cond,
        text_uncond=text_uncond if guidance.text_scale > 1.0 else None,
        img_uncond=image_uncond if guidance.text_scale > 1.0 and guidance.img_scale > 1.0 else None)
    positions = jnp.broadcast_to(latent_pos[None, :], noise.shape[:2])
    image, _ = cache_lib.sample_latents(model_config, params, contexts, markers, noise, positions, num_steps, shift,
                                        guidance)
    return image


def _write_image(model_config, markers, latent_pos, params, cache, x0):
    """Append the clean image block; return (cache, logits [B, V] at its `<|vision_end|>`)."""
    positions = jnp.broadcast_to(latent_pos[None, :], x0.shape[:2])
    return cache_lib.prefill_latent(model_config, params, cache, markers, x0, positions)


def _select_rows(mask, first: cache_lib.KVCache, second: cache_lib.KVCache) -> cache_lib.KVCache:
    def pick(a, b, axis):
        shape = [1] * a.ndim
        shape[axis] = mask.shape[0]
        return jnp.where(mask.reshape(shape), a, b)

    return cache_lib.KVCache(keys=pick(first.keys, second.keys, 1), values=pick(first.values, second.values, 1),
                             length=pick(first.length, second.length, 0),
                             next_rope=pick(first.next_rope, second.next_rope, 0))


def _keep_appends(mask, appended: cache_lib.KVCache, original: cache_lib.KVCache) -> cache_lib.KVCache:
    return appended.replace(length=jnp.where(mask, appended.length, original.length),
                            next_rope=jnp.where(mask, appended.next_rope, original.next_rope))


def _latents_to_images(model_config, grid, params, tokens):
    """Decode tokens [..., N, D] of the pixel codec to uint8 images [..., H, W, 3]."""

    def one(image_tokens):
        latent = embed.unpatchify_latent(image_tokens, grid, model_config.latent_patch_size,
                                         model_config.latent_channels)
        return embed.latent_to_pixels(latent)

    flat = tokens.reshape((-1,) + tokens.shape[-2:])
    images = jax.vmap(one)(flat)
    return images.reshape(tokens.shape[:-2] + images.shape[1:])


def build_model_steps(config, special: SpecialTokens, text_vocab_size: int) -> ModelSteps:
    """Return the `ModelSteps` of `UnifiedModel(config.model)` for the `config.sample` settings.

    `text_vocab_size` is the tokenizer's vocabulary size (at most model.llm.vocab_size). Build the
    steps once and reuse them: `rollout_jit` compiles once per `ModelSteps` value.

    Raises:
      UserError: invalid guidance settings, or a model this rollout cannot sample from.
    """
    model = config.model
    if model.codec != "pixels":
        # TODO: decode "vae" latents with pstroke.model.vae once a trained autoencoder exists.
        raise UserError(f"the rollout decodes images only with model.codec='pixels', got {model.codec!r}; "
                        "set --config.model.codec=pixels")
    if model.vit.enabled:
        # TODO: re-encode each generated image with the ViT (cache_lib.prefill_vit) once the data
        # pipeline trains on ViT splits; without them the model never saw ViT tokens.
        raise UserError("the rollout has no ViT path yet; set --config.model.vit.enabled=false")
    guidance = guidance_config(config.sample)
    if config.sample.num_steps < 2:
        raise UserError(f"invalid sample.num_steps {config.sample.num_steps}; the sampler needs at least 2 "
                        "timesteps (one velocity evaluation)")

    rows, cols = image_grid(config)
    latent_pos = jnp.asarray(embed.latent_positions((rows, cols), model.max_latent_size))
    markers = cache_lib.SpecialTokens(bos=special.im_start, eos=special.im_end, vision_start=special.vision_start,
                                      vision_end=special.vision_end)
    capacity = cache_capacity(config)
    sample = config.sample

    return ModelSteps(
        empty_cache=lambda batch: cache_lib.empty_cache(model, batch, capacity),
        prefill=functools.partial(_prefill, model),
        decode=functools.partial(_decode, model),
        sample_image=functools.partial(_sample_image, model, markers, latent_pos, int(sample.num_steps),
                                       float(sample.timestep_shift), guidance),
        write_image=functools.partial(_write_image, model, markers, latent_pos),
        select_rows=_select_rows,
        keep_appends=_keep_appends,
        latents_to_images=functools.partial(_latents_to_images, model, (rows, cols)),
        special=special,
        text_vocab_size=text_vocab_size,
        image_tokens=rows * cols,
        token_dim=latent_dim(model),
    )

