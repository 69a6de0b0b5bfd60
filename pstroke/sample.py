"""Sample trajectories from a trained workdir.

    python -m pstroke.sample --config=configs/shapes_tiny.py --workdir=runs/demo --outdir=out \
        --prompt="a photo of a red circle left of a blue square"

Prompts come from `--prompt` (repeatable), `--prompts_file` (one a line) or `--geneval_metadata`
(GenEval JSONL; writes GenEval's folder layout for `python -m pstroke.evaluate --images OUTDIR`).
Each prompt is lower-cased and stripped of surrounding whitespace first.
OUTDIR must not contain numbered prompt folders or results.json of an earlier run, because
`pstroke.evaluate` would score them with the new ones.
Each prompt gets its final image, every intermediate image, `trace.json`, `strip.png` and a
self-contained `trajectory.html`; see `pstroke.rollout.output`.
"""

import logging
import pathlib
from typing import Sequence

from absl import flags

from pstroke.cli_output import check_no_earlier_run, check_output_folder, count_noun
from pstroke.config import define_config_flag, run_cli
from pstroke.errors import UserError

CONFIG = define_config_flag()
WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose latest checkpoint is sampled.")
OUTDIR = flags.DEFINE_string("outdir", None, "Folder for the sampled images and trajectory files.")
PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt to sample; repeat the flag for several.")
PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "Text file with one prompt a line.")
GENEVAL_METADATA = flags.DEFINE_string(
    "geneval_metadata", None, "GenEval JSONL metadata file; the output uses GenEval's folder layout.")
SAMPLES_PER_PROMPT = flags.DEFINE_integer(
    "samples_per_prompt", 4, "Images per prompt with --geneval_metadata (GenEval scores 4).")


def normalize_prompt(prompt: str) -> str:
    """Return `prompt` lower-cased without surrounding whitespace, because the vocabulary's words are lower case."""
    return prompt.strip().lower()


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; pass prompts with --prompt=...")
    sources = [name for name, value in (("--prompt", PROMPT.value), ("--prompts_file", PROMPTS_FILE.value),
                                        ("--geneval_metadata", GENEVAL_METADATA.value)) if value]
    if len(sources) != 1:
        raise UserError(f"pass exactly one of --prompt, --prompts_file or --geneval_metadata (got "
                        f"{', '.join(sources) or 'none'})")
    if not WORKDIR.value or not OUTDIR.value:
        raise UserError("missing --workdir or --outdir; pass the training workdir and a folder for the samples")
    if SAMPLES_PER_PROMPT.value < 1:
        raise UserError(f"--samples_per_prompt={SAMPLES_PER_PROMPT.value}; pass a positive count")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs each restore step at INFO
    from pstroke.rollout import restore, sampling

    config = CONFIG.value
    outdir = pathlib.Path(OUTDIR.value)
    if GENEVAL_METADATA.value:
        metadata = sampling.read_geneval_metadata(pathlib.Path(GENEVAL_METADATA.value))
        metadata = [dict(entry, prompt=normalize_prompt(entry["prompt"])) for entry in metadata]
        prompts = [entry["prompt"] for entry in metadata]
    else:
        prompts = PROMPT.value or sampling.read_prompts_file(pathlib.Path(PROMPTS_FILE.value))
        prompts = [normalize_prompt(prompt) for prompt in prompts]
    tokenizer = sampling.build_tokenizer(config)
    for prompt in prompts:
        sampling.encode_prompt(prompt, tokenizer, config.sample.max_prompt_tokens,
                               sampling.single_step_prompts(config))

    check_no_earlier_run(outdir, "--outdir")
    params, step = restore.restore_params(config, WORKDIR.value)
    check_output_folder(outdir, "--outdir")  # checked before the sampler compiles, which is slow
    logging.info("sampling %s with the checkpoint of step %d", count_noun(len(prompts), "prompt"), step)
    if GENEVAL_METADATA.value:
        sampling.sample_geneval(config, params, metadata, SAMPLES_PER_PROMPT.value, outdir)
    else:
        sampling.sample_prompts(config, params, prompts, outdir)
    logging.info("wrote %s", outdir)


if __name__ == "__main__":
    run_cli(main)
