"""Decoder building blocks: RMSNorm, RoPE, Mixture-of-Transformers projections, attention, layers.

Every expert-specific parameter is stored with a leading expert axis of size 2 (index
EXPERT_UND = 0, EXPERT_GEN = 1, as in `pstroke.batch`), so one array contains BAGEL's plain and
`_moe_gen` weights. Each token uses the slice of its own expert. Two routings compute the same
function:

- "dense": both experts run on every token and a select keeps the token's own result (2x FLOPs).
- "gather": tokens are sorted by expert with a static-size permutation and each projection is one
  `jax.lax.ragged_dot` over the two groups, so every token is multiplied only by its own weights.

Activations are [batch, length, ...]. Logical axis names: 'batch', 'length', 'embed', 'mlp',
'heads', 'kv_heads', 'head_dim', 'vocab', 'layers', 'expert'.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pstroke.batch import EXPERT_GEN

NUM_EXPERTS = 2
Array = Any


def dtype_of(name: str) -> jnp.dtype:
    """Map a config dtype name ("float32" or "bfloat16") to a jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


@dataclasses.dataclass(frozen=True)
class Routing:
    """Per-token expert choice of one forward pass.

    Fields:
      is_gen: [B, T] bool, True where the token uses the gen expert.
      mode: "dense" or "gather".
      order: [B*T] int32, token indices sorted by expert (und first); "gather" only.
      inverse: [B*T] int32, inverse permutation of `order`; "gather" only.
      group_sizes: [2] int32, number of und and gen tokens; "gather" only.
    """

    is_gen: Array
    mode: str
    order: Array = None
    inverse: Array = None
    group_sizes: Array = None


def make_routing(expert: Array, mode: str) -> Routing:
    """Build the routing of [B, T] expert ids for `mode` ("dense" or "gather")."""
    is_gen = expert == EXPERT_GEN
    if mode == "dense":
        return Routing(is_gen=is_gen, mode=mode)
    if mode != "gather":
        raise ValueError(f"unknown mot_routing {mode!r}: expected 'gather' or 'dense'")

    flat = is_gen.reshape(-1).astype(jnp.int32)
    order = jnp.argsort(flat, stable=True).astype(jnp.int32)
    inverse = jnp.argsort(order).astype(jnp.int32)
    num_gen = flat.sum()
    group_sizes = jnp.stack([flat.shape[0] - num_gen, num_gen]).astype(jnp.int32)
    return Routing(is_gen=is_gen, mode=mode, order=order, inverse=inverse, group_sizes=group_sizes)


def select_expert(routing: Routing, per_expert: Array, token_rank: int) -> Array:
    """Pick `per_expert[0]` or `per_expert[1]` per token; the result broadcasts against [B, T, ...].

    `token_rank` is the number of trailing per-token axes of the value it will multiply.
    """
    is_gen = routing.is_gen.reshape(routing.is_gen.shape + (1,) * token_rank)
    return jnp.where(is_gen, per_expert[1], per_expert[0])


def mot_matmul(x: Array, kernel: Array, routing: Routing, in_rank: int) -> Array:
    """Multiply each token of x [B, T, *in] by its expert's kernel [2, *in, *out]."""
    batch_shape = x.shape[:2]
    in_shape = kernel.shape[1:1 + in_rank]
    out_shape = kernel.shape[1 + in_rank:]
    in_size = math.prod(in_shape)
    out_size = math.prod(out_shape)
    flat_kernel = kernel.reshape(NUM_EXPERTS, in_size, out_size)
    flat_x = x.reshape(-1, in_size)

    if routing.mode == "dense":
        und = flat_x @ flat_kernel[0]
        gen = flat_x @ flat_kernel[1]
        out = jnp.where(routing.is_gen.reshape(-1, 1), gen, und)
    else:
        sorted_x = jnp.take(flat_x, routing.order, axis=0)
        sorted_out = jax.lax.ragged_dot(sorted_x, flat_kernel, routing.group_sizes)
        out = jnp.take(sorted_out, routing.inverse, axis=0)
    return out.reshape(batch_shape + out_shape)


