"""End-to-end demo: get a tiny Shapes model, sample process-driven trajectories, score them.

    python -m pstroke.demo --workdir=runs/demo      (or `make demo`)

Stages, each announced in the log as `[demo k/5]` (the training loop's own stages read `[train k/5]`):

1. Workdir: create it and check that it is writable.
2. Model: restore the workdir's latest checkpoint. Without one, copy the pretrained demo model
   (`--pretrained_dir`, a training workdir) into the workdir and restore it. Without that too,
   train `--train_steps` steps from scratch with `pstroke.train.loop.train`. SIGTERM or Ctrl-C
   during training saves the step reached and ends the demo with exit status 1, and rerunning the
   same command continues training to `--train_steps` before it samples. A stop during the last
   step ends the demo the same way, and the rerun samples the finished model.
3. Prompts: a fixed selection from the ShapesGenEval benchmark file, every tag and held-out
   compositions included.
4. Sampling: one rollout per prompt and sample, written in GenEval's layout to `WORKDIR/samples`,
   each with `trajectory.html`, `strip.png`, `trace.json` and its round images.
5. Scoring: the exact evaluator on the samples (`WORKDIR/samples/results.json`), and on
   ground-truth renders of the same prompts (`WORKDIR/oracle`) as the reference row.

The workdir is a training workdir, so `python -m pstroke.train --workdir=WORKDIR` can continue
training the demo model and a later demo restores the newer checkpoint.
"""

import json
import logging
import os
import pathlib
import shutil
import sys
from typing import Sequence

import ml_collections
from absl import flags

from pstroke.cli_output import count_noun
from pstroke.config import define_config_flag, run_cli
from pstroke.errors import UserError
from pstroke.evaluate import evaluate, format_table
from pstroke.render_benchmark import render_benchmark
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl
from pstroke.world.prompts import TAGS

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "shapes_tiny.py"
DEFAULT_PRETRAINED = REPO / "pretrained" / "shapes_tiny"
# Chosen so that the training fallback keeps `make demo` within about 15 minutes on a 2-core CPU.
# There, with two other training runs sharing the cores, a step of configs/shapes_tiny.py took 6 to
# 10 s and the whole demo took 12 minutes. A model trained this briefly is weak.
DEFAULT_TRAIN_STEPS = 100
SPLITS = ("in_distribution", "heldout")
# Exit status after the training stage was stopped, so scripts can tell a stop from success and from
# invalid input (status 2).
STOPPED_EXIT_CODE = 1

CONFIG = define_config_flag(default=str(DEFAULT_CONFIG),
                            help_string="Config file of the demo model, e.g. configs/shapes_tiny.py:process.")
WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the model's checkpoints, the samples and the scores.")
NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 12, "Benchmark prompts to sample.")
SAMPLES_PER_PROMPT = flags.DEFINE_integer("samples_per_prompt", 1, "Rollouts (images) per prompt.")
TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", DEFAULT_TRAIN_STEPS,
    "Training steps when neither the workdir nor --pretrained_dir holds a checkpoint.")
PRETRAINED_DIR = flags.DEFINE_string(
    "pretrained_dir", str(DEFAULT_PRETRAINED),
    "Advanced: training workdir copied into --workdir when the workdir has no checkpoint; '' uses none.")

log = logging.getLogger("pstroke.demo")


# Written into the workdir when the demo starts training and removed once training reaches its
# step count. While it exists, a rerun continues training instead of sampling the checkpoint.
UNFINISHED_TRAINING_FILE = "demo_training_unfinished.json"


class TrainingStopped(Exception):
    """SIGTERM or Ctrl-C stopped the demo in its training stage, possibly during the last step."""


def latest_checkpoint_step(workdir: pathlib.Path) -> int | None:
    """Return the largest `<step>` folder name in `workdir/checkpoints`, or None without one."""
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        return None
    steps = [int(child.name) for child in folder.iterdir() if child.name.isdigit()]
    return max(steps, default=None)


def has_checkpoint(workdir: pathlib.Path) -> bool:
    """Return whether `workdir/checkpoints` contains at least one `<step>` folder."""
    return latest_checkpoint_step(workdir) is not None


