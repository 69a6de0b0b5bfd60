"""Larger Shapes-world config: the shapes_tiny pipeline with a wider, deeper model.

Usage: --config=configs/shapes_base.py[:variant], variant "process" (default) or "baseline".
"""

import ml_collections

from pstroke.model import config as model_config
from pstroke.shapes_config import shapes_config


def get_config(variant: str = "process") -> ml_collections.ConfigDict:
    return shapes_config(variant, model_config.shapes_model(hidden=384, layers=8, heads=6, kv_heads=2))
