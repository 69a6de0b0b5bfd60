"""The FLUX-layout autoencoder: posterior sampling with a given eps, and the uint8 mapping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pstroke.model import convert
from pstroke.model.config import bagel_model
from pstroke.model.vae import AutoEncoder, to_uint8


@pytest.fixture(scope="module")
def autoencoder(assets_dir):
    """(AutoEncoder, params, image NHWC) from fixture set A."""
    import json

    folder = assets_dir / "bagel_tiny_a"
    raw = json.loads((folder / "config.json").read_text())
    config = bagel_model(raw["llm_config"], raw["vit_config"], raw["vae_config"], raw["bagel_config"])
    tensors = convert.read_safetensors(folder / "weights_ae.safetensors")
    params = convert.convert(tensors, convert.ae_entries(config.vae), convert.ae_param_shapes(config.vae), "ae")
    image = np.load(folder / "cases.npz")["vae.image"].transpose(0, 2, 3, 1)
    return AutoEncoder(config.vae), params, jnp.asarray(image)


def test_encode_with_eps_samples_posterior(autoencoder):
    model, params, image = autoencoder
    eps = jax.random.normal(jax.random.key(0), (1, 4, 4, 16))

    @jax.jit
    def encode_all(params, image, eps):
        variables = {"params": params}
        return (model.apply(variables, image, method=AutoEncoder.moments),
                model.apply(variables, image, eps, method=AutoEncoder.encode),
                model.apply(variables, image, jnp.zeros_like(eps), method=AutoEncoder.encode),
                model.apply(variables, image, method=AutoEncoder.encode))

    moments, sampled, zero_eps, mean = encode_all(params, image, eps)

    mu, logvar = moments[..., :16], moments[..., 16:]
    expected = model.config.scale_factor * (mu + jnp.exp(0.5 * logvar) * eps - model.config.shift_factor)
    np.testing.assert_allclose(sampled, expected, atol=1e-5)
    np.testing.assert_array_equal(zero_eps, mean)


def test_to_uint8_clamps_range():
    raw = jnp.array([-2.0, -1.0, 0.0, 1.0, 3.0])

    pixels = to_uint8(raw)

    assert pixels.dtype == jnp.uint8
    np.testing.assert_array_equal(pixels, [0, 0, 127, 255, 255])
