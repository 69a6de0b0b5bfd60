"""Sampling runs: prompt checks, batching, the compiled rollout, and the files of every prompt.

`python -m pstroke.sample` parses its flags and calls `sample_prompts` or `sample_geneval`.
"""

import dataclasses
import functools
import json
import logging
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from pstroke.data import pipeline
from pstroke.data.tokenizer import WordTokenizer, build_tokenizer, split_words
from pstroke.errors import UserError
from pstroke.rollout import output
from pstroke.rollout import rollout as rollout_lib
from pstroke.rollout.model_steps import build_model_steps
from pstroke.rollout.rollout import RoundRecord, SamplerSettings, prompt_keys, rollout
from pstroke.rollout.steps import ModelSteps, SpecialTokens
from pstroke.world import prompts as world_prompts

log = logging.getLogger(__name__)


def special_tokens(tokenizer: WordTokenizer) -> SpecialTokens:
    """Return the marker ids of `tokenizer` in the form the rollout takes."""
    return SpecialTokens(im_start=tokenizer.im_start_id, im_end=tokenizer.im_end_id,
                         vision_start=tokenizer.vision_start_id, vision_end=tokenizer.vision_end_id,
                         end_of_text=tokenizer.end_of_text_id, pad=tokenizer.pad_id)


def check_vocabulary(prompt: str, tokenizer: WordTokenizer) -> None:
    """Raise UserError naming every word of `prompt` outside the tokenizer's vocabulary and listing the prompt words.

    The list is the Shapes world's prompt vocabulary (`pstroke.world.prompts.VOCABULARY`: template
    words, numbers, colours, shapes and relations). It leaves out the words that only the model's
    plans and inspections use, such as "add" and "swap", which the tokenizer accepts too.
    """
    known = set(tokenizer.vocabulary)
    unknown = sorted({word for word in split_words(prompt) if word not in known})
    if not unknown:
        return

    words = sorted(set(world_prompts.VOCABULARY) & known)
    raise UserError(f"prompt {prompt!r} has words outside the model's vocabulary: "
                    f"{', '.join(repr(word) for word in unknown)}. "
                    f"Prompt words: {', '.join(words)}")


def single_step_prompts(config: ml_collections.ConfigDict) -> bool:
    """Return whether `config.sample.prompt_format` selects single-step prompts.

    Raises:
      UserError: the format is neither "process" nor "single_step".
    """
    prompt_format = config.sample.prompt_format
    if prompt_format not in ("process", "single_step"):
        raise UserError(f"invalid sample.prompt_format {prompt_format!r}: use 'process' or 'single_step'")
    return prompt_format == "single_step"


def encode_prompt(prompt: str, tokenizer: WordTokenizer, max_tokens: int, single_step: bool = False) -> list[int]:
    """Return the prompt segment with its markers, exactly as training samples begin.

    The process format is `Please create the image step-by-step : PROMPT`; the single-step
    format (`single_step=True`, the text-to-image baseline's) is the bare prompt.

    Raises:
      UserError: the prompt is empty, has words outside the vocabulary (all of them are named), or
        its segment is longer than `max_tokens` (config.sample.max_prompt_tokens).
    """
    if not prompt.strip():
        raise UserError("empty prompt; pass a description such as --prompt='a photo of a red circle'")
    check_vocabulary(prompt, tokenizer)
    ids = pipeline.prompt_tokens(prompt, tokenizer, single_step)
    if len(ids) > max_tokens:
        raise UserError(f"prompt {prompt!r} takes {len(ids)} tokens but config.sample.max_prompt_tokens is "
                        f"{max_tokens}; shorten the prompt or raise --config.sample.max_prompt_tokens")
    return ids


