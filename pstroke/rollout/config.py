"""Sampling settings of the interleaved rollout."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Return the sample section of a config."""
    config = ml_collections.ConfigDict()
    config.max_rounds = 8
    config.num_steps = 25
    config.timestep_shift = 1.0
    config.cfg_text_scale = 3.0
    config.cfg_img_scale = 1.0
    config.cfg_interval = (0.0, 1.0)
    config.cfg_renorm_type = "global"
    config.cfg_renorm_min = 0.0
    config.temperature = 0.0  # 0 is greedy
    return config
