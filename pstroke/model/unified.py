"""The unified BAGEL-shaped model: token embeddings, the MoT decoder, the text and velocity heads.

Training forward (`UnifiedModel.__call__`) takes the packed batch of `pstroke.batch` plus `noise`
[B, T, D] float32 and returns (logits and velocity in float32, the rest in the compute dtype):

| key             | shape         | meaning |
|-----------------|---------------|---------|
| `logits`        | [B, T, vocab] | lm_head(norm(h)) on every token; only und (text) rows are meaningful |
| `velocity`      | [B, T, D]     | llm2vae(norm_moe_gen(h)) on every token; only latent rows are meaningful |
| `hidden`        | [B, T, H]     | final hidden after the per-expert final norm |
| `llm_input`     | [B, T, H]     | embeddings entering the decoder |
| `layer_outputs` | [L, B, T, H]  | residual stream after each layer (only with `return_layers=True`) |

The mask comes from `sample_id`, `split_id`, `split_mode` and the optional `key_visible` through
`pstroke.batch.attention_allowed`. Latent tokens enter as x_t = (1 - t) * latent + t * noise with
t = `timestep`, embedded as vae2llm(x_t) + time_embedder(t) + sincos(latent_pos). ViT tokens (when `model.vit.enabled`) enter
as connector(ViT(vit_patch)) + sincos(vit_pos). Other tokens take `embed_tokens[token_id]`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pstroke.batch import KIND_LATENT, KIND_VIT, attention_allowed
from pstroke.model.embed import TimestepEmbedder, dense, sincos_table
from pstroke.model.layers import DecoderInputs, LanguageModel, dtype_of, make_routing, rope_cos_sin
from pstroke.model.vit import VisionTransformer


def latent_dim(model_config) -> int:
    """Return D, the width of one latent token: latent_patch_size**2 * latent_channels."""
    return model_config.latent_patch_size ** 2 * model_config.latent_channels


class Connector(nn.Module):
    """ViT features -> LLM width: fc2(gelu_tanh(fc1(x)))."""

    hidden: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(dense(self.hidden, ("vit_embed", "embed"), self.dtype, "fc1")(x), approximate=True)
        return dense(self.hidden, ("embed", "embed_out"), self.dtype, "fc2")(x)


def vit_mask(batch: dict) -> jax.Array:
    """Return the ViT attention mask [B, T, T]: ViT tokens attend to the ViT tokens of their split.

    Every other token attends only to itself, so no softmax row is empty.
    """
    is_vit = batch["kind"] == KIND_VIT
    same_image = ((batch["split_id"][..., :, None] == batch["split_id"][..., None, :])
                  & (batch["sample_id"][..., :, None] == batch["sample_id"][..., None, :])
                  & is_vit[..., :, None] & is_vit[..., None, :])
    length = is_vit.shape[-1]
    return same_image | jnp.eye(length, dtype=bool)


class UnifiedModel(nn.Module):
    """BAGEL-shaped unified model built from the `model` config section."""

    config: Any

    def setup(self):
        cfg = self.config
        dtype = dtype_of(cfg.compute_dtype)
        hidden = cfg.llm.hidden_size
        self.language_model = LanguageModel(cfg)
        self.time_embedder = TimestepEmbedder(hidden, cfg.timestep_frequency_dim, dtype)
        self.vae2llm = dense(hidden, ("latent", "embed"), dtype, None)
        self.llm2vae = dense(latent_dim(cfg), ("embed", "latent"), dtype, None, zero_init=True)
        if cfg.vit.enabled:
            self.vit_model = VisionTransformer(cfg.vit, dtype)
            self.connector = Connector(hidden, dtype)

    @property
    def dtype(self):
        return dtype_of(self.config.compute_dtype)

    def embed_text(self, token_id):
        """Embed token ids [B, T] -> [B, T, H]."""
        return self.language_model.embed(token_id)

    def embed_latent(self, x_t, t, latent_pos):
        """Embed latent tokens x_t [B, T, D] at flow time t [B, T] and table ids [B, T] -> [B, T, H]."""
        table = jnp.asarray(sincos_table(self.config.max_latent_size, self.config.llm.hidden_size))
        x = self.vae2llm(x_t.astype(self.dtype)) + self.time_embedder(t)
        return x + table[latent_pos].astype(self.dtype)

    def embed_vit(self, patches, vit_pos, mask):
        """Encode ViT patches [B, T, P] at ids [B, T] under mask [B, T, T] -> LLM inputs [B, T, H]."""
        table = jnp.asarray(sincos_table(self.config.vit.max_patches_per_side, self.config.llm.hidden_size))
        features = self.vit_model(patches, vit_pos, mask)
        return self.connector(features) + table[vit_pos].astype(self.dtype)

    def vit_features(self, patches, vit_pos, mask):
        """Return ViT features [B, T, vit_hidden] (after post_layernorm, before the connector)."""
        return self.vit_model(patches, vit_pos, mask)

    def decode(self, x, expert, position, mask, prefix_kv=None):
        """Run the decoder on embeddings x [B, T, H].

        `expert` and `position` are [B, T]; `mask` is [B, T, S0 + T] over the `prefix_kv` keys
        (a cache, [L, B, S0, kv_heads, head_dim] each, or None) followed by the new tokens.
        Returns (final residual, per-layer residuals, new keys, new values, routing).
        """
        routing = make_routing(expert, self.config.mot_routing)
        cos, sin = rope_cos_sin(position, self.config.llm.head_dim, self.config.llm.rope_theta)
        inputs = DecoderInputs(routing=routing, cos=cos, sin=sin, mask=mask)
        x = nn.with_logical_constraint(x.astype(self.dtype), ("batch", "length", "embed"))
        out, layer_outputs, keys, values = self.language_model.decode(x, inputs, prefix_kv)
        return out, layer_outputs, keys, values, routing

    def heads(self, residual, routing):
        """Return (final hidden, float32 logits, float32 velocity) of a decoder residual."""
        hidden = self.language_model.final_norm(residual, routing)
        logits = self.language_model.logits(hidden)
        velocity = self.llm2vae(hidden).astype(jnp.float32)
        return hidden, logits, velocity

    def embed_batch(self, batch):
        """Return the decoder input [B, T, H] of a packed batch (see the module docstring)."""
        x = self.embed_text(batch["token_id"])

        t = batch["timestep"].astype(jnp.float32)[..., None]
        x_t = (1.0 - t) * batch["latent"] + t * batch["noise"]
        latent_x = self.embed_latent(x_t, batch["timestep"], batch["latent_pos"])
        x = jnp.where((batch["kind"] == KIND_LATENT)[..., None], latent_x, x)

        if self.config.vit.enabled and "vit_patch" in batch:
            vit_x = self.embed_vit(batch["vit_patch"], batch["vit_pos"], vit_mask(batch))
            x = jnp.where((batch["kind"] == KIND_VIT)[..., None], vit_x, x)
        return x

    def __call__(self, batch, return_layers: bool = False):
        x = self.embed_batch(batch)
        mask = attention_allowed(batch["sample_id"], batch["split_id"], batch["split_mode"], xp=jnp,
                                 key_visible=batch.get("key_visible"))
        residual, layer_outputs, _, _, routing = self.decode(x, batch["expert"], batch["position"], mask)
        hidden, logits, velocity = self.heads(residual, routing)

        # NOTE: logits cover every token in float32 ([B, T, vocab]). At BAGEL scale (vocab 152064,
        # 32K tokens) that is 20 GB per row (computed), so large runs need CE on the CE rows only.
        outputs = {
            "logits": nn.with_logical_constraint(logits, ("batch", "length", "vocab")),
            "velocity": velocity,
            "hidden": hidden,
            "llm_input": x,
        }
        if return_layers:
            outputs["layer_outputs"] = layer_outputs
        return outputs


def init_params(config, rng: jax.Array, example_batch: dict) -> dict:
    """Initialise the parameters of `UnifiedModel(config.model)` (float32, with logical-axis boxes).

    `example_batch` needs the fields of `pstroke.batch` plus `noise`; only shapes matter. Call
    `flax.linen.unbox` (or `nn.get_partition_spec` for shardings) on the result as needed.
    """
    model = UnifiedModel(config.model)
    return model.init(rng, example_batch)["params"]
