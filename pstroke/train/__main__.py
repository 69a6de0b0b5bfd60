"""Command line: `python -m pstroke.train --config=configs/shapes_tiny.py --workdir=DIR [--config.a.b=v ...]`.

Rerunning the same command resumes from the latest checkpoint in DIR, and exits with status 2
once DIR has reached train.steps (raise --config.train.steps to continue). SIGTERM or a first
Ctrl-C saves the step reached and exits with status 1, or with 0 when that step is train.steps.
A Ctrl-C before the steps start, or a second one, quits at once without saving, with status 130.

On a multi-host TPU slice, pass --distributed on every host so `jax.distributed.initialize()`
runs before any device use.
"""

import logging
import sys
from typing import Sequence

import jax
from absl import flags

from pstroke.config import define_config_flag, run_cli
from pstroke.errors import UserError

_CONFIG = define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the resolved config.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() first (multi-host TPU or multi-process runs).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "With --distributed: host:port of process 0; TPU VMs find it themselves.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: index of this process.")

# Exit status after SIGTERM or Ctrl-C stopped training before train.steps, so that scripts can tell
# a stop from success (0) and from invalid input (2). pstroke.demo uses the same status.
STOPPED_EXIT_CODE = 1
# Exit status after a Ctrl-C that quits without saving, the shell's convention for a process ended by SIGINT.
INTERRUPTED_EXIT_CODE = 130


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; pass settings as --config.a.b=value")
    if not _WORKDIR.value:
        raise UserError("missing --workdir: pass a folder for checkpoints and metrics, e.g. --workdir=runs/tiny")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO through absl
    if _DISTRIBUTED.value:
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)

    from pstroke.train.loop import StopRequested, train  # imported after initialize(): it touches devices

    # A rerun whose train.steps is not above the saved step would run no step, so it fails before
    # config.json is rewritten.
    try:
        train(_CONFIG.value, _WORKDIR.value, raise_on_stop=True, reject_finished=True)
    except StopRequested as stop:
        # The loop has logged "saved step N of M and stopped". A stop during the last step leaves
        # nothing to do, so it exits 0 and a restart script does not rerun a finished run.
        if stop.step < stop.steps:
            sys.exit(STOPPED_EXIT_CODE)
    except KeyboardInterrupt:
        # A Ctrl-C before the steps start, or a second one during them, raises KeyboardInterrupt.
        print("interrupted by Ctrl-C without saving the step in progress; rerun the same command to resume "
              "from the latest checkpoint", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)


if __name__ == "__main__":
    run_cli(main)
