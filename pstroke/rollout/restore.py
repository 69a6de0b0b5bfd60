"""Load the parameters of a trained workdir for sampling.

A training workdir contains `config.json` (the resolved config) and Orbax checkpoints under
`checkpoints/<step>` written by `pstroke.train.checkpoint.Checkpointer`. Sampling restores the
latest step onto one device, with the train state's structure rebuilt from the sampling config,
and returns the EMA parameters when the run kept them, else the raw parameters.
"""

import json
import logging
import pathlib
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

from pstroke.errors import UserError

log = logging.getLogger(__name__)


def _differences(saved: Any, current: Any, prefix: str) -> list[str]:
    """List the dotted keys whose values differ between two JSON trees."""
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current)):
            found += _differences(saved.get(key), current.get(key), f"{prefix}.{key}")
        return found
    if isinstance(saved, list) and isinstance(current, list):
        saved, current = tuple(saved), tuple(current)
    return [] if saved == current else [prefix]


def _config_hint(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> str:
    """Name the model config keys that differ from the workdir's `config.json`, if it exists."""
    saved_file = workdir / "config.json"
    if not saved_file.is_file():
        return ""
    saved = json.loads(saved_file.read_text()).get("model")
    current = json.loads(config.to_json_best_effort()).get("model")
    changed = _differences(saved, current, "model")
    return f"; model keys that differ from {saved_file}: {', '.join(changed)}" if changed else ""


def check_variant(workdir: pathlib.Path, config: ml_collections.ConfigDict, flag: str = "--workdir",
                  other_fix: str = "") -> None:
    """Raise UserError if the workdir's `config.json` records a `variant` other than `config.variant`.

    `flag` names the command-line flag that gave `workdir`, and `other_fix` (if any) is appended to
    the message as one more fix.

    The variant sets the prompt format and the number of rounds, so sampling a checkpoint with the
    other variant runs without error but gives wrong results. Workdirs whose `config.json` is missing,
    unreadable or has no `variant` key pass, and so does a config without one.
    """
    saved_file = workdir / "config.json"
    try:
        saved = json.loads(saved_file.read_text()).get("variant")
    except (OSError, ValueError, AttributeError):
        return
    current = config.get("variant")
    if saved is None or current is None or saved == current:
        return
    raise UserError(f"{flag} {str(workdir)!r} was trained with config variant {saved!r} (in {saved_file}), "
                    f"but --config gives variant {current!r}; {variant_fix(saved)}, or pass a {flag} trained "
                    f"with variant {current!r}{other_fix}")


def variant_fix(saved: str) -> str:
    """Return the advice that makes --config select the variant `saved`."""
    if not saved:
        return "pass --config without a ':VARIANT' suffix"
    return f"pass --config with ':{saved}' (e.g. --config=configs/shapes_tiny.py:{saved})"


def _saved_shapes(directory: pathlib.Path, step: int) -> dict[str, Any]:
    """Return the saved train state's metadata tree (leaves have `.shape`) without reading arrays."""
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    manager = ocp.CheckpointManager(directory, item_names=tuple(handlers), item_handlers=handlers)
    try:
        return manager.item_metadata(step)["state"]
    finally:
        manager.close()


def check_param_shapes(saved_state: dict[str, Any], expected_params: Any, workdir: pathlib.Path,
                       config: ml_collections.ConfigDict) -> None:
    """Raise UserError unless the checkpoint's parameters have the shapes `config` gives.

    The message names the first parameter that differs and the model config keys that differ
    from the workdir's `config.json`.
    """
    saved = {jax.tree_util.keystr(path): tuple(leaf.shape)
             for path, leaf in jax.tree_util.tree_flatten_with_path(saved_state["params"])[0]}
    expected = {jax.tree_util.keystr(path): tuple(leaf.shape)
                for path, leaf in jax.tree_util.tree_flatten_with_path(expected_params)[0]}
    if saved == expected:
        return

    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        first = f"parameter {(missing or extra)[0]} is {'missing from' if missing else 'only in'} the checkpoint"
    else:
        name = next(key for key in sorted(expected) if saved[key] != expected[key])
        first = f"parameter {name} has shape {saved[name]} in the checkpoint but {expected[name]} here"
    raise UserError(f"the checkpoint in {str(workdir)!r} was trained with a different config: {first}"
                    f"{_config_hint(workdir, config)}; pass the config the workdir was trained with")


def restore_params(config: ml_collections.ConfigDict, workdir: str, same_variant: bool = True) -> tuple[Any, int]:
    """Restore the latest checkpoint of `workdir` and return (parameters, step).

    With `same_variant`, the variant recorded in the workdir's `config.json` must equal `config.variant`.
    Passing False suits starting a new run from the parameters, e.g. a process run from a baseline one.

    Raises:
      UserError: the workdir has no checkpoint, or it was trained with a different model config or
        (with `same_variant`) a different variant.
    """
    from pstroke.train import checkpoint as checkpoint_lib
    from pstroke.train import optim
    from pstroke.train import sharding as sharding_lib
    from pstroke.train import state as state_lib
    from pstroke.train.loop import make_param_init

    path = pathlib.Path(workdir).expanduser()
    directory = path.absolute() / "checkpoints"
    if not directory.is_dir() or not any(child.name.isdigit() for child in directory.iterdir()):
        raise UserError(f"no checkpoint in workdir {workdir!r} (expected {directory}/<step>); pass the "
                        "--workdir of a training run, e.g. the one `python -m pstroke.train` wrote")
    if same_variant:
        check_variant(path, config)

    checkpointer = checkpoint_lib.Checkpointer(directory, every=1, keep=None, use_async=False)
    try:
        step = checkpointer.latest_step()
        saved_state = _saved_shapes(directory, step)
        init_params = make_param_init(config)
        check_param_shapes(saved_state, nn.unbox(jax.eval_shape(init_params, jax.random.PRNGKey(0))), path, config)

        one_device = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})
        mesh = sharding_lib.make_mesh(one_device, jax.devices()[:1])
        use_ema = bool(jax.tree_util.tree_leaves(saved_state.get("ema_params")))
        abstract, _ = state_lib.state_shardings(init_params, optim.make_optimizer(config.train), use_ema,
                                                config.train.seed, mesh, sharding_lib.axis_rules(config.train))
        state, _ = checkpointer.restore(step, abstract)
    finally:
        checkpointer.close()
    log.info("restored step %d from %s", step, directory)
    params = state.ema_params if state.ema_params is not None else state.params
    return params, step
