"""The interleaved rollout: one `lax.scan` over rounds of text decoding and image sampling.

A round is one text segment decoded token by token and, when the model requests an image, one image.
The image is sampled with the shifted Euler flow sampler under text and image classifier-free
guidance (BAGEL's three contexts, guidance interval and renorm), then written into the cache.

The model's own tokens decide what follows. The logits at a text segment's `<|im_end|>` choose
among `<|vision_start|>` (an image), `<|im_start|>` (more text, next round) and `<|endoftext|>`
(the end). The logits at an image's `<|vision_end|>` choose between more text and the end.

Prompts run as a batch with per-prompt done flags. Once every prompt is done (or the round limit is
reached), `lax.cond` skips the remaining rounds, so they cost nothing. `max_rounds` is static and
the round limit is an argument, so one compile serves every number of rounds.

CFG contexts, as in BAGEL's interleaved inference:
- cond: everything so far.
- text-uncond: the cond cache as it was after the latest image, before any text since (empty before
  the first image, so the prompt is dropped too).
- image-uncond: the prompt segment alone; generated text and images never enter it.
"""

import functools
import time
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from pstroke.rollout.steps import Cache, ModelSteps, Params


class SamplerSettings(NamedTuple):
    """The static (hashable) part of `config.sample` that shapes the compiled loop.

    The image sampler's settings (steps, shift, guidance) live in the `ModelSteps`.
    """

    max_rounds: int
    max_text_tokens: int
    temperature: float
    clock_rounds: bool = False  # stamp the host time at the end of each round into ROUND_CLOCK

    @classmethod
    def from_config(cls, sample: ml_collections.ConfigDict, clock_rounds: bool = False) -> "SamplerSettings":
        return cls(max_rounds=int(sample.max_rounds), max_text_tokens=int(sample.max_text_tokens),
                   temperature=float(sample.temperature), clock_rounds=clock_rounds)


ROUND_CLOCK: list[tuple[int, float]] = []  # (round index, time.perf_counter()) per finished round


def _stamp_round(round_index, _finished) -> None:
    """Host callback: record when a round finished. `_finished` only orders it after the round."""
    ROUND_CLOCK.append((int(round_index), time.perf_counter()))


@flax.struct.dataclass
class RolloutState:
    """Loop state carried from round to round. B prompts."""

    cond: Cache  # everything so far
    text_uncond: Cache  # cond as of the latest image, without the text since
    image_uncond: Cache  # the prompt segment only
    first_choice: jax.Array  # [B] int32: what the model chose to follow the prompt
    next_token: jax.Array  # [B] int32: what the model chose to follow (im_start, vision_start, end_of_text)
    done: jax.Array  # [B] bool: the model ended the sequence
    rounds_run: jax.Array  # [B] int32: rounds in which this prompt produced text or an image
    round_index: jax.Array  # [] int32: rounds started so far
    rng: jax.Array  # [B] PRNG keys, one per prompt, so a prompt's result does not depend on its batch


@flax.struct.dataclass
class RoundRecord:
    """Output of one round. Rows that did nothing have empty text, no image and zero latents."""

    text: jax.Array  # [B, max_text_tokens] int32, pad after `text_length`
    text_length: jax.Array  # [B] int32
    has_text: jax.Array  # [B] bool: a text segment was decoded in this round
    latents: jax.Array  # [B, N, D] float32: the sampled clean image tokens
    has_image: jax.Array  # [B] bool
    switch_token: jax.Array  # [B] int32: the model's choice after the text segment, pad if none
    image_switch_token: jax.Array  # [B] int32: the model's choice after the image, pad if none


def prompt_keys(seed: int, prompt_index: jax.Array) -> jax.Array:
    """Return one PRNG key per prompt [B] from a seed and global prompt indices [B].

    A prompt's key, and so its trajectory, does not depend on the batch it runs in.
    """
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda index: jax.random.fold_in(base, index))(jnp.asarray(prompt_index))


def _choose_token(logits: jax.Array, rng: jax.Array, steps: ModelSteps, temperature: float) -> jax.Array:
    """Pick a text token per row from logits [B, V] with per-row keys rng [B]: argmax at
    temperature 0, else a draw from softmax(logits / T).

    Marker tokens other than `<|im_end|>` cannot occur inside a text segment, and the model's rows
    past the tokenizer's vocabulary have no token, so both are excluded.
    """
    special = steps.special
    banned = jnp.array([special.im_start, special.vision_start, special.vision_end, special.end_of_text,
                        special.pad], jnp.int32)
    logits = logits.at[:, banned].set(-jnp.inf)
    logits = jnp.where(jnp.arange(logits.shape[-1]) < steps.text_vocab_size, logits, -jnp.inf)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    draw = jax.vmap(lambda key, row: jax.random.categorical(key, row / temperature))
    return draw(rng, logits).astype(jnp.int32)


