"""The packed training batch: per-token metadata that every part of pstroke agrees on.

A batch is a dict of arrays with a leading [B, T] (rows, tokens per row). Each row packs several
samples; each sample is a list of contiguous *splits* (a text segment, or an image with its two
marker tokens). The attention mask is never stored: the model computes it from `sample_id`,
`split_id` and `split_mode` (see `attention_allowed`).

Fields (dtype, shape, meaning):

| field        | dtype   | shape      | meaning |
|--------------|---------|------------|---------|
| `token_id`   | int32   | [B, T]     | text or marker token id; 0 on image tokens |
| `kind`       | int32   | [B, T]     | KIND_TEXT (text and markers), KIND_LATENT (codec image token), KIND_VIT |
| `sample_id`  | int32   | [B, T]     | packed sample, 1, 2, ... along the row; 0 marks padding |
| `split_id`   | int32   | [B, T]     | split index within the row, non-decreasing along the row |
| `split_mode` | int32   | [B, T]     | MODE_CAUSAL (text), MODE_FULL (clean image), MODE_NOISE (image to denoise) |
| `expert`     | int32   | [B, T]     | EXPERT_UND (text, markers, ViT) or EXPERT_GEN (latent tokens) |
| `position`   | int32   | [B, T]     | RoPE id: +1 per text token, one id per image split, noisy and clean copy share it |
| `latent`     | float32 | [B, T, D]  | clean image token x0 (D = latent_patch_size**2 * latent_channels); 0 elsewhere |
| `latent_pos` | int32   | [B, T]     | row * max_latent_size + col of a latent token; 0 elsewhere |
| `timestep`   | float32 | [B, T]     | flow time t in [0, 1] of latent tokens; 0 on clean copies; the train step draws it on noise splits |
| `vit_patch`  | float32 | [B, T, P]  | only with a ViT: patch pixels in (row, col, channel) order, P = 3 * patch_size**2 |
| `vit_pos`    | int32   | [B, T]     | only with a ViT: row * max_patches_per_side + col |
| `ce_label`   | int32   | [B, T]     | next-token target at this position |
| `ce_weight`  | float32 | [B, T]     | cross-entropy weight (0 where no CE) |
| `mse_weight` | float32 | [B, T]     | flow-matching weight (1 on noisy latent tokens, else 0) |
| `stage`      | int32   | [B, T]     | STAGES index of the token, for per-stage metrics |
| `drop_group` | int32   | [B, T]     | DROP_NONE, DROP_TEXT (prompt text) or DROP_IMAGE (context image) for CFG dropout |
| `key_visible`| bool    | [B, T]     | set by the train step only: False on a CFG-dropped split, whose keys other splits cannot see |

Padding tokens have `sample_id` 0, causal mode, and zero loss weights.
"""

import numpy as np

MODE_CAUSAL, MODE_FULL, MODE_NOISE = 0, 1, 2
EXPERT_UND, EXPERT_GEN = 0, 1
KIND_TEXT, KIND_LATENT, KIND_VIT = 0, 1, 2
DROP_NONE, DROP_TEXT, DROP_IMAGE = 0, 1, 2

STAGES = ("none", "prompt", "plan", "inspect", "refine", "draft_image", "refined_image")
STAGE_INDEX = {name: index for index, name in enumerate(STAGES)}

INT_FIELDS = ("token_id", "kind", "sample_id", "split_id", "split_mode", "expert", "position",
              "latent_pos", "ce_label", "stage", "drop_group")
FLOAT_FIELDS = ("timestep", "ce_weight", "mse_weight")
VIT_FIELDS = ("vit_patch", "vit_pos")


def empty_batch(rows: int, length: int, latent_dim: int, vit_patch_dim: int = 0) -> dict[str, np.ndarray]:
    """Return an all-padding batch of `rows` x `length` tokens (ViT fields only if `vit_patch_dim`)."""
    batch = {name: np.zeros((rows, length), np.int32) for name in INT_FIELDS}
    batch.update({name: np.zeros((rows, length), np.float32) for name in FLOAT_FIELDS})
    batch["latent"] = np.zeros((rows, length, latent_dim), np.float32)
    if vit_patch_dim:
        batch["vit_patch"] = np.zeros((rows, length, vit_patch_dim), np.float32)
        batch["vit_pos"] = np.zeros((rows, length), np.int32)
    return batch


def attention_allowed(sample_id, split_id, split_mode, xp=np, key_visible=None):
    """Compute the [..., T, T] boolean mask (query row, key column) from per-token metadata.

    A key is visible when it is in the same sample and either in an earlier split, or in the same
    split where the split is bidirectional (full or noise) or the key is not after the query
    (causal). Keys of a noise split are visible only inside that split. With `key_visible`
    ([..., T] bool), keys where it is False are also hidden from every other split (CFG dropout).
    `xp` is numpy or jax.numpy.
    """
    q_sample, k_sample = sample_id[..., :, None], sample_id[..., None, :]
    q_split, k_split = split_id[..., :, None], split_id[..., None, :]
    k_mode = split_mode[..., None, :]
    length = sample_id.shape[-1]
    index = xp.arange(length)
    key_not_after_query = index[None, :] <= index[:, None]

    same_split = q_split == k_split
    earlier_split = k_split < q_split
    bidirectional = split_mode[..., :, None] != MODE_CAUSAL
    visible = earlier_split | (same_split & (bidirectional | key_not_after_query))
    hidden_noise = (k_mode == MODE_NOISE) & ~same_split
    allowed = visible & ~hidden_noise & (q_sample == k_sample)
    if key_visible is not None:
        allowed = allowed & (key_visible[..., None, :].astype(bool) | same_split)
    return allowed
