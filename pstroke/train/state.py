"""The train state and its sharded initialisation."""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pstroke.train import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
    """Everything one step reads and writes; a checkpoint stores all of it.

    step: [] int32, train steps taken (micro-batches when gradients are accumulated).
    params: float32 parameter tree of the model.
    opt_state: optimiser state (AdamW moments, schedule count, accumulators).
    ema_params: float32 exponential moving average of `params`, or None when train.ema_decay is 0.
    rng: [2] uint32 base key; step n draws with jax.random.fold_in(rng, n).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array


def _boxed_state(init_params: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
                 use_ema: bool, seed: int) -> TrainState:
    """Create a state whose parameter-shaped leaves keep their `nn.LogicallyPartitioned` boxes."""
    rng = jax.random.PRNGKey(seed)
    params_rng, state_rng = jax.random.split(rng)
    params = init_params(params_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      ema_params=params if use_ema else None, rng=state_rng)


def state_shardings(init_params: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
                    use_ema: bool, seed: int, mesh: jax.sharding.Mesh, rules) -> tuple[TrainState, TrainState]:
    """Return (abstract state, shardings): ShapeDtypeStructs of the unboxed state and a matching
    tree of NamedShardings from the parameters' logical axis names and `rules`."""
    boxed = jax.eval_shape(lambda: _boxed_state(init_params, optimizer, use_ema, seed))
    shardings = sharding_lib.tree_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda value, sharding: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding),
        _strip_boxes(boxed), shardings)
    return abstract, shardings


def _strip_boxes(tree: Any) -> Any:
    """Replace each `nn.Partitioned` box by its value without adding a sharding constraint
    (`nn.unbox` adds one when a mesh is active, which abstract values cannot take)."""
    return jax.tree.map(lambda leaf: leaf.unbox(apply_constraint=False) if isinstance(leaf, nn.Partitioned) else leaf,
                        tree, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))


def init_state(init_params: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
               use_ema: bool, seed: int, mesh: jax.sharding.Mesh, rules) -> TrainState:
    """Initialise the state directly in its sharded layout: no device ever stores a full copy of a
    sharded parameter.

    `init_params(rng)` returns the model's parameter tree with logical partitioning boxes.
    """
    _, shardings = state_shardings(init_params, optimizer, use_ema, seed, mesh, rules)

    def create() -> TrainState:
        return nn.unbox(_boxed_state(init_params, optimizer, use_ema, seed))

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return jax.jit(create, out_shardings=shardings)()