def prepare_workdir(workdir: pathlib.Path) -> None:
    """Create `workdir` if needed.

    Raises:
      UserError: the folder cannot be created or is not writable.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create workdir {str(workdir)!r} ({error.strerror or error}); "
                        "pass a --workdir you can write to") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"workdir {str(workdir)!r} is not writable; pass a --workdir you can write to")


def copy_pretrained(source: pathlib.Path, workdir: pathlib.Path) -> None:
    """Copy the training workdir `source` (checkpoints and the files that record them) into `workdir`."""
    shutil.copytree(source / "checkpoints", workdir / "checkpoints", dirs_exist_ok=True)
    for name in ("config.json", "README.md", "metrics.jsonl", "git_revision.txt"):
        if (source / name).is_file():
            shutil.copy2(source / name, workdir / name)


def train_demo_model(config: ml_collections.ConfigDict, workdir: pathlib.Path, steps: int) -> None:
    """Train `config` in `workdir` up to step `steps`, resuming from its latest checkpoint, logging about
    20 times.

    Raises:
      TrainingStopped: SIGTERM or Ctrl-C arrived during training. The step reached is saved (unless
        the stop came before the first step). `UNFINISHED_TRAINING_FILE` stays in the workdir
        unless that step is `steps`.
    """
    from pstroke.train.loop import StopRequested, train

    config = ml_collections.ConfigDict(config.to_dict())
    config.train.steps = steps
    config.train.warmup_steps = min(config.train.warmup_steps, max(1, steps // 10))
    config.train.log_every = max(1, steps // 20)
    config.train.checkpoint_every = steps
    marker = workdir / UNFINISHED_TRAINING_FILE
    marker.write_text(json.dumps({"steps": steps}) + "\n")

    stop_signal = None
    try:
        train(config, str(workdir), raise_on_stop=True)
    except StopRequested as stop:
        stop_signal = stop.signal_name
    except KeyboardInterrupt:  # a Ctrl-C outside the training steps, or a second one, skips the save
        stop_signal = "SIGINT"

    reached = latest_checkpoint_step(workdir)
    if reached is None or reached < steps:
        saved = "no checkpoint was saved yet" if reached is None else f"the checkpoint of step {reached} is saved"
        raise TrainingStopped(f"training stopped at step {reached or 0} of {steps}, and {saved} in "
                              f"{workdir / 'checkpoints'}. Rerun the same command to continue training. The demo "
                              f"samples once training reaches step {steps}")
    marker.unlink()
    if stop_signal is not None:
        raise TrainingStopped(f"{stop_signal} received at the last training step. Training is complete and "
                              f"the checkpoint of step {reached} is saved in {workdir / 'checkpoints'}. Rerun the "
                              "same command to sample and score it")


def get_model(config: ml_collections.ConfigDict, workdir: pathlib.Path, pretrained: pathlib.Path | None,
              train_steps: int):
    """Return (parameters, step) from the workdir, the pretrained model (if any) or a training run.

    A training run of an earlier demo that stopped early continues up to `train_steps` first.

    Raises:
      TrainingStopped: see `train_demo_model`.
    """
    from pstroke.rollout.restore import check_variant, restore_params

    unfinished = (workdir / UNFINISHED_TRAINING_FILE).is_file()
    if has_checkpoint(workdir) and not unfinished:
        log.info("found a checkpoint in the workdir: restoring it")
        return restore_params(config, str(workdir))
    if pretrained is not None and has_checkpoint(pretrained) and not unfinished:
        check_variant(pretrained, config, flag="--pretrained_dir",
                      other_fix=" (--pretrained_dir='' trains one from scratch)")
        log.info("copying the pretrained demo model %s into the workdir", pretrained)
        copy_pretrained(pretrained, workdir)
        return restore_params(config, str(workdir))

    if train_steps < 1:
        raise UserError(f"--train_steps={train_steps}, but there is no finished checkpoint in {str(workdir)!r} "
                        f"or {str(pretrained)!r}; pass a positive step count")
    if unfinished:
        log.info("continuing the demo's training in the workdir from step %d to step %d",
                 latest_checkpoint_step(workdir) or 0, train_steps)
    else:
        source = f"no pretrained model at {pretrained}" if pretrained is not None else "--pretrained_dir=''"
        log.info("no checkpoint in the workdir and %s: training %d steps from scratch", source, train_steps)
    log.warning("a model trained for only %d steps is weak: expect scores far below the oracle row", train_steps)
    train_demo_model(config, workdir, train_steps)
    return restore_params(config, str(workdir))


def choose_prompts(rows: Sequence[dict], count: int) -> list[dict]:
    """Return `count` benchmark rows (fewer if `rows` runs out) in a fixed order over every tag and split.

    The order takes the next unused in-distribution prompt of each tag, then the next unused
    held-out prompt of each tag that has held-out prompts, and repeats. So the default 12 prompts
    are one in-distribution prompt per tag (7), one held-out prompt of each of the 4 tags with
    held-out compositions, and one more in-distribution prompt.
    """
    queues = {(tag, split): [row for row in rows if row["tag"] == tag and row["split"] == split]
              for tag in TAGS for split in SPLITS}
    chosen: list[dict] = []
    while len(chosen) < count and any(queues.values()):
        for split in SPLITS:
            for tag in TAGS:
                if queues[(tag, split)] and len(chosen) < count:
                    chosen.append(queues[(tag, split)].pop(0))
    return chosen


def select_prompts(rows: list[dict], per_tag: int) -> dict[int, dict]:
    """Return {benchmark index: metadata} of the first `per_tag` in-distribution and the first
    `per_tag` held-out prompts of every tag (a subset to render for quick evaluator checks)."""
    chosen: dict[int, dict] = {}
    for tag in TAGS:
        for split in SPLITS:
            matches = [i for i, row in enumerate(rows) if row["tag"] == tag and row["split"] == split]
            chosen.update({i: rows[i] for i in matches[:per_tag]})
    return dict(sorted(chosen.items()))


def sample_prompts(config: ml_collections.ConfigDict, params, prompts: list[dict], samples_per_prompt: int,
                   outdir: pathlib.Path) -> None:
    """Sample every prompt into `outdir` in GenEval's layout, with its trajectory files."""
    from pstroke.rollout import sampling

    shutil.rmtree(outdir, ignore_errors=True)  # a previous demo may have sampled other prompts
    sampling.sample_geneval(config, params, prompts, samples_per_prompt, outdir)


