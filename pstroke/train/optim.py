"""The optimiser: AdamW behind global-norm clipping, a warmup schedule, optional accumulation."""

import jax
import ml_collections
import optax

from pstroke.errors import UserError


def make_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
    """Learning rate per optimiser update: linear warmup from 0, then cosine decay or constant.

    Raises:
      UserError: `schedule` is neither "cosine" nor "constant".
    """
    peak, warmup = train_config.lr, train_config.warmup_steps
    updates = max(train_config.steps // train_config.grad_accum_steps, warmup + 1)
    if train_config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=updates,
            end_value=peak * train_config.end_lr_factor)
    if train_config.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
    raise UserError(f"invalid train.schedule {train_config.schedule!r}: use 'cosine' or 'constant'")


def _decay_mask(params):
    """Apply weight decay to matrices only, never to norm scales or biases."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Build clip -> AdamW(schedule), wrapped in `optax.MultiSteps` when grad_accum_steps > 1.

    Raises:
      UserError: grad_accum_steps < 1, or an invalid schedule.
    """
    if train_config.grad_accum_steps < 1:
        raise UserError(f"invalid train.grad_accum_steps {train_config.grad_accum_steps}: use 1 or more")
    adamw = optax.adamw(make_schedule(train_config), b1=train_config.b1, b2=train_config.b2,
                        eps=train_config.eps, weight_decay=train_config.weight_decay, mask=_decay_mask)
    steps = [optax.clip_by_global_norm(train_config.grad_clip)] if train_config.grad_clip > 0 else []
    optimizer = optax.chain(*steps, adamw)
    if train_config.grad_accum_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=train_config.grad_accum_steps)
    return optimizer