def _split_rows(keys: jax.Array, count: int) -> tuple[jax.Array, ...]:
    """Split each row's key of keys [B] into `count` keys; return `count` arrays of [B] keys."""
    split = jax.vmap(lambda key: jax.random.split(key, count))(keys)
    return tuple(split[:, index] for index in range(count))


def _choose_switch(logits: jax.Array, choices: tuple[int, ...]) -> jax.Array:
    """Pick what follows a segment: the most likely of the `choices` token ids [B] int32.

    After `<|im_end|>` the sequence format allows an image, more text or the end; after an image's
    `<|vision_end|>` more text or the end. The choice is the argmax restricted to those tokens,
    greedy at every temperature, so the sequence structure never breaks.
    """
    choices = jnp.array(choices, jnp.int32)
    return choices[jnp.argmax(logits[:, choices], axis=-1)]


def _after_text(steps: ModelSteps) -> tuple[int, int, int]:
    special = steps.special
    return special.vision_start, special.im_start, special.end_of_text


def _after_image(steps: ModelSteps) -> tuple[int, int]:
    return steps.special.im_start, steps.special.end_of_text


class _SegmentCarry(NamedTuple):
    cache: Cache
    logits: jax.Array  # [B, V] float32: next-token logits of each row
    text: jax.Array  # [B, max_text_tokens + 1] int32
    length: jax.Array  # [B] int32
    writing: jax.Array  # [B] bool: the row has not closed its segment yet
    switch: jax.Array  # [B] int32
    rng: jax.Array


def decode_segment(steps: ModelSteps, params: Params, cache: Cache, start: jax.Array, rng: jax.Array,
                   settings: SamplerSettings) -> tuple[Cache, jax.Array, jax.Array, jax.Array]:
    """Decode one text segment in the rows where start [B] is true; other rows stay unchanged.

    Feeds `<|im_start|>`, then one token per step until the row emits `<|im_end|>` or reaches
    max_text_tokens (then `<|im_end|>` is fed in its place). Returns (cache, text [B, Lt], length [B],
    switch [B]) where switch is the model's choice after `<|im_end|>` (pad in rows not started).
    """
    special = steps.special
    batch = start.shape[0]
    max_tokens = settings.max_text_tokens

    opened, logits = steps.decode(params, cache, jnp.full((batch,), special.im_start, jnp.int32))
    cache = steps.keep_appends(start, opened, cache)

    def still_writing(carry: _SegmentCarry):
        return jnp.any(carry.writing)

    def decode_one(carry: _SegmentCarry) -> _SegmentCarry:
        rng, token_rng = _split_rows(carry.rng, 2)
        token = _choose_token(carry.logits, token_rng, steps, settings.temperature)
        token = jnp.where(carry.length >= max_tokens, special.im_end, token)
        closes = token == special.im_end
        keeps = carry.writing & ~closes

        column = jnp.max(jnp.where(carry.writing, carry.length, 0))  # rows write in lockstep
        stored = jnp.where(keeps, token, special.pad)
        text = jax.lax.dynamic_update_slice(carry.text, stored[:, None], (0, column))
        length = carry.length + keeps.astype(jnp.int32)

        fed, next_logits = steps.decode(params, carry.cache, token)
        cache = steps.keep_appends(carry.writing, fed, carry.cache)
        switch = jnp.where(carry.writing & closes, _choose_switch(next_logits, _after_text(steps)), carry.switch)
        logits = jnp.where(carry.writing[:, None], next_logits, carry.logits)
        return _SegmentCarry(cache, logits, text, length, keeps, switch, rng)

    carry = _SegmentCarry(
        cache=cache,
        logits=logits,
        text=jnp.full((batch, max_tokens + 1), special.pad, jnp.int32),
        length=jnp.zeros((batch,), jnp.int32),
        writing=start,
        switch=jnp.full((batch,), special.pad, jnp.int32),
        rng=rng,
    )
    carry = jax.lax.while_loop(still_writing, decode_one, carry)
    return carry.cache, carry.text[:, :max_tokens], carry.length, carry.switch