@dataclasses.dataclass
class Sampler:
    """A restored model with its compiled rollout, ready to run batches of prompt segments."""

    config: ml_collections.ConfigDict
    params: Any
    tokenizer: WordTokenizer
    steps: ModelSteps
    settings: SamplerSettings
    compiled: Any = None  # the AOT-compiled rollout, set by `compile`
    compile_seconds: float = 0.0

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, params: Any) -> "Sampler":
        tokenizer = build_tokenizer(config)
        steps = build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
        return cls(config, params, tokenizer, steps, SamplerSettings.from_config(config.sample, clock_rounds=True))

    def _run(self, params, prompt, prompt_length, rng, round_limit):
        """Run the rollout; return the per-prompt flags (not the caches), records and decoded images."""
        state, records = rollout(self.steps, params, prompt, prompt_length, rng, round_limit, self.settings)
        flags = {"first_choice": state.first_choice, "done": state.done, "rounds_run": state.rounds_run}
        return flags, records, self.steps.latents_to_images(params, records.latents)

    def compile(self) -> None:
        """Compile the rollout for batches of config.sample.batch_size prompts, once."""
        batch = self.config.sample.batch_size
        prompt = jax.ShapeDtypeStruct((batch, self.config.sample.max_prompt_tokens), jnp.int32)
        length = jax.ShapeDtypeStruct((batch,), jnp.int32)
        keys = jax.eval_shape(lambda: prompt_keys(0, jnp.arange(batch)))
        limit = jax.ShapeDtypeStruct((), jnp.int32)
        start = time.perf_counter()
        self.compiled = jax.jit(self._run).lower(self.params, prompt, length, keys, limit).compile()
        self.compile_seconds = time.perf_counter() - start

    def run_batch(self, segments: Sequence[list[int]], indices: Sequence[int]):
        """Run up to batch_size prompt segments; `indices` seed each prompt's key.

        Returns (flags, records, images [R, B, H, W, 3], seconds, round seconds) with host numpy
        trees cut back to the number of prompts given. `flags` has the final state's first_choice,
        done and rounds_run [B]; round seconds maps each round the batch ran to its wall time.
        """
        if self.compiled is None:
            self.compile()
        batch, width = self.config.sample.batch_size, self.config.sample.max_prompt_tokens
        count = len(segments)
        prompt = np.full((batch, width), self.tokenizer.pad_id, np.int32)
        length = np.zeros((batch,), np.int32)
        row_indices = np.zeros((batch,), np.int32)
        for row in range(batch):
            source = min(row, count - 1)  # unused rows repeat the last prompt and are dropped
            prompt[row, :len(segments[source])] = segments[source]
            length[row] = len(segments[source])
            row_indices[row] = indices[source]
        keys = prompt_keys(self.config.sample.seed, row_indices)

        rollout_lib.ROUND_CLOCK.clear()
        start = time.perf_counter()
        outputs = self.compiled(self.params, prompt, length, keys, jnp.int32(self.settings.max_rounds))
        flags, records, images = jax.device_get(outputs)
        jax.effects_barrier()
        seconds = time.perf_counter() - start
        round_seconds = _round_durations(start, rollout_lib.ROUND_CLOCK)

        flags = {name: value[:count] for name, value in flags.items()}
        records = jax.tree.map(functools.partial(_take_rows, count), records)
        return flags, records, images[:, :count], seconds, round_seconds


def _round_durations(start: float, clock: list[tuple[int, float]]) -> dict[int, float]:
    """Return {round index: seconds} from the end times of the rounds that ran (round 0 includes
    the prompt prefill)."""
    durations, previous = {}, start
    for index, finished in sorted(clock):
        durations[index] = finished - previous
        previous = finished
    return durations


def _take_rows(count: int, leaf: np.ndarray) -> np.ndarray:
    return leaf[:, :count]


def to_trajectories(prompts: Sequence[str], flags: dict, records: RoundRecord, images: np.ndarray,
                    tokenizer: WordTokenizer, timings: dict[str, float],
                    round_seconds: dict[int, float]) -> list[output.Trajectory]:
    """Convert host records [R, B, ...] of one batch to one `Trajectory` per prompt."""
    name = tokenizer.vocabulary.__getitem__
    trajectories = []
    for row, prompt in enumerate(prompts):
        rounds = []
        for index in range(records.has_text.shape[0]):
            has_text, has_image = bool(records.has_text[index, row]), bool(records.has_image[index, row])
            if not (has_text or has_image):
                continue
            text = None
            if has_text:
                text = tokenizer.decode(records.text[index, row, :records.text_length[index, row]])
            rounds.append(output.Round(
                index=index + 1,
                text=text,
                image=images[index, row] if has_image else None,
                after_text=name(int(records.switch_token[index, row])) if has_text else None,
                after_image=name(int(records.image_switch_token[index, row])) if has_image else None,
                batch_seconds=round_seconds.get(index),
            ))
        trajectories.append(output.Trajectory(
            prompt=prompt, rounds=rounds, ended=bool(flags["done"][row]),
            first_choice=name(int(flags["first_choice"][row])), timings=timings))
    return trajectories


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def _run_all(sampler: Sampler, prompts: Sequence[str], seeds: Sequence[int]):
    """Yield (batch start, trajectories) for every batch of prompts, with a progress bar over prompts."""
    max_tokens = sampler.config.sample.max_prompt_tokens
    single_step = single_step_prompts(sampler.config)
    segments = [encode_prompt(prompt, sampler.tokenizer, max_tokens, single_step) for prompt in prompts]
    if sampler.compiled is None:
        log.info("compiling the rollout (batch %d, %d rounds)", sampler.config.sample.batch_size,
                 sampler.settings.max_rounds)
        sampler.compile()
        log.info("compiled in %.1f s", sampler.compile_seconds)

    with tqdm.tqdm(total=len(prompts), unit="prompt", desc="sampling") as progress:
        for start, batch_segments in _batches(segments, sampler.config.sample.batch_size):
            batch_prompts = prompts[start:start + len(batch_segments)]
            flags, records, images, seconds, round_seconds = sampler.run_batch(
                batch_segments, seeds[start:start + len(batch_segments)])
            rounds = max(1, int(np.max(flags["rounds_run"])))
            timings = {"compile": sampler.compile_seconds, "batch_rollout": seconds,
                       "batch_rollout_per_round": seconds / rounds}
            yield start, to_trajectories(batch_prompts, flags, records, images, sampler.tokenizer, timings,
                                         round_seconds)
            progress.update(len(batch_segments))


