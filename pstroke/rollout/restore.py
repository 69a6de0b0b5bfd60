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

import jax
import ml_collections

from pstroke.errors import UserError

log = logging.getLogger(__name__)

MODEL_SECTIONS = ("model",)  # config sections that decide the parameter shapes


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


def check_saved_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Raise UserError when `workdir/config.json` has a different model section than `config`."""
    saved_file = workdir / "config.json"
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    current = json.loads(config.to_json_best_effort())
    for section in MODEL_SECTIONS:
        changed = _differences(saved.get(section), current.get(section), section)
        if changed:
            first = changed[0]
            raise UserError(
                f"the checkpoint in {str(workdir)!r} was trained with a different config: {first} is "
                f"{_lookup(saved, first)!r} in {saved_file.name} but {_lookup(current, first)!r} here "
                f"(model keys that differ: {len(changed)}); pass the config the workdir was trained with")


def _lookup(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def restore_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
    """Restore the latest checkpoint of `workdir` and return (parameters, step).

    Raises:
      UserError: the workdir has no checkpoint, or it was trained with a different model config.
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
    check_saved_config(path, config)

    one_device = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})
    mesh = sharding_lib.make_mesh(one_device, jax.devices()[:1])
    rules = sharding_lib.axis_rules(config.train)
    use_ema = config.train.ema_decay > 0
    abstract, _ = state_lib.state_shardings(make_param_init(config), optim.make_optimizer(config.train), use_ema,
                                            config.train.seed, mesh, rules)

    checkpointer = checkpoint_lib.Checkpointer(directory, every=1, keep=None, use_async=False)
    try:
        step = checkpointer.latest_step()
        state, _ = checkpointer.restore(step, abstract)
    finally:
        checkpointer.close()
    log.info("restored step %d from %s", step, directory)
    params = state.ema_params if state.ema_params is not None else state.params
    return params, step