class MoTDense(nn.Module):
    """A Linear with one weight set per expert: kernel [2, *in, *out], optional bias [2, *out]."""

    in_features: tuple[int, ...]
    out_features: tuple[int, ...]
    axes: tuple[str, ...]  # logical names of the in and out axes
    use_bias: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, routing: Routing) -> Array:
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                in_axis=tuple(range(1, 1 + len(self.in_features))),
                                                out_axis=tuple(range(1 + len(self.in_features),
                                                                     1 + len(self.axes))))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, ("expert",) + self.axes),
                            (NUM_EXPERTS,) + self.in_features + self.out_features, jnp.float32)
        y = mot_matmul(x.astype(self.dtype), kernel.astype(self.dtype), routing, len(self.in_features))
        if self.use_bias:
            out_axes = self.axes[len(self.in_features):]
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("expert",) + out_axes),
                              (NUM_EXPERTS,) + self.out_features, jnp.float32)
            y = y + select_expert(routing, bias.astype(self.dtype), len(self.out_features))
        return y


def rms_normalize(x: Array, scale: Array, eps: float) -> Array:
    """RMSNorm as BAGEL computes it: normalise in float32, cast to x's dtype, then multiply the scale.

    Written by hand because flax's RMSNorm multiplies the scale before the cast, which rounds
    differently in bfloat16.
    """
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype) * scale.astype(x.dtype)


class MoTRMSNorm(nn.Module):
    """RMSNorm over the last axis with one scale per expert: scale [2, features]."""

    features: int
    axis_name: str
    eps: float

    @nn.compact
    def __call__(self, x: Array, routing: Routing) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("expert", self.axis_name)),
                           (NUM_EXPERTS, self.features), jnp.float32)
        token_rank = x.ndim - 2
        return rms_normalize(x, select_expert(routing, scale, token_rank), self.eps)


