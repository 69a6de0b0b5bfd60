"""Training settings: optimiser, schedule, losses, checkpoints, logging and the device mesh."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Return the train and mesh sections of a config."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.steps = 1000
    config.batch_size = 8  # global rows per step, split over the 'data' and 'fsdp' mesh axes

    # Optimiser: AdamW with BAGEL's betas; the learning rate follows `schedule`.
    config.lr = 1e-3
    config.warmup_steps = 100
    config.schedule = "cosine"  # "cosine" (warmup, then cosine decay to end_lr_factor * lr) or "constant"
    config.end_lr_factor = 0.0
    config.b1 = 0.9
    config.b2 = 0.95
    config.eps = 1e-15
    config.weight_decay = 0.0
    config.grad_clip = 1.0  # global-norm clipping; 0 turns it off
    config.grad_accum_steps = 1  # micro-batches per optimiser update (optax.MultiSteps)
    config.ema_decay = 0.0  # 0 keeps no EMA of the parameters; e.g. 0.999

    # Objective: loss = ce_weight * CE + MSE. Timesteps t = sigmoid(N(0, 1)), shifted by
    # t <- k t / (1 + (k - 1) t) with k = timestep_shift (1.0 leaves t unchanged).
    config.ce_weight = 1.0
    config.timestep_shift = 1.0

    # Classifier-free-guidance dropout: probability that a droppable item is hidden from the rest
    # of its sample and loses its loss weights for one step.
    config.drop_text_rate = 0.1  # prompt text (drop_group DROP_TEXT)
    config.drop_image_rate = 0.3  # context image (drop_group DROP_IMAGE)

    # Checkpoints and logging, in steps. Checkpoints go to <workdir>/checkpoints.
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.restore_step = -1  # -1 resumes from the latest checkpoint in the workdir, if any
    # A workdir whose latest parameters (its EMA when it kept one) start a run that has no checkpoint
    # of its own, e.g. a text-to-image model fine-tuned on process data. The optimiser, step and
    # data order start fresh; "" starts from random parameters.
    config.init_from = ""
    config.log_every = 10

    # Sharding: logical parameter and activation axis names to mesh axes. A logical name that is
    # not listed stays replicated.
    config.logical_axis_rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("vocab", "tensor"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("vit_mlp", "tensor"),
        ("vit_heads", "tensor"),
        ("layers", None),
        ("length", None),
        ("expert", None),
        ("head_dim", None),
    )
    return config


def default_mesh() -> ml_collections.ConfigDict:
    """Return the mesh section: sizes of the ('data', 'fsdp', 'tensor') axes; -1 takes the rest."""
    config = ml_collections.ConfigDict()
    config.data = -1
    config.fsdp = 1
    config.tensor = 1
    return config