def run_round(steps: ModelSteps, params: Params, state: RolloutState,
              settings: SamplerSettings) -> tuple[RolloutState, RoundRecord]:
    """Run one round for every prompt that is not done: a text segment, then maybe an image."""
    special = steps.special
    batch = state.done.shape[0]
    rng, text_rng, noise_rng = _split_rows(state.rng, 3)

    writes_text = ~state.done & (state.next_token == special.im_start)
    cond, text, text_length, switch = decode_segment(steps, params, state.cond, writes_text, text_rng, settings)
    next_token = jnp.where(writes_text, switch, state.next_token)
    state = state.replace(cond=cond)

    draws_image = ~state.done & (next_token == special.vision_start)
    latents = jnp.zeros((batch, steps.image_tokens, steps.token_dim), jnp.float32)

    def draw(state: RolloutState):
        noise = jax.vmap(lambda key: jax.random.normal(key, latents.shape[1:], jnp.float32))(noise_rng)
        image = steps.sample_image(params, state.cond, state.text_uncond, state.image_uncond, noise)
        image = jnp.where(draws_image[:, None, None], image, latents)
        written, logits = steps.write_image(params, state.cond, image)
        cond = steps.keep_appends(draws_image, written, state.cond)
        text_uncond = steps.select_rows(draws_image, cond, state.text_uncond)
        after = jnp.where(draws_image, _choose_switch(logits, _after_image(steps)), next_token)
        return image, cond, text_uncond, after

    def skip(state: RolloutState):
        return latents, state.cond, state.text_uncond, next_token

    latents, cond, text_uncond, next_token = jax.lax.cond(jnp.any(draws_image), draw, skip, state)

    acted = writes_text | draws_image
    new_state = state.replace(
        cond=cond,
        text_uncond=text_uncond,
        next_token=next_token,
        done=state.done | (acted & (next_token == special.end_of_text)),
        rounds_run=state.rounds_run + acted.astype(jnp.int32),
        round_index=state.round_index + 1,
        rng=rng,
    )
    record = RoundRecord(
        text=text,
        text_length=text_length,
        has_text=writes_text,
        latents=latents,
        has_image=draws_image,
        switch_token=jnp.where(writes_text, switch, special.pad),
        image_switch_token=jnp.where(draws_image, next_token, special.pad),
    )
    if settings.clock_rounds:
        finished = jnp.sum(new_state.cond.length) + jnp.sum(record.text_length) + jnp.sum(latents[:, :1, :1])
        jax.debug.callback(_stamp_round, state.round_index, finished, ordered=True)
    return new_state, record


def empty_record(steps: ModelSteps, batch: int, settings: SamplerSettings) -> RoundRecord:
    """Return the record of a skipped round: no text, no image."""
    return RoundRecord(
        text=jnp.full((batch, settings.max_text_tokens), steps.special.pad, jnp.int32),
        text_length=jnp.zeros((batch,), jnp.int32),
        has_text=jnp.zeros((batch,), bool),
        latents=jnp.zeros((batch, steps.image_tokens, steps.token_dim), jnp.float32),
        has_image=jnp.zeros((batch,), bool),
        switch_token=jnp.full((batch,), steps.special.pad, jnp.int32),
        image_switch_token=jnp.full((batch,), steps.special.pad, jnp.int32),
    )


def start_state(steps: ModelSteps, params: Params, prompt: jax.Array, prompt_length: jax.Array,
                rng: jax.Array) -> RolloutState:
    """Write the prompt segments [B, P] (int32, pad after prompt_length [B]) into a fresh state.

    Each prompt segment includes its `<|im_start|>` and `<|im_end|>`, and the logits at
    `<|im_end|>` choose what follows it. `rng` contains one key per prompt [B].
    """
    batch = prompt.shape[0]
    empty = steps.empty_cache(batch)
    cond, logits = steps.prefill(params, empty, prompt, prompt_length)

    first_choice = _choose_switch(logits, _after_text(steps))
    return RolloutState(
        cond=cond,
        text_uncond=empty,
        image_uncond=cond,
        first_choice=first_choice,
        next_token=first_choice,
        done=first_choice == steps.special.end_of_text,
        rounds_run=jnp.zeros((batch,), jnp.int32),
        round_index=jnp.zeros((), jnp.int32),
        rng=rng,
    )


def rollout(steps: ModelSteps, params: Params, prompt: jax.Array, prompt_length: jax.Array, rng: jax.Array,
            round_limit: jax.Array, settings: SamplerSettings) -> tuple[RolloutState, RoundRecord]:
    """Run the whole trajectory of a batch of prompts as one scan over settings.max_rounds rounds.

    Rounds from index `round_limit` on ([] int32, at most max_rounds), and every round after all
    prompts are done, are skipped with `lax.cond`. `rng` contains one key per prompt [B]. Returns the
    final state and the records stacked on a leading round axis [max_rounds, B, ...].
    """
    state = start_state(steps, params, prompt, prompt_length, rng)
    batch = prompt.shape[0]

    def one_round(state: RolloutState, _):
        active = jnp.any(~state.done) & (state.round_index < round_limit)
        return jax.lax.cond(active, functools.partial(run_round, steps, params, settings=settings),
                            functools.partial(_skip_round, steps, batch, settings), state)

    return jax.lax.scan(one_round, state, None, length=settings.max_rounds)


def _skip_round(steps: ModelSteps, batch: int, settings: SamplerSettings,
                state: RolloutState) -> tuple[RolloutState, RoundRecord]:
    return state.replace(round_index=state.round_index + 1), empty_record(steps, batch, settings)


@functools.partial(jax.jit, static_argnames=("steps", "settings"))
def rollout_jit(steps: ModelSteps, params: Params, prompt: jax.Array, prompt_length: jax.Array, rng: jax.Array,
                round_limit: jax.Array, settings: SamplerSettings) -> tuple[RolloutState, RoundRecord]:
    """`rollout` compiled once per (steps, settings, shapes); the round limit is traced."""
    return rollout(steps, params, prompt, prompt_length, rng, round_limit, settings)
