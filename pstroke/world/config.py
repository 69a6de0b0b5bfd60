"""Default settings of the Shapes world."""

import ml_collections


def default_config(canvas: int = 32) -> ml_collections.ConfigDict:
    """Return the Shapes-world section of a config: canvas size in pixels, vocabulary, seeds."""
    config = ml_collections.ConfigDict()
    config.canvas = canvas
    config.seed = 0
    return config
