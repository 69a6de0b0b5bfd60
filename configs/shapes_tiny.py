"""Tiny Shapes-world config: the CPU default that trains from scratch in minutes.

Usage: --config=configs/shapes_tiny.py[:variant], variant "process" (default) or "baseline".
"""

import ml_collections

from pstroke.model import config as model_config
from pstroke.shapes_config import shapes_config


def get_config(variant: str = "process") -> ml_collections.ConfigDict:
    return shapes_config(variant, model_config.shapes_model(hidden=128, layers=4, heads=4, kv_heads=2))
