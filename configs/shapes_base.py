"""Larger Shapes-world config: same pipeline as shapes_tiny with a wider, deeper model.

Usage: --config=configs/shapes_base.py (variants: "process" (default) or "baseline").
"""

import ml_collections

from pstroke.data import config as data_config
from pstroke.model import config as model_config
from pstroke.rollout import config as rollout_config
from pstroke.train import config as train_config
from pstroke.world import config as world_config


def get_config(variant: str = "process") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.world = world_config.default_config(canvas=32)
    config.model = model_config.shapes_model(hidden=384, layers=8, heads=6, kv_heads=2)
    config.data = data_config.default_config()
    config.train = train_config.default_config()
    config.mesh = train_config.default_mesh()
    config.sample = rollout_config.default_config()

    # The baseline sees the same samples in the single-step format (prompt -> final image only).
    if variant == "baseline":
        config.data.t2i_fraction = 1.0
    elif variant != "process":
        raise ValueError(f"unknown config variant {variant!r}: use 'process' or 'baseline'")
    return config
