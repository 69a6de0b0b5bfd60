"""The config shared by the Shapes-world config files; each file picks the model size."""

import ml_collections

from pstroke.data import config as data_config
from pstroke.model import config as model_config
from pstroke.rollout import config as rollout_config
from pstroke.train import config as train_config
from pstroke.world import config as world_config

VARIANTS = ("process", "baseline")


def shapes_config(variant: str, model: ml_collections.ConfigDict, canvas: int = 32) -> ml_collections.ConfigDict:
    """Return a full Shapes-world config around `model`.

    Variant "process" trains on process-driven trajectories; "baseline" trains on the same samples in
    the single-step format (prompt -> final image only).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}: use 'process' or 'baseline'")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.world = world_config.default_config(canvas=canvas)
    config.model = model
    config.data = data_config.default_config()
    config.train = train_config.default_config()
    config.mesh = train_config.default_mesh()
    config.sample = rollout_config.default_config()
    if variant == "baseline":
        # The single-step model reads the bare prompt, draws one image and is scored on it.
        config.data.t2i_fraction = 1.0
        config.sample.max_rounds = 1
        config.sample.prompt_format = "single_step"
    return config
