"""Turn a trajectory (text and image segments) into the per-token fields of `pstroke.batch`.

Layout of one sample, as BAGEL trains interleaved data:

- A text segment is one causal split `<|im_start|> ids <|im_end|>` (und expert). With loss, CE
  sits at the positions of `<|im_start|>` + ids with labels ids + `<|im_end|>`.
- A generated image is a noise split `<|vision_start|> latents <|vision_end|>` (markers und,
  latents gen, MSE on the latents) followed by its clean copy (full mode, timestep 0, same RoPE
  id), which later splits attend to. A single-step (text-to-image) sample has no clean copy.
- RoPE ids restart at 0 per sample and advance by one per text token. A whole image split has one
  id. The noise split does not advance it, so the clean copy shares it, and the clean copy then
  advances it by one.

Modality switch rule (the rollout decodes with it): the model predicts what follows a segment at
the segment's last token.

- At the `<|im_end|>` of a text segment the CE label is `<|vision_start|>` when an image follows,
  `<|im_start|>` when more text follows, and `<|endoftext|>` when the sequence ends.
- At the `<|vision_end|>` of an image's clean copy the label is `<|im_start|>` or `<|endoftext|>`.
- The last segment of a truncated sample (one cut before its end) has no switch CE.

Text splits and the clean copies' `<|vision_end|>` carry this switch CE even without text loss
(the prompt): the prompt's `<|im_end|>` predicts `<|im_start|>` for a process sample and
`<|vision_start|>` for a single-step sample.
"""

import dataclasses

import numpy as np

from pstroke import batch as batch_format
from pstroke.data import codec
from pstroke.data.tokenizer import Tokenizer

SAMPLE_FIELDS = tuple(name for name in batch_format.INT_FIELDS + batch_format.FLOAT_FIELDS
                      if name != "sample_id") + ("latent",)


@dataclasses.dataclass(frozen=True)
class TextSegment:
    """A text split: `parts` are (text, stage name) pieces, concatenated in order."""

    parts: tuple[tuple[str, str], ...]
    loss: bool = True  # CE on the text itself; the switch at `<|im_end|>` is always supervised
    drop_group: int = batch_format.DROP_NONE


@dataclasses.dataclass(frozen=True)
class ImageSegment:
    """A generated image: uint8 [H, W, 3] pixels, its stage name, and whether a clean copy follows."""

    image: np.ndarray
    stage: str
    clean_copy: bool = True


Segment = TextSegment | ImageSegment


def text(content: str, stage: str, **kwargs) -> TextSegment:
    """Return a one-part text segment."""
    return TextSegment(((content, stage),), **kwargs)


def _split(length: int, latent_dim: int, **values) -> dict[str, np.ndarray]:
    """Return one split's fields, each filled with its constant from `values` (default 0)."""
    fields = {}
    for name in SAMPLE_FIELDS:
        if name == "latent":
            fields[name] = np.zeros((length, latent_dim), np.float32)
            continue
        dtype = np.float32 if name in batch_format.FLOAT_FIELDS else np.int32
        fields[name] = np.full((length,), values.get(name, 0), dtype)
    return fields


def _switch_label(segments: list[Segment], index: int, tokenizer: Tokenizer, ends: bool) -> int | None:
    """Return the token that must follow segment `index`, or None where it is not supervised."""
    if index + 1 < len(segments):
        following = segments[index + 1]
        return tokenizer.vision_start_id if isinstance(following, ImageSegment) else tokenizer.im_start_id
    return tokenizer.end_of_text_id if ends else None


def _text_split(segment: TextSegment, tokenizer: Tokenizer, position: int, latent_dim: int,
                switch: int | None) -> dict[str, np.ndarray]:
    ids, stages = [], []
    for content, stage in segment.parts:
        piece = tokenizer.encode(content)
        ids += piece
        stages += [batch_format.STAGE_INDEX[stage]] * len(piece)
    tokens = [tokenizer.im_start_id] + ids + [tokenizer.im_end_id]
    first_stage = batch_format.STAGE_INDEX[segment.parts[0][1]]
    last_stage = batch_format.STAGE_INDEX[segment.parts[-1][1]]

    fields = _split(len(tokens), latent_dim, split_mode=batch_format.MODE_CAUSAL,
                    expert=batch_format.EXPERT_UND, kind=batch_format.KIND_TEXT, drop_group=segment.drop_group)
    fields["token_id"][:] = tokens
    fields["position"][:] = position + np.arange(len(tokens))
    fields["stage"][:] = [first_stage] + stages + [last_stage]
    if segment.loss:
        fields["ce_label"][:-1] = ids + [tokenizer.im_end_id]
        fields["ce_weight"][:-1] = 1.0
    if switch is not None:
        fields["ce_label"][-1] = switch
        fields["ce_weight"][-1] = 1.0
    return fields


def _image_split(latent: np.ndarray, latent_pos: np.ndarray, tokenizer: Tokenizer, position: int,
                 stage: str, mode: int) -> dict[str, np.ndarray]:
    count, latent_dim = latent.shape
    fields = _split(count + 2, latent_dim, split_mode=mode, position=position,
                    stage=batch_format.STAGE_INDEX[stage])
    fields["token_id"][0], fields["token_id"][-1] = tokenizer.vision_start_id, tokenizer.vision_end_id
    fields["kind"][1:-1] = batch_format.KIND_LATENT
    fields["expert"][1:-1] = batch_format.EXPERT_GEN
    fields["latent"][1:-1] = latent
    fields["latent_pos"][1:-1] = latent_pos
    if mode == batch_format.MODE_NOISE:
        fields["mse_weight"][1:-1] = 1.0
    else:
        fields["drop_group"][:] = batch_format.DROP_IMAGE
    return fields


def build_sample(segments: list[Segment], tokenizer: Tokenizer, model_config, ends: bool = True) -> dict[str, np.ndarray]:
    """Build one sample's per-token fields (all of `pstroke.batch` except `sample_id`).

    `split_id` counts from 0 within the sample; packing offsets it. `ends` is False for a
    truncated sample, whose last segment then has no switch CE.
    """
    codec.check_pixels_codec(model_config)
    latent_dim = model_config.latent_patch_size ** 2 * model_config.latent_channels

    splits = []
    position = 0
    for index, segment in enumerate(segments):
        switch = _switch_label(segments, index, tokenizer, ends)
        if isinstance(segment, TextSegment):
            splits.append(_text_split(segment, tokenizer, position, latent_dim, switch))
            position += len(splits[-1]["token_id"])
            continue

        latent, latent_pos = codec.image_tokens(segment.image, model_config)
        splits.append(_image_split(latent, latent_pos, tokenizer, position, segment.stage, batch_format.MODE_NOISE))
        if segment.clean_copy:
            clean = _image_split(latent, latent_pos, tokenizer, position, segment.stage, batch_format.MODE_FULL)
            if switch is not None:
                clean["ce_label"][-1] = switch
                clean["ce_weight"][-1] = 1.0
            splits.append(clean)
            position += 1

    for split_index, fields in enumerate(splits):
        fields["split_id"][:] = split_index
    return {name: np.concatenate([fields[name] for fields in splits]) for name in SAMPLE_FIELDS}
