"""Token choices, prompt segments and sampler settings of the rollout, without a model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke.data import grammar
from pstroke.data.tokenizer import build_tokenizer
from pstroke.errors import UserError
from pstroke.rollout import rollout as rollout_lib
from pstroke.rollout import testing
from pstroke.rollout.model_steps import build_model_steps, guidance_config
from pstroke.rollout.sampling import encode_prompt, special_tokens


@pytest.fixture(scope="module")
def setup():
    config = testing.tiny_config()
    tokenizer = build_tokenizer(config)
    steps = build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
    return config, tokenizer, steps


def test_greedy_skips_markers_and_unused_ids(setup):
    _, tokenizer, steps = setup
    special = steps.special
    logits = jnp.zeros((3, 256)).at[0, special.vision_start].set(9.0).at[0, 40].set(5.0)
    logits = logits.at[1, 200].set(9.0).at[1, 41].set(5.0)
    logits = logits.at[2, special.im_end].set(9.0)
    keys = rollout_lib.prompt_keys(0, jnp.arange(3))

    tokens = rollout_lib._choose_token(logits, keys, steps, temperature=0.0)

    assert tokenizer.vocab_size <= 200
    assert tokens.tolist() == [40, 41, special.im_end]


def test_temperature_draws_follow_keys(setup):
    _, tokenizer, steps = setup
    logits = jnp.zeros((64, 256))
    same_keys = jnp.stack([jax.random.PRNGKey(3)] * 64)

    varied = rollout_lib._choose_token(logits, rollout_lib.prompt_keys(0, jnp.arange(64)), steps, temperature=1.0)
    repeated = rollout_lib._choose_token(logits, same_keys, steps, temperature=1.0)

    assert len(set(varied.tolist())) > 10
    assert len(set(repeated.tolist())) == 1
    special = steps.special
    banned = {special.im_start, special.vision_start, special.vision_end, special.end_of_text, special.pad}
    assert not banned & set(varied.tolist())
    assert max(varied.tolist()) < tokenizer.vocab_size


def test_switch_restricted_to_allowed_tokens(setup):
    _, _, steps = setup
    special = steps.special
    logits = jnp.zeros((2, 256)).at[:, 50].set(100.0)
    logits = logits.at[0, special.end_of_text].set(2.0).at[1, special.vision_start].set(3.0)

    after_text = rollout_lib._choose_switch(logits, rollout_lib._after_text(steps))
    after_image = rollout_lib._choose_switch(logits, rollout_lib._after_image(steps))

    assert after_text.tolist() == [special.end_of_text, special.vision_start]
    assert after_image[0] == special.end_of_text
    assert after_image[1] in (special.im_start, special.end_of_text)


def test_prompt_segment_has_markers_and_prefix(setup):
    _, tokenizer, _ = setup
    ids = encode_prompt("a photo of a red circle", tokenizer, 40)

    assert ids[0] == tokenizer.im_start_id
    assert ids[-1] == tokenizer.im_end_id
    assert tokenizer.decode(ids[1:-1]) == tokenizer.decode(tokenizer.encode(grammar.prompt_text("a photo of a red circle")))


def test_invalid_guidance_settings_rejected():
    config = testing.tiny_config(["sample.cfg_renorm_type=sideways"])
    with pytest.raises(UserError, match="sideways"):
        guidance_config(config.sample)

    config = testing.tiny_config(["sample.cfg_interval=(0.8, 0.2)"])
    with pytest.raises(UserError, match="cfg_interval"):
        guidance_config(config.sample)


def test_guidance_settings_reach_sampler():
    config = testing.tiny_config(["sample.cfg_text_scale=4.0", "sample.cfg_img_scale=1.5",
                                  "sample.cfg_interval=(0.4, 1.0)", "sample.cfg_renorm_type=channel"])
    guidance = guidance_config(config.sample)

    assert guidance.text_scale == 4.0
    assert guidance.img_scale == 1.5
    assert guidance.interval == (0.4, 1.0)
    assert guidance.renorm_type == "channel"
    assert np.isclose(guidance.renorm_min, config.sample.cfg_renorm_min)
