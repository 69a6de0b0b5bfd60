"""Image-token embeddings: 2-D sin-cos tables, the timestep embedder, latent patchify, pixel codec."""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_dtypes
import numpy as np


@functools.lru_cache(maxsize=8)
def sincos_table(grid_size: int, width: int) -> np.ndarray:
    """Return the frozen 2-D sin-cos position table [grid_size**2, width] as float32 numpy.

    Row `row * grid_size + col` is [sin(col w), cos(col w), sin(row w), cos(row w)] with
    w_j = 10000**(-j / (width / 4)). The table is computed in float64 and rounded to float32, then
    to bfloat16, so it equals the bf16 values stored in BAGEL checkpoints. The model adds these
    rounded values in every compute dtype.
    """
    if width % 4:
        raise ValueError(f"sin-cos table width must be divisible by 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64),
                             indexing="ij")
    col_angles = cols.reshape(-1, 1) * omega
    row_angles = rows.reshape(-1, 1) * omega
    table = np.concatenate([np.sin(col_angles), np.cos(col_angles), np.sin(row_angles), np.cos(row_angles)], axis=1)
    return table.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def timestep_features(t: Any, dim: int) -> Any:
    """Return float32 [..., dim] features [cos(t f), sin(t f)], f_k = exp(-ln(10000) k / (dim/2)).

    `t` is the flow time in [0, 1], used unscaled.
    """
    half = dim // 2
    freqs = jnp.exp(-np.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimestepEmbedder(nn.Module):
    """MLP over timestep features: Linear(freq_dim -> hidden), SiLU, Linear(hidden -> hidden)."""

    hidden: int
    frequency_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t):
        features = timestep_features(t, self.frequency_dim).astype(self.dtype)
        x = dense(self.hidden, ("freq", "embed"), self.dtype, "mlp.0")(features)
        return dense(self.hidden, ("embed", "embed_out"), self.dtype, "mlp.2")(nn.silu(x))


def dense(features: int, axes: tuple[str, str], dtype: Any, name: str, use_bias: bool = True,
          zero_init: bool = False) -> nn.Dense:
    """Return an nn.Dense with logical axis names on its kernel [in, out] and bias [out]."""
    kernel_init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]), name=name)


def patchify_latent(latent: Any, patch: int) -> Any:
    """Cut a latent [C, H, W] into tokens [(H/p)*(W/p), p*p*C], token rows row-major.

    Element (pi * p + qi) * C + c of token (i, j) is latent[c, i*p + pi, j*p + qi].
    """
    channels, height, width = latent.shape
    x = latent.reshape(channels, height // patch, patch, width // patch, patch)
    x = x.transpose(1, 3, 2, 4, 0)
    return x.reshape((height // patch) * (width // patch), patch * patch * channels)


def unpatchify_latent(tokens: Any, grid_hw: tuple[int, int], patch: int, channels: int) -> Any:
    """Invert `patchify_latent`: tokens [h*w, p*p*C] -> latent [C, h*p, w*p]."""
    h, w = grid_hw
    x = tokens.reshape(h, w, patch, patch, channels)
    x = x.transpose(4, 0, 2, 1, 3)
    return x.reshape(channels, h * patch, w * patch)


def latent_positions(grid_hw: tuple[int, int], max_latent_size: int) -> np.ndarray:
    """Return int32 position ids row * max_latent_size + col of an h x w token grid, row-major."""
    rows, cols = np.meshgrid(np.arange(grid_hw[0]), np.arange(grid_hw[1]), indexing="ij")
    return (rows * max_latent_size + cols).reshape(-1).astype(np.int32)


def pixels_to_latent(image: Any) -> Any:
    """Map a uint8 image [H, W, 3] to the "pixels" codec latent [3, H, W] in [-1, 1] (float32)."""
    x = jnp.asarray(image).astype(jnp.float32) / 127.5 - 1.0
    return x.transpose(2, 0, 1)


def latent_to_pixels(latent: Any) -> Any:
    """Map a "pixels" codec latent [3, H, W] back to a uint8 image [H, W, 3] (clipped, rounded)."""
    x = jnp.clip((latent.transpose(1, 2, 0) + 1.0) * 127.5, 0.0, 255.0)
    return jnp.round(x).astype(jnp.uint8)
