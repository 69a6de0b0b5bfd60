"""Data settings: trajectory subsets, sequence budget and the input pipeline."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Return the data section of a config."""
    config = ml_collections.ConfigDict()
    config.source = "shapes"  # "shapes" (trajectories of the Shapes world) or "synthetic" (random batches)
    config.dir = ""  # dataset folder written by `python -m pstroke.build_data`; "" builds in memory
    config.version = "1.0.0"  # dataset version to read from `dir`
    config.seq_len = 1024  # tokens per packed row
    config.seed = 0

    # Samples per split. "heldout" uses the world's held-out compositions.
    config.num_train = 4000
    config.num_validation = 200
    config.num_heldout = 200

    # Mixture of the three trajectory subsets (relative weights). The defaults follow the training
    # data of Zhang et al. 2026 ("Think in Strokes, Not Pixels"): 32K multi-turn, 15.2K
    # conflict-critique and 15K alignment-critique samples.
    config.multi_turn_weight = 32.0
    config.conflict_weight = 15.2
    config.alignment_weight = 15.0
    config.conflict_wrong_fraction = 0.55  # 8.3K wrong of 15.2K conflict critiques
    config.alignment_mismatch_fraction = 0.67  # 10K mismatch of 15K alignment critiques
    config.augment_fraction = 0.3  # multi-turn trajectories with one non-additive step
    config.max_images = 5  # images per multi-turn trajectory, at most

    # Fraction of samples given in the single-step format (prompt -> final image); 1.0 trains
    # the text-to-image baseline, 0.0 the process-driven model only.
    config.t2i_fraction = 0.0

    config.num_packing_bins = 4  # rows filled at once by first-fit packing
    # grain worker processes; 0 reads in the main process.
    # NOTE: grain's workers read absl flags, so worker_count > 0 works only under absl.app (as in
    # pstroke's commands), not in a plain script or notebook.
    config.worker_count = 0
    return config
