"""Data settings: trajectory subsets, sequence budget and the input pipeline."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Return the data section of a config."""
    config = ml_collections.ConfigDict()
    config.dir = ""  # dataset folder written by `python -m pstroke.build_data`; "" builds in memory
    config.seq_len = 1024  # tokens per packed row
    config.seed = 0
    return config
