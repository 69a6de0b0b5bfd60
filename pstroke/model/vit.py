"""SigLIP-style NaViT encoder (understanding tower) over packed patch tokens.

Images arrive already cut into patches, P = patch_size**2 * 3 values per patch in (row-in-patch,
col-in-patch, channel) order, with learned absolute positions row * max_patches_per_side + col.
Attention is bidirectional and limited by a [B, T, T] mask (same image only).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pstroke.model.embed import dense


class MultiAxisDense(nn.Module):
    """A Linear over several trailing axes: kernel [*in, *out] and bias [*out], each with logical names.

    Written by hand because nn.DenseGeneral creates its kernel at a flattened rank-2 shape first.
    Under a mesh, the rank-3 logical sharding of the initialiser is then applied to that rank-2 value,
    which raises a ValueError.
    """

    in_features: tuple[int, ...]
    out_features: tuple[int, ...]
    axes: tuple[str, ...]  # Logical names of the in axes, followed by the out axes.
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """Contract the last len(in_features) axes of x with the kernel and return [..., *out_features]."""
        in_rank = len(self.in_features)
        init = nn.initializers.lecun_normal(in_axis=tuple(range(in_rank)),
                                            out_axis=tuple(range(in_rank, len(self.axes))))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes),
                            self.in_features + self.out_features, jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[in_rank:]),
                          self.out_features, jnp.float32)

        contract = (tuple(range(x.ndim - in_rank, x.ndim)), tuple(range(in_rank)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
        return y + bias.astype(self.dtype)


class ViTLayer(nn.Module):
    """Pre-LN encoder layer: x += out_proj(attn(LN1 x)); x += fc2(gelu_tanh(fc1(LN2 x)))."""

    config: Any
    dtype: Any

    @nn.compact
    def __call__(self, x, mask):
        vit = self.config
        head_dim = vit.hidden_size // vit.num_heads

        def head_proj(name):
            return MultiAxisDense((vit.hidden_size,), (vit.num_heads, head_dim),
                                  ("vit_embed", "vit_heads", "head_dim"), self.dtype, name=name)

        normed = layer_norm(vit.layer_norm_eps, self.dtype, "layer_norm1")(x)
        query, key, value = (head_proj(name)(normed) for name in ("q_proj", "k_proj", "v_proj"))
        attended = jax.nn.dot_product_attention(query, key, value, mask=mask[:, None])
        out = MultiAxisDense((vit.num_heads, head_dim), (vit.hidden_size,), ("vit_heads", "head_dim", "vit_embed"),
                             self.dtype, name="out_proj")(attended)
        x = x + out

        normed = layer_norm(vit.layer_norm_eps, self.dtype, "layer_norm2")(x)
        inner = nn.gelu(dense(vit.intermediate_size, ("vit_embed", "vit_mlp"), self.dtype, "fc1")(normed),
                        approximate=True)
        x = x + dense(vit.hidden_size, ("vit_mlp", "vit_embed"), self.dtype, "fc2")(inner)
        return nn.with_logical_constraint(x, ("batch", "length", "vit_embed")), None


def layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    """Return a LayerNorm with logical names on its scale and bias."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name=name, use_fast_variance=False,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("vit_embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vit_embed",)))


class VisionTransformer(nn.Module):
    """Patch embedding + learned positions, scanned encoder layers, post_layernorm."""

    config: Any  # the model.vit section
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, patches, positions, mask):
        """Encode patches [B, T, P] at position ids [B, T] under mask [B, T, T]; return [B, T, hidden]."""
        vit = self.config
        x = dense(vit.hidden_size, ("vit_patch", "vit_embed"), self.dtype, "patch_embedding")(
            patches.astype(self.dtype))
        table = nn.Embed(vit.max_patches_per_side ** 2, vit.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                     ("vit_positions", "vit_embed")),
                         name="position_embedding")
        x = x + table(positions)

        layers = nn.scan(ViTLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=nn.broadcast, length=vit.num_layers,
                         metadata_params={nn.PARTITION_NAME: "layers"})(vit, self.dtype, name="layers")
        x, _ = layers(x, mask)
        return layer_norm(vit.layer_norm_eps, self.dtype, "post_layernorm")(x)


def patchify_image(image: Any, patch: int) -> Any:
    """Cut an image [3, H, W] into patches [(H/p)*(W/p), p*p*3] in (row, col, channel) order."""
    channels, height, width = image.shape
    x = image.reshape(channels, height // patch, patch, width // patch, patch)
    x = x.transpose(1, 3, 2, 4, 0)
    return x.reshape((height // patch) * (width // patch), patch * patch * channels)


def vit_positions(grid_hw: tuple[int, int], max_patches_per_side: int) -> Any:
    """Return int32 position ids row * max_patches_per_side + col of a patch grid, row-major."""
    rows, cols = jnp.meshgrid(jnp.arange(grid_hw[0]), jnp.arange(grid_hw[1]), indexing="ij")
    return (rows * max_patches_per_side + cols).reshape(-1).astype(jnp.int32)
