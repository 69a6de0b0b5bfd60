"""Per-step randomness of the objective: flow timesteps, noise and classifier-free-guidance dropout.

All functions are pure and traced inside the jitted train step. Random draws are made per
(row, split_id) with shape [B, T] and gathered by `split_id`, so every token of one split shares
its draw without any host-side bookkeeping.
"""

import jax
import jax.numpy as jnp

from pstroke import batch as batch_format


def shift_timestep(t: jax.Array, shift: float) -> jax.Array:
    """Apply the timestep shift t <- k t / (1 + (k - 1) t); k = 1 leaves t unchanged."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def _per_split(values: jax.Array, split_id: jax.Array) -> jax.Array:
    """Gather a [B, T] table of per-split draws at each token's split: out[b, i] = values[b, split_id[b, i]]."""
    return jnp.take_along_axis(values, split_id, axis=1)


def add_flow_inputs(batch: dict, rng: jax.Array, shift: float) -> dict:
    """Set `timestep` on the latent tokens of noise splits and add `noise` [B, T, D].

    Each noisy image draws s ~ N(0, 1) and t = shift_timestep(sigmoid(s)) (logit-normal time);
    every other token gets t = 0. The noise eps ~ N(0, I) has the shape of `latent`; the model
    forms x_t = (1 - t) x0 + t eps on latent tokens and predicts the velocity eps - x0.
    """
    time_rng, noise_rng = jax.random.split(rng)
    split_id = batch["split_id"]
    logits = jax.random.normal(time_rng, split_id.shape, jnp.float32)
    t = shift_timestep(jax.nn.sigmoid(_per_split(logits, split_id)), shift)
    noisy = (batch["split_mode"] == batch_format.MODE_NOISE) & (batch["kind"] == batch_format.KIND_LATENT)

    out = dict(batch)
    out["timestep"] = jnp.where(noisy, t, 0.0).astype(jnp.float32)
    out["noise"] = jax.random.normal(noise_rng, batch["latent"].shape, jnp.float32)
    return out


def apply_cfg_dropout(batch: dict, rng: jax.Array, text_rate: float, image_rate: float) -> dict:
    """Drop droppable splits for classifier-free guidance and add `key_visible` [B, T] (bool).

    A split whose `drop_group` is DROP_TEXT (rate `text_rate`) or DROP_IMAGE (rate `image_rate`)
    is dropped with that probability, independently per split. Its tokens get key_visible = False,
    which hides their keys from every other split (the mask in `pstroke.batch.attention_allowed`),
    and its CE and MSE weights are set to 0.
    """
    # NOTE: position ids are left as packed. BAGEL's data pipeline instead removes a dropped text
    # from the rope count (a dropped image still advances it by 1), which only the packer can do.
    split_id, group = batch["split_id"], batch["drop_group"]
    draw = _per_split(jax.random.uniform(rng, split_id.shape), split_id)
    rate = jnp.where(group == batch_format.DROP_TEXT, text_rate,
                     jnp.where(group == batch_format.DROP_IMAGE, image_rate, 0.0))
    dropped = draw < rate

    out = dict(batch)
    out["key_visible"] = ~dropped
    out["ce_weight"] = jnp.where(dropped, 0.0, batch["ce_weight"])
    out["mse_weight"] = jnp.where(dropped, 0.0, batch["mse_weight"])
    return out


def prepare_batch(batch: dict, rng: jax.Array, train_config) -> dict:
    """Add the per-step random inputs of the objective: CFG dropout, then timesteps and noise."""
    drop_rng, flow_rng = jax.random.split(rng)
    batch = apply_cfg_dropout(batch, drop_rng, train_config.drop_text_rate, train_config.drop_image_rate)
    return add_flow_inputs(batch, flow_rng, train_config.timestep_shift)
