"""Guidance branches that a scale of 1 turns off are not traced into the image sampler."""

import jax
import jax.numpy as jnp
import pytest

from pstroke.data.tokenizer import build_tokenizer
from pstroke.rollout import testing
from pstroke.rollout.model_steps import build_model_steps
from pstroke.rollout.sampling import special_tokens


def _count_primitive(jaxpr, name: str) -> int:
    """Count equations of primitive `name` in a jaxpr and every jaxpr nested in it."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for param in eqn.params.values():
            nested = param if isinstance(param, (list, tuple)) else [param]
            for item in nested:
                inner = getattr(item, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    total += _count_primitive(inner, name)
                elif hasattr(item, "eqns"):
                    total += _count_primitive(item, name)
    return total


def _decoder_passes(text_scale: float, image_scale: float) -> int:
    """Return how many decoder-stack scans one traced image sampler contains."""
    config = testing.tiny_config([f"sample.cfg_text_scale={text_scale}", f"sample.cfg_img_scale={image_scale}"])
    tokenizer = build_tokenizer(config)
    steps = build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
    params = testing.random_params(config)
    cache = steps.empty_cache(1)
    noise = jnp.zeros((1, steps.image_tokens, steps.token_dim), jnp.float32)
    jaxpr = jax.make_jaxpr(steps.sample_image)(params, cache, cache, cache, noise)
    return _count_primitive(jaxpr.jaxpr, "scan") - 1  # minus the Euler scan over timesteps


@pytest.mark.parametrize("text_scale, image_scale, passes", [
    (1.0, 1.0, 1),  # cond only
    (1.0, 2.0, 1),  # image guidance applies only together with text guidance
    (3.0, 1.0, 2),  # cond + text-uncond
    (3.0, 1.5, 3),  # cond + text-uncond + image-uncond
])
def test_guidance_branches_traced(text_scale, image_scale, passes):
    assert _decoder_passes(text_scale, image_scale) == passes
