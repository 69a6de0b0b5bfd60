"""Image tokens of the "pixels" codec: an image becomes pixel patches, one token per patch.

NOTE: this is the only codec the data pipeline encodes; the "vae" codec needs trained autoencoder
weights, so its latents would have to come from the model package.
"""

import numpy as np

from pstroke.errors import UserError


def check_pixels_codec(model_config) -> None:
    """Raise UserError unless the model reads plain pixel patches."""
    if model_config.codec != "pixels" or model_config.latent_downsample != 1 or model_config.latent_channels != 3:
        raise UserError(f"the data pipeline encodes images only with model.codec='pixels' "
                        f"(latent_downsample 1, latent_channels 3), got codec={model_config.codec!r}; "
                        "set model.codec=pixels")


def patchify(image: np.ndarray, patch: int) -> np.ndarray:
    """Cut a uint8 [H, W, 3] image into [(H/p)*(W/p), p*p*3] float32 tokens in [-1, 1].

    Patches are in row-major order and each vector is in (row-in-patch, col-in-patch, channel)
    order, the layout of BAGEL's latent tokens.
    """
    height, width, channels = image.shape
    pixels = image.astype(np.float32) / 127.5 - 1.0
    grid = pixels.reshape(height // patch, patch, width // patch, patch, channels)
    return grid.transpose(0, 2, 1, 3, 4).reshape(-1, patch * patch * channels)


def unpatchify(tokens: np.ndarray, height: int, width: int, patch: int) -> np.ndarray:
    """Invert `patchify`: [(H/p)*(W/p), p*p*3] tokens in [-1, 1] -> uint8 [H, W, 3] image."""
    grid = tokens.reshape(height // patch, width // patch, patch, patch, 3).transpose(0, 2, 1, 3, 4)
    pixels = (grid.reshape(height, width, 3) + 1.0) * 127.5
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def latent_positions(height: int, width: int, patch: int, max_latent_size: int) -> np.ndarray:
    """Return the int32 position-table index row * max_latent_size + col of every patch token."""
    rows, cols = height // patch, width // patch
    if rows > max_latent_size or cols > max_latent_size:
        raise UserError(f"a {height}x{width} image has {rows}x{cols} patches but model.max_latent_size "
                        f"is {max_latent_size}; raise model.max_latent_size or model.latent_patch_size")
    row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (row * max_latent_size + col).reshape(-1).astype(np.int32)
