"""Tiny Shapes-world config: the CPU default, a 2.1 M-parameter model on 32 px images.

A step takes about 4 s on a 2-core CPU, so a few hundred steps run in under an hour. Shapes
that the judge accepts need many more steps than that (BENCHMARKS.md, "ShapesGenEval").

Usage: --config=configs/shapes_tiny.py[:variant], variant "process" (default) or "baseline".
"""

import ml_collections

from pstroke.model import config as model_config
from pstroke.shapes_config import shapes_config


def get_config(variant: str = "process") -> ml_collections.ConfigDict:
    return shapes_config(variant, model_config.shapes_model(hidden=128, layers=4, heads=4, kv_heads=2))
