"""One jitted train step: objective inputs, forward, losses, gradients, optimiser and EMA update."""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pstroke.train import objective, optim
from pstroke.train import sharding as sharding_lib
from pstroke.train.state import TrainState

# losses(outputs, batch) -> (loss, metrics), where metrics contains at least the scalars "ce" and "mse".
LossFn = Callable[[dict, dict], tuple[jax.Array, dict]]


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: nn.Module, losses: LossFn,
               optimizer: optax.GradientTransformation, train_config: ml_collections.ConfigDict
               ) -> tuple[TrainState, dict]:
    """Take one optimiser step on `batch` and return the new state with float32 scalar metrics.

    The loss is train_config.ce_weight * CE + MSE, both token-weighted means over the global
    batch. Metrics also carry the model's per-stage losses, the learning rate, and the global
    norms of the gradient, of the parameters after the update and of the update itself.
    """
    batch = objective.prepare_batch(batch, rng, train_config)

    def loss_fn(params):
        outputs = model.apply({"params": params}, batch)
        _, metrics = losses(outputs, batch)
        loss = train_config.ce_weight * metrics["ce"] + metrics["mse"]
        return loss.astype(jnp.float32), metrics

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    ema_params = state.ema_params
    if ema_params is not None:
        applied = optimizer.has_updated(opt_state) if isinstance(optimizer, optax.MultiSteps) else True
        step_size = jnp.where(applied, 1.0 - train_config.ema_decay, 0.0)
        ema_params = optax.incremental_update(params, ema_params, step_size)

    metrics = {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
    metrics.update(
        loss=loss,
        grad_norm=optax.tree.norm(grads),
        param_norm=optax.tree.norm(params),
        update_norm=optax.tree.norm(updates),
        tokens=jnp.sum(batch["sample_id"] > 0).astype(jnp.float32),
        learning_rate=optim.make_schedule(train_config)(state.step // train_config.grad_accum_steps),
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params)
    return new_state, metrics


def jit_train_step(model: nn.Module, losses: LossFn, optimizer: optax.GradientTransformation,
                   train_config: ml_collections.ConfigDict, state_shardings: TrainState,
                   mesh: jax.sharding.Mesh) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Compile `train_step` with explicit shardings; the input state is donated.

    Call the result inside `jax.set_mesh(mesh)` and `nn.logical_axis_rules(rules)` so that the
    model's logical activation constraints resolve to mesh axes.
    """
    step = functools.partial(train_step, model=model, losses=losses, optimizer=optimizer,
                             train_config=train_config)
    replicated = sharding_lib.replicated(mesh)
    return jax.jit(step, donate_argnums=0,
                   in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh), replicated),
                   out_shardings=(state_shardings, replicated))
