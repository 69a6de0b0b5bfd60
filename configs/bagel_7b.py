"""BAGEL-7B-MoT: the released model's exact sizes, for fine-tuning the converted checkpoint.

Usage: --config=configs/bagel_7b.py (the file has no variants). Load weights with `pstroke.model.convert.load_bagel(folder,
config.model)` from a folder holding `ema.safetensors` and `ae.safetensors`.
"""

import ml_collections

from pstroke.data import config as data_config
from pstroke.model import config as model_config
from pstroke.rollout import config as rollout_config
from pstroke.train import config as train_config
from pstroke.world import config as world_config

# Qwen2.5-7B-Instruct language model with BAGEL's QK-norm.
LLM = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
           num_attention_heads=28, num_key_value_heads=4, head_dim=128, rms_norm_eps=1e-6,
           rope_theta=1_000_000.0, qk_norm=True)
# SigLIP-so400m NaViT. The checkpoint contains 26 layers although its vit_config.json lists 27.
VIT = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
           patch_size=14, layer_norm_eps=1e-6)
# FLUX.1 autoencoder.
VAE = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16, in_channels=3, out_ch=3,
           downsample=8, scale_factor=0.3611, shift_factor=0.1159)
BAGEL = dict(visual_und=True, latent_patch_size=2, max_latent_size=64, vit_max_num_patch_per_side=70,
             timestep_frequency_dim=256)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant:
        raise ValueError(f"unknown config variant {variant!r}: configs/bagel_7b.py has no variants, "
                         "pass --config=configs/bagel_7b.py")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.world = world_config.default_config(canvas=1024)
    config.model = model_config.bagel_model(LLM, VIT, VAE, BAGEL)
    config.model.compute_dtype = "bfloat16"
    # "gather" avoids running both 7B experts on every token (2x FLOPs).
    # NOTE: which routing is faster on TPU or GPU is not measured yet (benchmarks/mot_routing.py).
    config.model.mot_routing = "gather"
    # Keep one residual per layer and recompute the rest in the backward pass: the tiny Shapes step
    # needs 670 MiB of XLA scratch this way against 2,207 MiB storing everything (BENCHMARKS.md).
    # NOTE: the memory of a 7B step is not measured yet.
    config.model.remat = "layer"
    config.data = data_config.default_config()
    config.train = train_config.default_config()
    config.train.lr = 2e-5
    config.mesh = train_config.default_mesh()
    config.sample = rollout_config.default_config()
    # BAGEL's interleaved-inference sampler settings.
    config.sample.num_steps = 50
    config.sample.timestep_shift = 3.0
    config.sample.cfg_text_scale = 3.0
    config.sample.cfg_img_scale = 1.5
    config.sample.cfg_interval = (0.4, 1.0)
    config.sample.cfg_renorm_type = "global"
    config.sample.cfg_renorm_min = 0.0
    return config