def sample_prompts(config: ml_collections.ConfigDict, params: Any, prompts: Sequence[str],
                   outdir: pathlib.Path) -> list[pathlib.Path]:
    """Sample every prompt and write its files into `outdir/<5-digit index>`; return the folders."""
    sampler = Sampler.create(config, params)
    folders = []
    for start, trajectories in _run_all(sampler, prompts, list(range(len(prompts)))):
        for offset, trajectory in enumerate(trajectories):
            folder = outdir / f"{start + offset:05d}"
            output.write_trajectory(folder, trajectory)
            folders.append(folder)
    return folders


def read_prompts_file(path: pathlib.Path) -> list[str]:
    """Read one prompt a line, skipping blank lines.

    Raises:
      UserError: the file is missing or has no prompts.
    """
    if not path.is_file():
        raise UserError(f"prompts file not found: {str(path)!r}; pass a text file with one prompt a line")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"prompts file {str(path)!r} has no prompts; write one prompt a line")
    return prompts


def read_geneval_metadata(path: pathlib.Path) -> list[dict]:
    """Read a GenEval JSONL metadata file: one JSON object with a "prompt" a line.

    Raises:
      UserError: the file is missing, a line is not JSON, or an object has no "prompt".
    """
    if not path.is_file():
        raise UserError(f"GenEval metadata file not found: {str(path)!r}; pass a JSONL file with one "
                        "{\"prompt\": ...} object a line")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"line {number} of {str(path)!r} is not valid JSON ({error.msg}); expected one "
                            "GenEval metadata object a line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise UserError(f"line {number} of {str(path)!r} has no \"prompt\" string; expected a GenEval "
                            "metadata object")
        entries.append(entry)
    if not entries:
        raise UserError(f"GenEval metadata file {str(path)!r} has no prompts")
    return entries


def sample_geneval(config: ml_collections.ConfigDict, params: Any, metadata: Sequence[dict],
                   samples_per_prompt: int, outdir: pathlib.Path) -> list[pathlib.Path]:
    """Sample `samples_per_prompt` images per GenEval prompt in GenEval's folder layout.

    The final image of sample s of prompt p is `outdir/<p:05d>/samples/<s:04d>.png` and its trajectory
    files are in `outdir/<p:05d>/trajectories/<s:04d>`. A trajectory without any image gets a
    black final image, so every sample is scored (as a failure).
    """
    sampler = Sampler.create(config, params)
    jobs = [(index, sample) for index in range(len(metadata)) for sample in range(samples_per_prompt)]
    prompts = [metadata[index]["prompt"] for index, _ in jobs]
    seeds = [index * samples_per_prompt + sample for index, sample in jobs]
    canvas = config.world.canvas
    folders = []
    for start, trajectories in _run_all(sampler, prompts, seeds):
        for offset, trajectory in enumerate(trajectories):
            index, sample = jobs[start + offset]
            image = trajectory.final_image
            if image is None:
                image = np.zeros((canvas, canvas, 3), np.uint8)
            folder = output.write_geneval_sample(outdir, index, metadata[index], sample, image)
            output.write_trajectory(folder / "trajectories" / f"{sample:04d}", trajectory)
            if sample == 0:
                folders.append(folder)
    return folders
