"""Training settings: optimiser, schedule, losses, checkpoints, logging and the device mesh."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Return the train and mesh sections of a config."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.steps = 1000
    config.batch_size = 8
    config.lr = 1e-3
    config.warmup_steps = 100
    config.schedule = "cosine"  # "cosine" or "constant"
    config.ce_weight = 1.0
    return config


def default_mesh() -> ml_collections.ConfigDict:
    """Return the mesh section: sizes of the ('data', 'fsdp', 'tensor') axes; -1 takes the rest."""
    config = ml_collections.ConfigDict()
    config.data = -1
    config.fsdp = 1
    config.tensor = 1
    return config
