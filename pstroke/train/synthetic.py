"""Synthetic packed batches in the exact `pstroke.batch` format, for tests and as a data fallback.

Each sample is a small process trajectory: a droppable prompt, a plan, a draft image (noisy split
then its clean copy), an inspect text and, for every other sample, a refine text with a refined
image. Text ids and clean latents are pseudo-random but fixed by (seed, batch index), so a run
that resumes at batch n reads exactly the batches an uninterrupted run reads.
"""

import dataclasses

import jax
import ml_collections
import numpy as np

from pstroke import batch as batch_format
from pstroke.errors import UserError

# Token ids of the synthetic vocabulary; ordinary text ids start at FIRST_TEXT_ID.
BOS_ID, EOS_ID, VISION_START_ID, VISION_END_ID = 1, 2, 3, 4
FIRST_TEXT_ID = 5


@dataclasses.dataclass(frozen=True)
class Layout:
    """Sizes of one synthetic batch.

    rows: packed rows per global batch.
    length: tokens per row.
    latent_dim: channels of one latent token (latent_patch_size**2 * latent_channels).
    image_side: latent tokens per image side.
    max_latent_size: latent tokens per side of the model's position table.
    vocab_size: text vocabulary size.
    """

    rows: int
    length: int
    latent_dim: int
    image_side: int
    max_latent_size: int
    vocab_size: int


def layout_from_config(config: ml_collections.ConfigDict) -> Layout:
    """Derive the batch layout from the world, model, data and train sections of a config."""
    model = config.model
    image_side = config.world.canvas // (model.latent_downsample * model.latent_patch_size)
    return Layout(
        rows=config.train.batch_size,
        length=config.data.seq_len,
        latent_dim=model.latent_patch_size ** 2 * model.latent_channels,
        image_side=image_side,
        max_latent_size=model.max_latent_size,
        vocab_size=model.llm.vocab_size,
    )


class _RowWriter:
    """Append splits to one packed row, keeping the per-token fields consistent."""

    def __init__(self, batch: dict[str, np.ndarray], row: int):
        self.batch, self.row = batch, row
        self.cursor = 0
        self.split = 0
        self.sample = 0
        self.position = 0

    def start_sample(self) -> None:
        self.sample += 1
        self.position = 0

    def add_text(self, ids: np.ndarray, stage: str, loss: bool, drop_group: int = batch_format.DROP_NONE,
                 next_id: int = EOS_ID) -> None:
        """Write a causal text split. With `loss`, each token predicts the next one, and the last
        token predicts `next_id`: EOS, or the vision-start marker that switches to an image."""
        end = self.cursor + len(ids)
        span, b = slice(self.cursor, end), self.batch
        b["token_id"][self.row, span] = ids
        b["kind"][self.row, span] = batch_format.KIND_TEXT
        b["split_mode"][self.row, span] = batch_format.MODE_CAUSAL
        b["expert"][self.row, span] = batch_format.EXPERT_UND
        b["position"][self.row, span] = self.position + np.arange(len(ids))
        b["stage"][self.row, span] = batch_format.STAGE_INDEX[stage]
        b["drop_group"][self.row, span] = drop_group
        if loss:
            b["ce_label"][self.row, span] = np.append(ids[1:], next_id)
            b["ce_weight"][self.row, span] = 1.0
        self._close_split(end)
        self.position += len(ids)

    def add_image(self, latent: np.ndarray, side: int, max_side: int, stage: str, noisy: bool,
                  drop_group: int = batch_format.DROP_NONE) -> None:
        """Write an image split: vision-start marker, side*side latent tokens, vision-end marker.

        A noisy split carries the flow-matching loss and keeps the position id, so its clean copy,
        written next, shares it.
        """
        count = side * side
        end = self.cursor + count + 2
        span, inner, b = slice(self.cursor, end), slice(self.cursor + 1, end - 1), self.batch
        b["token_id"][self.row, span] = 0
        b["token_id"][self.row, self.cursor] = VISION_START_ID
        b["token_id"][self.row, end - 1] = VISION_END_ID
        b["kind"][self.row, span] = batch_format.KIND_TEXT
        b["kind"][self.row, inner] = batch_format.KIND_LATENT
        b["expert"][self.row, span] = batch_format.EXPERT_UND
        b["expert"][self.row, inner] = batch_format.EXPERT_GEN
        b["split_mode"][self.row, span] = batch_format.MODE_NOISE if noisy else batch_format.MODE_FULL
        b["position"][self.row, span] = self.position
        b["latent"][self.row, inner] = latent
        rows, cols = np.divmod(np.arange(count), side)
        b["latent_pos"][self.row, inner] = rows * max_side + cols
        b["stage"][self.row, span] = batch_format.STAGE_INDEX[stage]
        b["drop_group"][self.row, span] = drop_group
        if noisy:
            b["mse_weight"][self.row, inner] = 1.0
        else:
            self.position += 1
        self._close_split(end)

    def _close_split(self, end: int) -> None:
        self.batch["sample_id"][self.row, self.cursor:end] = self.sample
        self.batch["split_id"][self.row, self.cursor:end] = self.split
        self.split += 1
        self.cursor = end


