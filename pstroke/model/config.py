"""Model settings: sizes of the unified decoder, the optional ViT and the image codec.

Field names follow BAGEL's configuration files so that a BAGEL config maps onto them one-to-one.
"""

import ml_collections


def shapes_model(hidden: int = 128, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                 vocab_size: int = 256) -> ml_collections.ConfigDict:
    """Return a small model for the Shapes world: pixel-patch codec, no ViT."""
    config = ml_collections.ConfigDict()

    config.llm = ml_collections.ConfigDict()
    config.llm.vocab_size = vocab_size
    config.llm.hidden_size = hidden
    config.llm.intermediate_size = 4 * hidden
    config.llm.num_layers = layers
    config.llm.num_heads = heads
    config.llm.num_kv_heads = kv_heads
    config.llm.head_dim = hidden // heads
    config.llm.rms_norm_eps = 1e-6
    config.llm.rope_theta = 10000.0
    config.llm.qk_norm = True

    config.vit = ml_collections.ConfigDict()
    config.vit.enabled = False
    config.vit.hidden_size = 32
    config.vit.intermediate_size = 64
    config.vit.num_layers = 1
    config.vit.num_heads = 2
    config.vit.patch_size = 14
    config.vit.max_patches_per_side = 70
    config.vit.layer_norm_eps = 1e-6

    # Image tokens: codec latent [channels, H/downsample, W/downsample] cut into
    # latent_patch_size x latent_patch_size patches, one token each.
    config.codec = "pixels"  # "pixels" (plain pixel patches) or "vae" (FLUX-layout autoencoder)
    config.latent_channels = 3
    config.latent_downsample = 1
    config.latent_patch_size = 4
    config.max_latent_size = 16  # latent tokens per side in the position table
    config.timestep_frequency_dim = 256

    config.vae = ml_collections.ConfigDict()
    config.vae.ch = 32
    config.vae.ch_mult = (1, 2, 2, 2)
    config.vae.num_res_blocks = 1
    config.vae.z_channels = 16
    config.vae.in_channels = 3
    config.vae.out_ch = 3
    config.vae.scale_factor = 0.3611
    config.vae.shift_factor = 0.1159

    config.compute_dtype = "float32"  # "float32" or "bfloat16"; parameters stay float32
    # "dense" runs both experts on every token and selects; "gather" sorts tokens by expert and uses
    # jax.lax.ragged_dot. On the CPU backend dense measured about 2x faster (BENCHMARKS.md).
    config.mot_routing = "dense"
    # What the backward pass recomputes (training only). "none" keeps every activation. "attention"
    # recomputes the [B, heads, T, S] attention probabilities instead of storing them per layer.
    # "layer" recomputes each decoder layer from its input and keeps one residual per layer. On the
    # 2-core CPU "attention" measured fastest for the Shapes models (BENCHMARKS.md, "Train step").
    config.remat = "attention"
    return config


def bagel_model(llm: dict, vit: dict, vae: dict, bagel: dict) -> ml_collections.ConfigDict:
    """Return a model section from BAGEL's configuration dicts (llm, vit, vae, bagel-level).

    The dicts use BAGEL's field names, as in its `llm_config.json` / `vit_config.json` and the
    fixture `config.json`. The ViT layer count is taken as given. The released `vit_config.json`
    lists 27 layers but the checkpoint contains 26, so pass 26 for it.
    """
    config = shapes_model()
    config.llm.vocab_size = llm["vocab_size"]
    config.llm.hidden_size = llm["hidden_size"]
    config.llm.intermediate_size = llm["intermediate_size"]
    config.llm.num_layers = llm["num_hidden_layers"]
    config.llm.num_heads = llm["num_attention_heads"]
    config.llm.num_kv_heads = llm["num_key_value_heads"]
    config.llm.head_dim = llm.get("head_dim", llm["hidden_size"] // llm["num_attention_heads"])
    config.llm.rms_norm_eps = llm["rms_norm_eps"]
    config.llm.rope_theta = float(llm["rope_theta"])
    config.llm.qk_norm = bool(llm.get("qk_norm", True))

    config.vit.enabled = bool(bagel.get("visual_und", True))
    config.vit.hidden_size = vit["hidden_size"]
    config.vit.intermediate_size = vit["intermediate_size"]
    config.vit.num_layers = vit["num_hidden_layers"]
    config.vit.num_heads = vit["num_attention_heads"]
    config.vit.patch_size = vit["patch_size"]
    config.vit.max_patches_per_side = bagel["vit_max_num_patch_per_side"]
    config.vit.layer_norm_eps = vit["layer_norm_eps"]

    config.codec = "vae"
    config.latent_channels = vae["z_channels"]
    config.latent_downsample = vae["downsample"]
    config.latent_patch_size = bagel["latent_patch_size"]
    config.max_latent_size = bagel["max_latent_size"]
    config.timestep_frequency_dim = bagel.get("timestep_frequency_dim", 256)

    config.vae.ch = vae["ch"]
    config.vae.ch_mult = tuple(vae["ch_mult"])
    config.vae.num_res_blocks = vae["num_res_blocks"]
    config.vae.z_channels = vae["z_channels"]
    config.vae.in_channels = vae["in_channels"]
    config.vae.out_ch = vae["out_ch"]
    config.vae.scale_factor = vae["scale_factor"]
    config.vae.shift_factor = vae["shift_factor"]
    return config
