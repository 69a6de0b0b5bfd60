"""Image tokens of the "pixels" codec, computed in numpy on the input host.

The token layout (patch order, (row, col, channel) vectors, position ids) is the model's own:
`pstroke.model.embed.patchify_latent` and `latent_positions` do the work. This module only maps
uint8 pixels to the codec's [-1, 1] latent with numpy, because the data workers must not place
arrays on an accelerator.

NOTE: "pixels" is the only codec the data pipeline encodes; "vae" latents need trained
autoencoder weights and would come from the model package.
"""

import numpy as np

from pstroke.errors import UserError
from pstroke.model import embed


def check_pixels_codec(model_config) -> None:
    """Raise UserError unless the model reads plain pixel patches."""
    if model_config.codec != "pixels" or model_config.latent_downsample != 1 or model_config.latent_channels != 3:
        raise UserError(f"the data pipeline encodes images only with model.codec='pixels' "
                        f"(latent_downsample 1, latent_channels 3), got codec={model_config.codec!r}; "
                        "set model.codec=pixels")


def image_tokens(image: np.ndarray, model_config) -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 tokens [N, p*p*3] in [-1, 1] and int32 position ids [N] of a uint8 image."""
    patch = model_config.latent_patch_size
    height, width, _ = image.shape
    rows, cols = height // patch, width // patch
    if rows > model_config.max_latent_size or cols > model_config.max_latent_size:
        raise UserError(f"a {height}x{width} image has {rows}x{cols} patches but model.max_latent_size is "
                        f"{model_config.max_latent_size}; raise model.max_latent_size or model.latent_patch_size")
    latent = image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    tokens = np.asarray(embed.patchify_latent(latent, patch), np.float32)
    return tokens, embed.latent_positions((rows, cols), model_config.max_latent_size)
