"""The scanned rollout: equal to a Python loop over rounds, batch-independent, one compile, skips."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke.data.tokenizer import build_tokenizer
from pstroke.rollout import rollout as rollout_lib
from pstroke.rollout import testing
from pstroke.rollout.model_steps import build_model_steps
from pstroke.rollout.sampling import encode_prompt, special_tokens

PROMPTS = ("a photo of a red circle left of a blue square", "a photo of a green triangle")


@pytest.fixture(scope="module")
def tiny():
    config = testing.tiny_config()
    tokenizer = build_tokenizer(config)
    steps = build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
    params = testing.random_params(config)
    settings = rollout_lib.SamplerSettings.from_config(config.sample)
    return config, tokenizer, steps, params, settings


def _prompt_batch(tokenizer, prompts, width=40):
    segments = [encode_prompt(prompt, tokenizer, width) for prompt in prompts]
    batch = np.full((len(segments), width), tokenizer.pad_id, np.int32)
    for row, segment in enumerate(segments):
        batch[row, :len(segment)] = segment
    return jnp.asarray(batch), jnp.asarray([len(segment) for segment in segments], jnp.int32)


class Counted:
    """Steered steps that count, at run time, how often an image is written into the cache."""

    def __init__(self, steps):
        self.writes = []
        self.steps = steps._replace(write_image=self._write_image)
        self._inner = steps.write_image

    def _write_image(self, params, cache, x0):
        jax.debug.callback(lambda: self.writes.append(1))
        return self._inner(params, cache, x0)

    def count(self) -> int:
        jax.effects_barrier()
        return len(self.writes)


TRACES = []


@functools.partial(jax.jit, static_argnames=("steps", "settings"))
def _rollout_counting_traces(steps, params, prompt, length, keys, limit, settings):
    TRACES.append(steps)
    return rollout_lib.rollout(steps, params, prompt, length, keys, limit, settings)


@functools.partial(jax.jit, static_argnames=("steps",))
def _start(steps, params, prompt, length, keys):
    return rollout_lib.start_state(steps, params, prompt, length, keys)


_round = jax.jit(rollout_lib.run_round, static_argnames=("steps", "settings"))


def _python_loop(steps, params, prompt, length, keys, settings):
    """Run the same round function round by round from Python; return per-round states and records."""
    state = _start(steps, params, prompt, length, keys)
    states, records = [state], []
    for _ in range(settings.max_rounds):
        if bool(jnp.all(state.done)):
            records.append(rollout_lib.empty_record(steps, prompt.shape[0], settings))
            state = state.replace(round_index=state.round_index + 1)
        else:
            state, record = _round(steps, params, state, settings=settings)
            records.append(record)
        states.append(state)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *records)
    return states, stacked


@pytest.fixture(scope="module")
def two_rows(tiny):
    """A batch where row 0 draws an image every round and row 1 ends after its first image."""
    _, tokenizer, steps, params, settings = tiny
    special = steps.special
    counted = Counted(testing.steer(steps, after_text=[special.vision_start] * 2,
                                    after_image=[special.im_start, special.end_of_text]))
    prompt, length = _prompt_batch(tokenizer, PROMPTS)
    keys = rollout_lib.prompt_keys(0, jnp.arange(2))
    final, records = _rollout_counting_traces(counted.steps, params, prompt, length, keys,
                                              jnp.int32(settings.max_rounds), settings)
    return counted, (prompt, length, keys), final, records


def test_scan_matches_python_loop(tiny, two_rows):
    _, _, _, params, settings = tiny
    counted, inputs, final, scanned = two_rows
    states, looped = _python_loop(counted.steps, params, *inputs, settings)

    np.testing.assert_array_equal(scanned.text, looped.text)
    np.testing.assert_array_equal(scanned.text_length, looped.text_length)
    np.testing.assert_array_equal(scanned.has_text, looped.has_text)
    np.testing.assert_array_equal(scanned.has_image, looped.has_image)
    np.testing.assert_array_equal(scanned.switch_token, looped.switch_token)
    np.testing.assert_array_equal(scanned.image_switch_token, looped.image_switch_token)
    np.testing.assert_allclose(scanned.latents, looped.latents, atol=1e-4)
    np.testing.assert_array_equal(final.done, states[-1].done)
    np.testing.assert_array_equal(final.cond.length, states[-1].cond.length)
    assert int(np.sum(scanned.has_image)) == settings.max_rounds + 1
    assert int(np.sum(scanned.text_length)) > 0
    assert float(np.std(scanned.latents[0, 0])) > 0.0


def test_done_prompt_stays_unchanged(tiny, two_rows):
    _, _, _, params, settings = tiny
    counted, inputs, final, records = two_rows
    states, _ = _python_loop(counted.steps, params, *inputs, settings)
    after_first = states[1]

    assert bool(after_first.done[1])
    assert bool(final.done[1])
    assert not bool(final.done[0])
    filled = int(after_first.cond.length[1])
    assert int(final.cond.length[1]) == filled
    assert int(final.cond.next_rope[1]) == int(after_first.cond.next_rope[1])
    np.testing.assert_array_equal(final.cond.keys[:, 1, :filled], after_first.cond.keys[:, 1, :filled])
    np.testing.assert_array_equal(final.cond.values[:, 1, :filled], after_first.cond.values[:, 1, :filled])
    uncond_filled = int(after_first.text_uncond.length[1])
    assert int(final.text_uncond.length[1]) == uncond_filled
    np.testing.assert_array_equal(final.text_uncond.keys[:, 1, :uncond_filled],
                                  after_first.text_uncond.keys[:, 1, :uncond_filled])
    assert int(final.rounds_run[1]) == 1
    assert not np.any(records.has_image[1:, 1])
    assert not np.any(records.has_text[1:, 1])
    assert np.all(records.latents[1:, 1] == 0.0)
    assert np.all(records.has_image[:, 0]), "row 0 keeps drawing while row 1 is done"


@pytest.fixture(scope="module")
def single_runs(tiny, two_rows):
    """Each prompt of `two_rows` run alone, with the same steering and key: (counted, final, records)."""
    _, _, steps, params, settings = tiny
    _, (prompt, length, keys), _, _ = two_rows
    special = steps.special
    runs = []
    for row, after_image in enumerate((special.im_start, special.end_of_text)):
        counted = Counted(testing.steer(steps, after_text=[special.vision_start], after_image=[after_image]))
        final, records = rollout_lib.rollout_jit(counted.steps, params, prompt[row:row + 1], length[row:row + 1],
                                                 keys[row:row + 1], jnp.int32(settings.max_rounds), settings)
        runs.append((counted, final, records))
    return runs


def test_prompts_of_different_lengths_match_single_runs(two_rows, single_runs):
    _, (_, length, _), _, batched = two_rows
    assert int(length[0]) != int(length[1])

    for row, (_, _, single) in enumerate(single_runs):
        np.testing.assert_array_equal(batched.text[:, row], single.text[:, 0])
        np.testing.assert_array_equal(batched.text_length[:, row], single.text_length[:, 0])
        np.testing.assert_array_equal(batched.has_image[:, row], single.has_image[:, 0])
        np.testing.assert_allclose(batched.latents[:, row], single.latents[:, 0], atol=1e-4)


def test_done_batch_skips_remaining_rounds(tiny, single_runs):
    settings = tiny[4]
    counted, final, records = single_runs[1]

    assert bool(final.done[0])
    assert int(final.round_index) == settings.max_rounds
    assert counted.count() == 1, "image writes ran after every prompt was done"
    assert int(np.sum(records.has_image)) == 1


def test_one_compile_serves_every_round_count(tiny, two_rows):
    _, _, _, params, settings = tiny
    counted, inputs, _, _ = two_rows
    traces_before = TRACES.count(counted.steps)

    rounds_run = []
    for limit in (1, 2):
        final, _ = _rollout_counting_traces(counted.steps, params, *inputs, jnp.int32(limit), settings)
        rounds_run.append(int(final.rounds_run[0]))

    assert traces_before == 1
    assert TRACES.count(counted.steps) == 1
    assert rounds_run == [1, 2]


def test_finished_rounds_are_not_computed(tiny, two_rows):
    _, _, _, params, settings = tiny
    counted, inputs, _, _ = two_rows
    before = counted.count()

    _rollout_counting_traces(counted.steps, params, *inputs, jnp.int32(1), settings)

    assert settings.max_rounds == 3
    assert counted.count() - before == 1, "image writes ran in rounds past the round limit"


def test_round_skip_is_a_cond_in_the_scan(tiny):
    _, tokenizer, steps, params, settings = tiny
    prompt, length = _prompt_batch(tokenizer, PROMPTS)
    keys = rollout_lib.prompt_keys(0, jnp.arange(2))
    jaxpr = jax.make_jaxpr(functools.partial(rollout_lib.rollout, steps, settings=settings))(
        params, prompt, length, keys, jnp.int32(3))

    scans = [eqn for eqn in jaxpr.eqns
             if eqn.primitive.name == "scan" and eqn.params["length"] == settings.max_rounds]
    assert len(scans) == 1
    body_primitives = [eqn.primitive.name for eqn in scans[0].params["jaxpr"].eqns]
    assert "cond" in body_primitives
    assert "while" not in body_primitives, "the round must run inside the cond, not beside it"
