"""The model functions the rollout calls: the contract between the rollout and a KV-cache model.

The rollout only orchestrates. Every forward pass goes through a `ModelSteps` value, a bundle of
pure functions over a batched static-shape KV cache, where row b of every array belongs to prompt b.
`pstroke.rollout.model_steps` builds one from the unified model; tests wrap it to steer decisions.
"""

from typing import Any, Callable, NamedTuple

import jax

Cache = Any  # pytree of arrays; every leaf has the prompt (batch) axis where `select_rows` expects it
Params = Any


class SpecialTokens(NamedTuple):
    """Ids of the marker tokens that structure a sequence."""

    im_start: int  # opens a text segment
    im_end: int  # closes a text segment; its logits choose what follows
    vision_start: int  # opens an image
    vision_end: int  # closes an image
    end_of_text: int  # ends the whole sequence
    pad: int


class ModelSteps(NamedTuple):
    """Pure, jittable model functions over a batched KV cache.

    Shapes: B prompts, V vocabulary, N image tokens, D values per image token.
    """

    empty_cache: Callable[[int], Cache]
    """Return an empty cache for B rows (kv length 0, next rope id 0)."""

    prefill: Callable[[Params, Cache, jax.Array, jax.Array], tuple[Cache, jax.Array]]
    """Append a text block tokens [B, P] int32 whose first length [B] entries are real (und, causal).

    Returns the cache and the logits [B, V] float32 at each row's last real token.
    """

    decode: Callable[[Params, Cache, jax.Array], tuple[Cache, jax.Array]]
    """Append one text token per row ([B] int32, und expert, causal) at the row's next rope id.

    Returns the cache with the token written and the next-token logits [B, V] float32.
    """

    sample_image: Callable[[Params, Cache, Cache, Cache, jax.Array], jax.Array]
    """Sample clean image tokens [B, N, D] from noise [B, N, D] given the cond, text-uncond and
    image-uncond contexts. Denoising steps attend to the contexts without writing them.
    """

    write_image: Callable[[Params, Cache, jax.Array], tuple[Cache, jax.Array]]
    """Append a clean image x0 [B, N, D] (markers + latents at t = 0) to the cache, advancing each
    row's rope id as the training layout does.

    Returns the cache and the logits [B, V] at the image's closing `<|vision_end|>`, which choose
    what follows the image.
    """

    select_rows: Callable[[jax.Array, Cache, Cache], Cache]
    """Return a cache with the rows of the first cache where mask [B] is true, else of the second."""

    keep_appends: Callable[[jax.Array, Cache, Cache], Cache]
    """Keep the appended block in the rows where mask [B] is true; undo it elsewhere.

    The first cache must be the second with one block appended. Undoing only resets the row's
    length and next rope id, so the block stays in slots past the length. Those slots are masked
    out of attention and the next append overwrites them. This avoids copying whole caches at
    every decoded token.
    """

    latents_to_images: Callable[[Params, jax.Array], jax.Array]
    """Decode image tokens [..., N, D] to uint8 RGB images [..., H, W, 3]."""

    special: SpecialTokens
    text_vocab_size: int  # ids at or above it are model rows without a token, never decoded
    image_tokens: int  # N
    token_dim: int  # D
