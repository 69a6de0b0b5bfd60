"""Orbax checkpoints of the train state and the data-iterator state, under <workdir>/checkpoints."""

import logging
import pathlib
from typing import Any

import orbax.checkpoint as ocp

from pstroke.errors import UserError

log = logging.getLogger(__name__)


class Checkpointer:
    """A `CheckpointManager` that saves every `every` steps, keeps the last `keep`, and restores
    onto any mesh (the abstract target state carries the shardings to restore into)."""

    def __init__(self, directory: pathlib.Path, every: int, keep: int, use_async: bool):
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every, max_to_keep=keep, enable_async_checkpointing=use_async,
            cleanup_tmp_directories=True)
        self.directory = directory
        self.manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self.manager.should_save(step)

    def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> None:
        """Start saving `state` and `data_state` as step `step`; the write finishes in the background
        when async saving is on."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
        self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore step `step` into the shapes, dtypes and shardings of `abstract_state`.

        Raises:
          UserError: the step is not in the directory, or its files cannot be read.
        """
        available = list(self.manager.all_steps())
        if step not in available:
            raise UserError(f"checkpoint step {step} not found in {self.directory} (available: {available or 'none'}); "
                            f"set --config.train.restore_step=-1 to resume from the latest")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"checkpoint step {step} in {self.directory} could not be restored "
                            f"({type(error).__name__}: {error}); delete that step folder to resume from an "
                            f"earlier one, or pass a new --workdir") from None
        return restored.state, restored.data

    def wait(self) -> None:
        """Block until every started save has been committed to disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