def rope_cos_sin(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """Return float32 cos, sin [..., head_dim] of 1-D rope ids (half-size frequencies repeated twice)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate x [B, T, heads, head_dim] with cos/sin [B, T, head_dim] (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


REMAT_MODES = ("none", "attention", "layer")


def check_remat(mode: str) -> None:
    """Raise ValueError unless `mode` is a known `model.remat` setting."""
    if mode not in REMAT_MODES:
        raise ValueError(f"unknown model.remat {mode!r}: use one of {', '.join(REMAT_MODES)}")


def attend(query: Array, key: Array, value: Array, mask: Array) -> Array:
    """Grouped-query attention of query [B, T, N, D] over key/value [B, S, K, D] where mask [B, T, S].

    Every query row must allow at least one key. A fused TPU kernel can replace this function.
    """
    return jax.nn.dot_product_attention(query, key, value, mask=mask[:, None, :, :])


class Attention(nn.Module):
    """MoT self-attention: per-expert q/k/v (with bias) and o (no bias), QK-RMSNorm before RoPE."""

    config: Any
    dtype: Any

    @nn.compact
    def __call__(self, x, routing, cos, sin, mask, prefix_kv):
        llm = self.config.llm
        hidden, heads, kv_heads, head_dim = llm.hidden_size, llm.num_heads, llm.num_kv_heads, llm.head_dim

        def proj(name, out_heads, out_axis):
            return MoTDense((hidden,), (out_heads, head_dim), ("embed", out_axis, "head_dim"), True,
                            self.dtype, name=name)

        query = proj("q_proj", heads, "heads")(x, routing)
        key = proj("k_proj", kv_heads, "kv_heads")(x, routing)
        value = proj("v_proj", kv_heads, "kv_heads")(x, routing)
        if llm.qk_norm:
            query = MoTRMSNorm(head_dim, "head_dim", llm.rms_norm_eps, name="q_norm")(query, routing)
            key = MoTRMSNorm(head_dim, "head_dim", llm.rms_norm_eps, name="k_norm")(key, routing)
        query = apply_rope(query, cos, sin)
        key = apply_rope(key, cos, sin)
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "head_dim"))
        key = nn.with_logical_constraint(key, ("batch", "length", "kv_heads", "head_dim"))

        all_key, all_value = key, value
        if prefix_kv is not None:
            all_key = jnp.concatenate([prefix_kv[0].astype(key.dtype), key], axis=1)
            all_value = jnp.concatenate([prefix_kv[1].astype(value.dtype), value], axis=1)
        # Under "attention" remat the backward pass recomputes the scores and probabilities instead
        # of reading L stored [B, heads, T, S] tensors, which costs more memory traffic than the
        # recomputation on CPU.
        attend_fn = jax.checkpoint(attend) if self.config.remat == "attention" else attend
        out = attend_fn(query, all_key, all_value, mask)

        out = MoTDense((heads, head_dim), (hidden,), ("heads", "head_dim", "embed"), False, self.dtype,
                       name="o_proj")(out, routing)
        return out, (key, value)


class MLP(nn.Module):
    """SwiGLU MLP without biases, one weight set per expert."""

    config: Any
    dtype: Any

    @nn.compact
    def __call__(self, x, routing):
        hidden, width = self.config.llm.hidden_size, self.config.llm.intermediate_size
        gate = MoTDense((hidden,), (width,), ("embed", "mlp"), False, self.dtype, name="gate_proj")(x, routing)
        up = MoTDense((hidden,), (width,), ("embed", "mlp"), False, self.dtype, name="up_proj")(x, routing)
        inner = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return MoTDense((width,), (hidden,), ("mlp", "embed"), False, self.dtype, name="down_proj")(inner, routing)


@dataclasses.dataclass(frozen=True)
class DecoderInputs:
    """Per-token inputs shared by every decoder layer (broadcast over the layer scan).

    Fields:
      routing: expert choice of each query token.
      cos, sin: [B, T, head_dim] float32 RoPE tables of the query tokens.
      mask: [B, T, S] bool, S = prefix length + T; True where the query may attend the key.
    """

    routing: Routing
    cos: Array
    sin: Array
    mask: Array


jax.tree_util.register_dataclass(Routing, data_fields=["is_gen", "order", "inverse", "group_sizes"],
                                 meta_fields=["mode"])
jax.tree_util.register_dataclass(DecoderInputs, data_fields=["routing", "cos", "sin", "mask"], meta_fields=[])


class DecoderLayer(nn.Module):
    """One MoT decoder layer. Returns (residual out, (residual out, (new keys, new values)))."""

    config: Any
    dtype: Any

    @nn.compact
    def __call__(self, x, inputs: DecoderInputs, prefix_kv):
        hidden, eps = self.config.llm.hidden_size, self.config.llm.rms_norm_eps
        routing = inputs.routing

        normed = MoTRMSNorm(hidden, "embed", eps, name="input_layernorm")(x, routing)
        attn_out, new_kv = Attention(self.config, self.dtype, name="self_attn")(
            normed, routing, inputs.cos, inputs.sin, inputs.mask, prefix_kv)
        x = x + attn_out

        normed = MoTRMSNorm(hidden, "embed", eps, name="post_attention_layernorm")(x, routing)
        x = x + MLP(self.config, self.dtype, name="mlp")(normed, routing)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x, (x, new_kv)


class LanguageModel(nn.Module):
    """The MoT decoder stack: embed_tokens, scanned layers, per-expert final norm, lm_head."""

    config: Any

    def setup(self):
        llm = self.config.llm
        dtype = dtype_of(self.config.compute_dtype)
        self.embed_tokens = nn.Embed(
            llm.vocab_size, llm.hidden_size, dtype=dtype, param_dtype=jnp.float32,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")))
        check_remat(self.config.remat)
        layer = nn.remat(DecoderLayer, prevent_cse=False) if self.config.remat == "layer" else DecoderLayer
        self.layers = nn.scan(
            layer, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(nn.broadcast, 0), length=llm.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"})(self.config, dtype)
        self.norm = MoTRMSNorm(llm.hidden_size, "embed", llm.rms_norm_eps)
        self.lm_head = nn.Dense(
            llm.vocab_size, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")))

    def embed(self, token_id: Array) -> Array:
        """Look up token embeddings [B, T, hidden] in the compute dtype."""
        return self.embed_tokens(token_id)

    def decode(self, x, inputs: DecoderInputs, prefix_kv=None):
        """Run every layer; return (final residual, per-layer residuals [L, ...], new keys, new values).

        `prefix_kv` is (keys, values) [L, B, S0, kv_heads, head_dim] that the queries also attend
        (a KV cache); the mask's first S0 columns refer to them.
        """
        x, (layer_outputs, (keys, values)) = self.layers(x, inputs, prefix_kv)
        return x, layer_outputs, keys, values

    def final_norm(self, x, routing: Routing) -> Array:
        """Apply `norm` to und tokens and `norm_moe_gen` to gen tokens."""
        return self.norm(x, routing)

    def logits(self, hidden: Array) -> Array:
        """Return float32 lm_head logits [B, T, vocab]."""
        return self.lm_head(hidden).astype(jnp.float32)

    def __call__(self, token_id, inputs):
        return self.decode(self.embed(token_id), inputs)
