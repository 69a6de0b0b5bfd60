"""The training loop: workdir, mesh, data, state (fresh or resumed), then steps with logging and checkpoints."""

import dataclasses
import json
import logging
import math
import pathlib
import signal
import subprocess
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pstroke import batch as batch_format
from pstroke.cli_output import check_output_folder, count_noun
from pstroke.errors import UserError
from pstroke.rollout.restore import variant_fix
from pstroke.train import checkpoint as checkpoint_lib
from pstroke.train import optim, synthetic
from pstroke.train import sharding as sharding_lib
from pstroke.train import state as state_lib
from pstroke.train import step as step_lib
from pstroke.train.metrics_writer import MetricsWriter, Progress

log = logging.getLogger(__name__)

# Metrics checked for NaN and inf after every step, in the order they are reported.
FINITE_METRICS = ("loss", "ce", "mse", "grad_norm", "update_norm", "param_norm")


class TrainingDiverged(UserError):
    """A NaN or inf metric stopped training; the last checkpoint was saved before that step."""


class StopRequested(Exception):
    """SIGTERM or Ctrl-C stopped `train(..., raise_on_stop=True)` at `step` of `steps`.

    The checkpoint of `step` is written before the caller sees the exception, also when `step` is the
    last step. A stop before the first step of a new run has no step to save.
    """

    def __init__(self, signal_name: str, step: int, steps: int):
        super().__init__(f"{signal_name} received at step {step} of {steps}")
        self.signal_name = signal_name
        self.step = step
        self.steps = steps


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, reject_finished: bool = False) -> pathlib.Path:
    """Create `workdir` and write the resolved config and the git revision into it (process 0).

    Raises:
      UserError: the path or a parent is a file, the folder cannot be created or written, it
        contains checkpoints of another model config or variant, or (with `reject_finished`) its
        checkpoint is already at train.steps or later.
    """
    path = pathlib.Path(workdir).expanduser().absolute()
    _check_same_model(path, config)
    if reject_finished:
        _check_steps_left(path, config.train)
    check_output_folder(path, "--workdir")
    try:
        if jax.process_index() == 0:
            (path / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
            (path / "config.txt").write_text(str(config))
            (path / "git_revision.txt").write_text(_git_revision() + "\n")
    except OSError as error:
        raise UserError(f"workdir {str(path)!r} is not writable ({error.strerror or error}); "
                        f"pass a --workdir you can write to") from None
    return path


# Model settings that leave the parameter tree unchanged, so a run may resume with other values.
RESUMABLE_MODEL_KEYS = frozenset({"compute_dtype", "mot_routing", "remat"})


def _check_same_model(path: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Raise a UserError if `path` contains checkpoints of a model config other than `config.model`,
    or of a variant other than `config.variant`.

    This runs before the new config.json is written, so a wrong --config never overwrites the record
    of the run that made the checkpoints. A record without a variant passes the variant check.
    """
    saved_file = path / "config.json"
    checkpoints = path / "checkpoints"
    if not saved_file.is_file() or not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        return
    try:
        record = json.loads(saved_file.read_text())
    except (OSError, ValueError):
        return  # an unreadable record cannot be compared; the restore checks shapes itself
    if not isinstance(record, dict):
        return

    saved_variant = record.get("variant")
    current_variant = config.get("variant")
    if saved_variant is not None and current_variant is not None and saved_variant != current_variant:
        raise UserError(f"workdir {str(path)!r} contains checkpoints of config variant {saved_variant!r}, but "
                        f"--config gives variant {current_variant!r}; {variant_fix(saved_variant)}, or pass a "
                        f"new --workdir")

    saved = record.get("model", {})
    current = json.loads(config.model.to_json_best_effort())
    keys = (set(saved) | set(current)) - RESUMABLE_MODEL_KEYS
    differing = sorted(key for key in keys if saved.get(key) != current.get(key))
    if differing:
        raise UserError(f"workdir {str(path)!r} contains checkpoints of a different model config (differs in "
                        f"model.{', model.'.join(differing)}); pass the config it was trained with, or a new --workdir")


def latest_saved_step(path: pathlib.Path) -> int | None:
    """Return the largest `<step>` folder name in `path/checkpoints`, or None without one."""
    folder = path / "checkpoints"
    if not folder.is_dir():
        return None
    return max((int(child.name) for child in folder.iterdir() if child.name.isdigit()), default=None)


def _check_steps_left(path: pathlib.Path, train_config: ml_collections.ConfigDict) -> None:
    """Raise a UserError if the step a run in `path` resumes from is already train.steps or later."""
    if train_config.restore_step >= 0:
        start, status = train_config.restore_step, f"resumes from step {train_config.restore_step} (train.restore_step)"
    else:
        start = latest_saved_step(path)
        status = f"is already at step {start}"
    if start is not None and start >= train_config.steps:
        raise UserError(f"workdir {str(path)!r} {status} >= train.steps {train_config.steps}; raise "
                        f"--config.train.steps to continue")


def _git_revision() -> str:
    """Return the commit of the pstroke checkout, with "-dirty" for local changes, or "unknown"."""
    source = pathlib.Path(__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=source,
                                  capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision or "unknown"


def make_data_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Iterator[dict]:
    """Return the training batch iterator named by `config.data.source` ("synthetic" or "shapes").

    Both kinds yield global batches sharded over ('data', 'fsdp') and offer `get_state`/`set_state`.
    """
    source = config.data.source
    if source == "synthetic":
        layout = synthetic.layout_from_config(config)
        return synthetic.SyntheticIterator(layout, config.data.seed, sharding_lib.batch_sharding(mesh))
    if source == "shapes":
        from pstroke.data.pipeline import make_iterator

        return make_iterator(config, "train", mesh)
    raise UserError(f"invalid data.source {source!r}: use 'synthetic' or 'shapes'")


def example_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one global batch as the model receives it (with `noise` and `key_visible`)."""
    model = config.model
    latent_dim = model.latent_patch_size ** 2 * model.latent_channels
    vit_dim = 3 * model.vit.patch_size ** 2 if model.vit.enabled else 0
    host = batch_format.empty_batch(config.train.batch_size, config.data.seq_len, latent_dim, vit_dim)
    host["noise"] = host["latent"]
    host["key_visible"] = np.ones(host["sample_id"].shape, bool)
    return {name: jax.ShapeDtypeStruct(value.shape, value.dtype) for name, value in host.items()}


def make_param_init(config: ml_collections.ConfigDict):
    """Return `init_params(rng)`: the model's boxed float32 parameters for batches of this config."""
    from pstroke.model.unified import init_params

    shapes = example_batch(config)

    def init(rng: jax.Array) -> Any:
        batch = {name: jnp.zeros(shape.shape, shape.dtype) for name, shape in shapes.items()}
        return init_params(config, rng, batch)

    return init


def check_batch_size(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """Raise UserError unless the batch rows split evenly over the ('data', 'fsdp') devices."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.train.batch_size % shards:
        raise UserError(f"train.batch_size {config.train.batch_size} does not split over data x fsdp = {shards} "
                        f"devices; use a multiple of {shards}")


@dataclasses.dataclass(frozen=True)
class Parts:
    """The compiled pieces of one training set-up on one mesh.

    rules: logical-axis rules; call `step_fn` inside `jax.set_mesh(mesh)` and
      `nn.logical_axis_rules(rules)`.
    abstract_state: ShapeDtypeStructs (with shardings) of the state, the target of a restore.
    shardings: NamedSharding per state leaf.
    init_state: creates a fresh state directly in its sharded layout.
    step_fn: the jitted `train_step(state, batch, rng) -> (state, metrics)`, state donated.
    """

    mesh: jax.sharding.Mesh
    rules: tuple
    abstract_state: state_lib.TrainState
    shardings: state_lib.TrainState
    init_state: Callable[[], state_lib.TrainState]
    step_fn: Callable


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Parts:
    """Build the model, optimiser, state layout and jitted step of `config` on `mesh`."""
    from pstroke.model.losses import losses as model_losses
    from pstroke.model.unified import UnifiedModel

    train_config = config.train
    rules = sharding_lib.axis_rules(train_config)
    model = UnifiedModel(config.model)
    optimizer = optim.make_optimizer(train_config)
    init_params = make_param_init(config)
    use_ema = train_config.ema_decay > 0
    abstract, shardings = state_lib.state_shardings(init_params, optimizer, use_ema, train_config.seed, mesh, rules)

    def init_state() -> state_lib.TrainState:
        return state_lib.init_state(init_params, optimizer, use_ema, train_config.seed, mesh, rules)

    step_fn = step_lib.jit_train_step(model, model_losses, optimizer, train_config, shardings, mesh)
    return Parts(mesh=mesh, rules=rules, abstract_state=abstract, shardings=shardings, init_state=init_state,
                 step_fn=step_fn)


class _StopFlag:
    """Set by SIGTERM or the first SIGINT (Ctrl-C); the loop then saves a checkpoint and returns.

    The first SIGINT puts back the previous SIGINT handler, so a second Ctrl-C interrupts at once
    (Python's default handler raises KeyboardInterrupt).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None  # e.g. "SIGTERM", once requested
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        try:
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: no handlers, a signal acts as it would without the loop
            self.previous = {}
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        # Logged at once, because the save waits for the step in progress, which can take many seconds.
        if signum == signal.SIGINT:
            signal.signal(signum, self.previous.pop(signum))
            log.warning("Ctrl-C received: saving after the current step; press Ctrl-C again to quit without saving")
        else:
            log.warning("%s received: saving after the current step", self.signal_name)

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def _fetch(metrics: dict) -> dict[str, float]:
    """Copy device metrics to host floats (blocks until their step has finished)."""
    return {name: float(value) for name, value in jax.device_get(metrics).items()}


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    for name in FINITE_METRICS + tuple(sorted(metrics)):
        if name in metrics and not math.isfinite(metrics[name]):
            raise TrainingDiverged(f"training stopped at step {step}: metric {name!r} is {metrics[name]}; "
                                   f"the last checkpoint before it is kept. Lower train.lr or raise "
                                   f"train.warmup_steps and resume")


def train(config: ml_collections.ConfigDict, workdir: str, raise_on_stop: bool = False,
          reject_finished: bool = False) -> dict[str, float]:
    """Train for config.train.steps steps in `workdir`, resuming from its latest checkpoint.

    Returns the host metrics of the last step. SIGTERM or Ctrl-C during the steps saves the step
    reached and returns early, or raises StopRequested with `raise_on_stop`, even when the stop
    came during the last step. Raises UserError for a bad workdir, mesh, batch size, train.steps
    or checkpoint, and TrainingDiverged (a UserError) for a NaN or inf metric. A workdir already at
    train.steps or later raises UserError with `reject_finished`, and otherwise runs no step and
    returns an empty dict.
    """
    train_config = config.train
    if train_config.steps <= 0:
        raise UserError(f"invalid train.steps {train_config.steps}; pass a positive step count, e.g. "
                        "--config.train.steps=1000")
    log.info("[train 1/5] workdir %s", workdir)
    path = prepare_workdir(workdir, config, reject_finished)

    log.info("[train 2/5] mesh over %s", count_noun(jax.device_count(), "device"))
    mesh = sharding_lib.make_mesh(config.mesh)
    check_batch_size(config, mesh)
    log.info("mesh %s", dict(mesh.shape))

    log.info("[train 3/5] data (%s)", config.data.source)
    data = make_data_iterator(config, mesh)

    log.info("[train 4/5] model, optimiser and state")
    parts = build(config, mesh)
    checkpointer = checkpoint_lib.Checkpointer(path / "checkpoints", train_config.checkpoint_every,
                                               train_config.keep_checkpoints, train_config.async_checkpoints)
    try:
        state = _restore_or_init(parts, checkpointer, data, train_config.restore_step)
        if train_config.init_from and int(jax.device_get(state.step)) == 0:
            state = _load_init_params(state, parts, config)

        with jax.set_mesh(mesh), nn.logical_axis_rules(parts.rules), _StopFlag() as stop:
            # Logged once the stop handlers are installed, so from here SIGTERM and Ctrl-C save a checkpoint.
            log.info("[train 5/5] training to step %d", train_config.steps)
            return _run_steps(state, parts.step_fn, data, checkpointer, path, train_config, stop, raise_on_stop)
    finally:
        checkpointer.wait()
        checkpointer.close()


def _restore_or_init(parts: Parts, checkpointer: checkpoint_lib.Checkpointer, data,
                     restore_step: int) -> state_lib.TrainState:
    """Restore `restore_step` (-1: the latest, if any) with the data-iterator state, else initialise."""
    step = restore_step if restore_step >= 0 else checkpointer.latest_step()
    if step is None:
        state = parts.init_state()
        log.info("initialised a new state (%s parameters)", f"{_count(state.params):,}")
        return state
    state, data_state = checkpointer.restore(step, parts.abstract_state)
    data.set_state(data_state)
    log.info("resumed from checkpoint step %d", step)
    return state


def _load_init_params(state: state_lib.TrainState, parts: Parts,
                      config: ml_collections.ConfigDict) -> state_lib.TrainState:
    """Replace the fresh parameters (and EMA) of `state` by those of `config.train.init_from`.

    Raises:
      UserError: the folder has no checkpoint, or its model differs from `config.model`.
    """
    from pstroke.rollout.restore import restore_params

    source = config.train.init_from
    try:
        params, source_step = restore_params(config, source, same_variant=False)
    except UserError as error:
        raise UserError(f"train.init_from {source!r}: {error}") from None
    params = jax.device_put(params, parts.shardings.params)
    ema = params if state.ema_params is not None else None
    log.info("initialised the parameters from %s (step %d); optimiser and step start fresh", source, source_step)
    return state.replace(params=params, ema_params=ema)


def _run_steps(state, step_fn, data, checkpointer, path, train_config, stop,
               raise_on_stop: bool = False) -> dict[str, float]:
    """Run steps until train.steps or SIGTERM, and raise StopRequested after a stop with `raise_on_stop`.

    Metrics are fetched one step late, so the host waits only for the step before the one just
    dispatched. Before a checkpoint it also waits for the current step, because only a state whose
    metrics are finite may be saved.
    """
    step = int(jax.device_get(state.step))
    writer = MetricsWriter(path, enabled=jax.process_index() == 0)
    progress = Progress(step, train_config.steps)
    fold_in = jax.jit(jax.random.fold_in)
    pending: tuple[int, dict] | None = None
    last: dict[str, float] = {}
    start_step = saved_step = step

    def report(pending_step: int, device_metrics: dict) -> dict[str, float]:
        metrics = _fetch(device_metrics)
        _check_finite(pending_step, metrics)
        progress.add_tokens(metrics["tokens"])
        if pending_step % train_config.log_every == 0 or pending_step == train_config.steps:
            writer.write(pending_step, metrics)
            log.info(progress.line(pending_step, metrics))
        return metrics

    try:
        while step < train_config.steps and not stop.requested:
            batch = next(data)
            rng = fold_in(state.rng, step)
            state, metrics = step_fn(state, batch, rng)
            step += 1

            if pending is not None:
                last = report(*pending)
            pending = (step, metrics)

            final = step == train_config.steps or stop.requested
            if final or checkpointer.should_save(step):
                last = report(*pending)
                pending = None
                checkpointer.save(step, state, data.get_state(), force=final)
                saved_step = step
        if pending is not None:
            last = report(*pending)
        if stop.requested:
            if saved_step != step:
                checkpointer.save(step, state, data.get_state(), force=True)
            if step == start_step:
                # No step ran in this call, so nothing new exists to save: the workdir keeps what it had.
                log.warning("%s received before the first step of this run: stopped at step %d of %d with "
                            "nothing new to save. Rerun to continue", stop.signal_name, step, train_config.steps)
            elif step < train_config.steps:
                log.warning("%s received: saved step %d of %d and stopped. Rerun to continue", stop.signal_name,
                            step, train_config.steps)
            else:
                log.warning("%s received after the last step: saved step %d, training is complete",
                            stop.signal_name, step)
            if raise_on_stop:
                raise StopRequested(stop.signal_name, step, train_config.steps)
    finally:
        writer.close()
    return last


def _count(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
