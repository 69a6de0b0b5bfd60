"""FLUX-layout autoencoder (frozen image codec for BAGEL), channels-last.

Module names mirror the checkpoint keys ("down.0", "block.1", "mid.attn_1", ...), so the dotted path
of a parameter is its checkpoint key with the leaf renamed (conv weight -> kernel, norm weight ->
scale). Images are NHWC in [-1, 1]; latents are NHWC with `z_channels` channels, scaled.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def group_norm(name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, epsilon=1e-6, use_fast_variance=False, name=name)


def conv(features: int, name: str, kernel: int = 3, stride: int = 1, padding: Any = 1) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding, name=name)


class ResnetBlock(nn.Module):
    """GroupNorm -> swish -> conv, twice, plus a 1x1 `nin_shortcut` when the width changes."""

    out_channels: int

    @nn.compact
    def __call__(self, x):
        h = conv(self.out_channels, "conv1")(nn.swish(group_norm("norm1")(x)))
        h = conv(self.out_channels, "conv2")(nn.swish(group_norm("norm2")(h)))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, "nin_shortcut", kernel=1, padding=0)(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual."""

    @nn.compact
    def __call__(self, x):
        batch, height, width, channels = x.shape
        normed = group_norm("norm")(x)
        q, k, v = (conv(channels, name, kernel=1, padding=0)(normed).reshape(batch, height * width, 1, channels)
                   for name in ("q", "k", "v"))
        attended = jax.nn.dot_product_attention(q, k, v).reshape(batch, height, width, channels)
        return x + conv(channels, "proj_out", kernel=1, padding=0)(attended)


class Mid(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock(self.channels, name="block_1")(x)
        x = AttnBlock(name="attn_1")(x)
        return ResnetBlock(self.channels, name="block_2")(x)


class Encoder(nn.Module):
    """Image [N, H, W, 3] -> moments [N, H/2**(levels-1), ..., 2 * z_channels] (mean, logvar)."""

    config: Any  # the model.vae section

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x = conv(cfg.ch, "conv_in")(x)
        for level, mult in enumerate(cfg.ch_mult):
            for block in range(cfg.num_res_blocks):
                x = ResnetBlock(cfg.ch * mult, name=f"down.{level}.block.{block}")(x)
            if level < len(cfg.ch_mult) - 1:
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
                x = conv(x.shape[-1], f"down.{level}.downsample.conv", stride=2, padding=0)(x)
        x = Mid(x.shape[-1], name="mid")(x)
        x = nn.swish(group_norm("norm_out")(x))
        return conv(2 * cfg.z_channels, "conv_out")(x)


class Decoder(nn.Module):
    """Unscaled latent [N, h, w, z_channels] -> raw image [N, h*2**(levels-1), ..., out_ch]."""

    config: Any

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        levels = len(cfg.ch_mult)
        x = conv(cfg.ch * cfg.ch_mult[-1], "conv_in")(z)
        x = Mid(x.shape[-1], name="mid")(x)
        for level in reversed(range(levels)):
            for block in range(cfg.num_res_blocks + 1):
                x = ResnetBlock(cfg.ch * cfg.ch_mult[level], name=f"up.{level}.block.{block}")(x)
            if level > 0:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
                x = conv(x.shape[-1], f"up.{level}.upsample.conv")(x)
        x = nn.swish(group_norm("norm_out")(x))
        return conv(cfg.out_ch, "conv_out")(x)


class AutoEncoder(nn.Module):
    """Encoder + decoder with BAGEL's latent scale and shift."""

    config: Any

    def setup(self):
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def moments(self, image):
        """Return raw encoder moments [N, h, w, 2 * z] of an NHWC image in [-1, 1]."""
        return self.encoder(image)

    def encode(self, image, eps=None):
        """Encode to the scaled latent: posterior mean when `eps` is None, else mean + std * eps."""
        moments = self.encoder(image)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        z = mean if eps is None else mean + jnp.exp(0.5 * logvar) * eps
        return self.config.scale_factor * (z - self.config.shift_factor)

    def decode(self, latent):
        """Decode a scaled latent [N, h, w, z] to a raw image (nominally [-1, 1], not clamped)."""
        return self.decoder(latent / self.config.scale_factor + self.config.shift_factor)

    def __call__(self, image):
        return self.decode(self.encode(image))


def to_uint8(image: Any) -> Any:
    """Map a raw decoded image in [-1, 1] to uint8 with clamp((x + 1) / 2, 0, 1) * 255."""
    return (jnp.clip(image * 0.5 + 0.5, 0.0, 1.0) * 255.0).astype(jnp.uint8)
