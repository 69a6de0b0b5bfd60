"""Training losses: next-token cross-entropy and rectified-flow velocity MSE, with per-stage metrics."""

import jax
import jax.numpy as jnp
import optax

from pstroke.batch import STAGES


def token_losses(outputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Return per-token float32 CE [B, T] and flow MSE [B, T] (unweighted).

    CE is the cross-entropy of `logits` against `ce_label`. MSE is the mean over the D channels of
    (velocity - (noise - latent))**2.
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"].astype(jnp.float32), batch["ce_label"])
    target = batch["noise"] - batch["latent"]
    mse = jnp.mean(jnp.square(outputs["velocity"].astype(jnp.float32) - target), axis=-1)
    return ce, mse


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Return sum(weights * values) / sum(weights), or 0 when every weight is 0."""
    total = jnp.sum(weights)
    return jnp.sum(weights * values) / jnp.maximum(total, 1e-8) * (total > 0)


def losses(outputs: dict, batch: dict, ce_weight_lambda: float = 1.0) -> tuple[jax.Array, dict]:
    """Return (loss, metrics) with loss = ce_weight_lambda * ce + mse.

    ce = sum(ce_weight * ce_token) / sum(ce_weight) and mse = sum(mse_weight * mse_token) /
    sum(mse_weight), over the whole (global) batch; with 0/1 weights these are means over the CE and
    MSE tokens. Metrics: `loss`, `ce`, `mse`, `ce_tokens`, `mse_tokens`, and `ce/<stage>`,
    `mse/<stage>` for every stage name of `pstroke.batch.STAGES` (0 where a stage has no tokens).
    """
    ce_token, mse_token = token_losses(outputs, batch)
    ce_weight = batch["ce_weight"].astype(jnp.float32)
    mse_weight = batch["mse_weight"].astype(jnp.float32)
    ce = weighted_mean(ce_token, ce_weight)
    mse = weighted_mean(mse_token, mse_weight)
    loss = ce_weight_lambda * ce + mse

    metrics = {"loss": loss, "ce": ce, "mse": mse,
               "ce_tokens": jnp.sum(ce_weight > 0), "mse_tokens": jnp.sum(mse_weight > 0)}
    for index, name in enumerate(STAGES):
        in_stage = (batch["stage"] == index).astype(jnp.float32)
        metrics[f"ce/{name}"] = weighted_mean(ce_token, ce_weight * in_stage)
        metrics[f"mse/{name}"] = weighted_mean(mse_token, mse_weight * in_stage)
    return loss, metrics
