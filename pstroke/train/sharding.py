"""The device mesh and the shardings of parameters, optimiser state and batches."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from pstroke.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the leading (row) dimension of every batch field


def mesh_shape(mesh_config: ml_collections.ConfigDict, device_count: int) -> tuple[int, int, int]:
    """Resolve the ('data', 'fsdp', 'tensor') sizes, where one size of -1 takes the remaining devices.

    Raises:
      UserError: the sizes do not multiply to `device_count`.
    """
    sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
    fill = [axis for axis, size in zip(MESH_AXES, sizes) if size == -1]
    fixed = 1
    for size in sizes:
        fixed *= size if size != -1 else 1
    if len(fill) > 1 or any(size == 0 or size < -1 for size in sizes):
        raise UserError(f"invalid mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive, with at most one -1")
    if fill:
        if device_count % fixed:
            raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} needs a multiple of {fixed} devices but "
                            f"{device_count} are available; set --config.mesh.* so the sizes divide {device_count}")
        sizes[MESH_AXES.index(fill[0])] = device_count // fixed
    elif fixed != device_count:
        raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} has {fixed} devices but {device_count} are "
                        f"available; set --config.mesh.* so the sizes multiply to {device_count}, "
                        f"e.g. --config.mesh.data=-1")
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Build the ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(mesh_config, len(devices))
    # Auto axes: XLA propagates shardings from the explicit in/out shardings and the model's
    # logical constraints, as Flax Linen's partitioning helpers expect.
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def axis_rules(train_config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
    """Return the logical-axis rules as the tuple of (logical name, mesh axes) pairs Flax expects."""
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
                 for name, axes in train_config.logical_axis_rules)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of every batch field: rows over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def tree_shardings(abstract_tree: Any, mesh: jax.sharding.Mesh, rules) -> Any:
    """Map a tree of (possibly logically partitioned) abstract values to NamedShardings.

    Leaves boxed with `nn.LogicallyPartitioned` get their logical names translated by `rules`; all
    other leaves (step counters, optimiser scalars, RNG keys) are replicated.
    """
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)
