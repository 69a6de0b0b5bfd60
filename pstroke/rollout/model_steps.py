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


def vit_grid(config) -> int:
    """Return the ViT patches per side of a generated image: the canvas rounded up to whole patches."""
    patch = config.model.vit.patch_size
    return -(-config.world.canvas // patch)


def cache_capacity(config) -> int:
    """Return the slots a row needs for the longest trajectory the sample settings allow.

    Prompt + max_rounds x (text segment with its two markers + image with its two markers, and its
    ViT block with two markers when the model has a ViT), plus room for one image past the end. An append that `keep_appends` undoes in a finished row
    then never reaches the capacity, where `dynamic_update_slice` would clamp its start and
    overwrite cached tokens.
    """
    rows, cols = image_grid(config)
    image_block = rows * cols + 2
    if config.model.vit.enabled:
        image_block += vit_grid(config) ** 2 + 2
    sample = config.sample
    per_round = (sample.max_text_tokens + 2) + image_block
    return sample.max_prompt_tokens + sample.max_rounds * per_round + image_block


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


def vit_patches(images, grid: int, patch: int) -> jax.Array:
    """Cut uint8 images [B, H, W, 3] into ViT patches [B, grid**2, patch**2 * 3] in [-1, 1].

    Images are resized (bilinear) to grid * patch pixels per side, normalised with mean 0.5 and
    std 0.5, and each patch is flattened in (row-in-patch, col-in-patch, channel) order.
    """
    batch = images.shape[0]
    side = grid * patch
    pixels = images.astype(jnp.float32) / 127.5 - 1.0
    pixels = jax.image.resize(pixels, (batch, side, side, 3), method="bilinear")
    tiles = pixels.reshape(batch, grid, patch, grid, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    return tiles.reshape(batch, grid * grid, patch * patch * 3)


def _write_image_and_vit(model_config, markers, latent_pos, to_images, grid, params, cache, x0):
    """Append the clean image block, then its ViT block at the next rope id.

    This is the order of BAGEL's context update. Returns (cache, logits [B, V] at the ViT block's
    `<|vision_end|>`).
    """
    cache, _ = _write_image(model_config, markers, latent_pos, params, cache, x0)
    vit = model_config.vit
    patches = vit_patches(to_images(params, x0), grid, vit.patch_size)
    rows, cols = jnp.meshgrid(jnp.arange(grid), jnp.arange(grid), indexing="ij")
    vit_pos = (rows * vit.max_patches_per_side + cols).reshape(1, -1).astype(jnp.int32)
    vit_pos = jnp.broadcast_to(vit_pos, patches.shape[:2])
    return cache_lib.prefill_vit(model_config, params, cache, markers, patches, vit_pos)


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
    to_images = functools.partial(_latents_to_images, model, (rows, cols))
    write_image = functools.partial(_write_image, model, markers, latent_pos)
    if model.vit.enabled:
        grid = vit_grid(config)
        if grid > model.vit.max_patches_per_side:
            raise UserError(f"a {config.world.canvas} px image has {grid} ViT patches per side but "
                            f"model.vit.max_patches_per_side is {model.vit.max_patches_per_side}; raise it")
        # NOTE: the Shapes data pipeline writes no ViT blocks yet, so a model trained on it has
        # never seen the ViT tokens this path adds.
        write_image = functools.partial(_write_image_and_vit, model, markers, latent_pos, to_images, grid)

    return ModelSteps(
        empty_cache=lambda batch: cache_lib.empty_cache(model, batch, capacity),
        prefill=functools.partial(_prefill, model),
        decode=functools.partial(_decode, model),
        sample_image=functools.partial(_sample_image, model, markers, latent_pos, int(sample.num_steps),
                                       float(sample.timestep_shift), guidance),
        write_image=write_image,
        select_rows=_select_rows,
        keep_appends=_keep_appends,
        latents_to_images=to_images,
        special=special,
        text_vocab_size=text_vocab_size,
        image_tokens=rows * cols,
        token_dim=latent_dim(model),
    )