def score_oracle(prompts: list[dict], samples_per_prompt: int, canvas: int, outdir: pathlib.Path) -> dict:
    """Render ground-truth images of `prompts` into `outdir`, score them and return the results."""
    shutil.rmtree(outdir, ignore_errors=True)
    render_benchmark(outdir, dict(enumerate(prompts)), samples=samples_per_prompt, canvas=canvas, progress=False)
    return evaluate(outdir, progress=False)


def format_oracle_row(results: dict) -> str:
    """Return one line with the oracle's overall, in-distribution and held-out scores."""

    def score(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return (f"oracle (ground-truth renders of the same prompts): overall {score(results['overall'])}   "
            f"in-distribution: {score(results['in_distribution']['overall'])}   "
            f"held-out: {score(results['heldout']['overall'])}")


def run_demo(config: ml_collections.ConfigDict, workdir: pathlib.Path, num_prompts: int, samples_per_prompt: int,
             train_steps: int, pretrained: pathlib.Path | None) -> dict:
    """Run the demo stages in order, print the tables and return the model's results."""
    log.info("[demo 1/5] workdir %s", workdir)
    prepare_workdir(workdir)

    log.info("[demo 2/5] model (config %s)", config.get("variant", "?"))
    params, step = get_model(config, workdir, pretrained, train_steps)
    log.info("using the checkpoint of step %d", step)

    log.info("[demo 3/5] prompts")
    prompts = choose_prompts(read_jsonl(BENCHMARK_PATH), num_prompts)
    heldout = sum(row["split"] == "heldout" for row in prompts)
    log.info("%d benchmark prompts (%d held-out), %d sample(s) each", len(prompts), heldout, samples_per_prompt)

    log.info("[demo 4/5] sampling trajectories")
    samples = workdir / "samples"
    sample_prompts(config, params, prompts, samples_per_prompt, samples)

    log.info("[demo 5/5] scoring")
    results = evaluate(samples, progress=False)
    oracle = score_oracle(prompts, samples_per_prompt, config.world.canvas, workdir / "oracle")
    print(f"\nShapesGenEval on {count_noun(len(prompts), 'prompt')}, model checkpoint of step {step}:")
    print(format_table(results, results["records"]))
    print(format_oracle_row(oracle))

    page = samples / "00000" / "trajectories" / "0000" / "trajectory.html"
    print(f"\none trajectory: {page.absolute()}")
    print(f"all trajectories: {samples.absolute()}/<prompt>/trajectories/<sample>/ "
          "(trajectory.html, strip.png, trace.json)")
    print(f"scores with every image's verdict: {(samples / 'results.json').absolute()}")
    return results


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; pass settings as --flag=value")
    if not WORKDIR.value:
        raise UserError("missing --workdir: pass a folder for the demo's model and outputs, e.g. --workdir=runs/demo")
    if NUM_PROMPTS.value < 1:
        raise UserError(f"--num_prompts={NUM_PROMPTS.value}; pass a positive count")
    if SAMPLES_PER_PROMPT.value < 1:
        raise UserError(f"--samples_per_prompt={SAMPLES_PER_PROMPT.value}; pass a positive count")

    pretrained = pathlib.Path(PRETRAINED_DIR.value).expanduser() if PRETRAINED_DIR.value else None
    if PRETRAINED_DIR.present and pretrained is not None and not has_checkpoint(pretrained):
        raise UserError(f"--pretrained_dir={PRETRAINED_DIR.value!r} contains no checkpoint; pass a training workdir "
                        "with checkpoints/<step>, or leave the flag out")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save and restore at INFO
    try:
        run_demo(CONFIG.value, pathlib.Path(WORKDIR.value).expanduser(), NUM_PROMPTS.value,
                 SAMPLES_PER_PROMPT.value, TRAIN_STEPS.value, pretrained)
    except TrainingStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        sys.exit(STOPPED_EXIT_CODE)


if __name__ == "__main__":
    run_cli(main)