def _sample_tokens(layout: Layout, refine: bool) -> int:
    """Token count of one synthetic trajectory with the text lengths `_write_sample` uses."""
    image = layout.image_side ** 2 + 2
    text = 8 + 6 + 5 + (4 if refine else 0)
    images = 2 * image * (2 if refine else 1)
    return text + images


def _write_sample(writer: _RowWriter, layout: Layout, rng: np.random.Generator, refine: bool) -> None:
    def text(count: int) -> np.ndarray:
        return rng.integers(FIRST_TEXT_ID, layout.vocab_size, count).astype(np.int32)

    def image() -> np.ndarray:
        # Flat colour per 2x2 block of latent tokens plus a little texture: structure a model can fit.
        side = layout.image_side
        coarse = rng.uniform(-1, 1, ((side + 1) // 2, (side + 1) // 2, layout.latent_dim))
        fine = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:side, :side]
        texture = 0.1 * rng.standard_normal((side, side, layout.latent_dim))
        return (fine + texture).reshape(side * side, layout.latent_dim).astype(np.float32)

    side, max_side = layout.image_side, layout.max_latent_size
    writer.start_sample()
    writer.add_text(np.concatenate([[BOS_ID], text(7)]), "prompt", loss=False, drop_group=batch_format.DROP_TEXT)
    writer.add_text(text(6), "plan", loss=True, next_id=VISION_START_ID)
    draft = image()
    writer.add_image(draft, side, max_side, "draft_image", noisy=True)
    writer.add_image(draft, side, max_side, "draft_image", noisy=False, drop_group=batch_format.DROP_IMAGE)
    writer.add_text(text(5), "inspect", loss=True, next_id=VISION_START_ID if refine else EOS_ID)
    if refine:
        writer.add_text(text(4), "refine", loss=True, next_id=VISION_START_ID)
        refined = image()
        writer.add_image(refined, side, max_side, "refined_image", noisy=True)
        writer.add_image(refined, side, max_side, "refined_image", noisy=False)


def make_batch(layout: Layout, seed: int, index: int) -> dict[str, np.ndarray]:
    """Build global batch number `index` of the synthetic stream `seed` as numpy arrays.

    Raises:
      UserError: one trajectory does not fit in a row of `layout.length` tokens.
    """
    needed = _sample_tokens(layout, refine=True)
    if needed > layout.length:
        raise UserError(f"a synthetic trajectory needs {needed} tokens but data.seq_len is {layout.length}; "
                         f"raise data.seq_len or lower world.canvas")
    rng = np.random.default_rng([seed, index])
    batch = batch_format.empty_batch(layout.rows, layout.length, layout.latent_dim)
    for row in range(layout.rows):
        writer = _RowWriter(batch, row)
        refine = bool(rng.integers(2))
        while writer.cursor + _sample_tokens(layout, refine) <= layout.length:
            _write_sample(writer, layout, rng, refine)
            refine = not refine
        # Padding keeps sample 0 and split ids past the last real split, so it stays non-decreasing.
        batch["split_id"][row, writer.cursor:] = writer.split
    return batch


class SyntheticIterator:
    """An endless stream of synthetic global batches placed with `sharding`.

    The state is the index of the next batch (`get_state`/`set_state`, JSON-serialisable), so a
    restored run continues with the batch it would have seen.
    """

    def __init__(self, layout: Layout, seed: int, sharding: jax.sharding.Sharding):
        self.layout, self.seed, self.sharding = layout, seed, sharding
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        host_batch = make_batch(self.layout, self.seed, self.index)
        self.index += 1
        return {name: _to_global(value, self.sharding) for name, value in host_batch.items()}

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])


def _to_global(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """Place a host array, which every process has in full, as a global array with `sharding`."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
