"""Rollout speed on a random model of configs/shapes_tiny.py: per-round time, compile time, samples/s.

    python benchmarks/rollout.py [--rounds=4] [--batches=1,16] [--override=sample.num_steps=25 ...]

Every round is made to cost the same: the decisions are steered so each prompt writes a text
segment of the full `sample.max_text_tokens` and draws an image in every round. Goals:
- round 4 takes at most 1.2x the time of round 1 (the cache grows, the image size does not),
- compiling with 8 maximum rounds takes at most 1.3x the time of compiling with 2,
- samples/s at batch 1 and 16 (a sample is a trajectory of `--sample_rounds` rounds).
"""

import argparse
import functools
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pstroke.config import load_config
from pstroke.data.tokenizer import build_tokenizer
from pstroke.rollout import rollout as rollout_lib
from pstroke.rollout import testing
from pstroke.rollout.model_steps import build_model_steps
from pstroke.rollout.sampling import encode_prompt, special_tokens

PROMPT = "a photo of a red circle left of a blue square"


def _long_text_decode(decode, im_end, params, cache, token):
    """Decode that never closes a segment early, so every segment has max_text_tokens tokens."""
    cache, logits = decode(params, cache, token)
    return cache, logits.at[:, im_end].set(-1e9)


def make_steps(config, batch: int):
    tokenizer = build_tokenizer(config)
    steps = build_model_steps(config, special_tokens(tokenizer), tokenizer.vocab_size)
    special = steps.special
    steps = testing.steer(steps, after_text=[special.vision_start] * batch, after_image=[special.im_start] * batch)
    steps = steps._replace(decode=functools.partial(_long_text_decode, steps.decode, special.im_end))
    return tokenizer, steps


def prompt_batch(tokenizer, config, batch: int):
    segment = encode_prompt(PROMPT, tokenizer, config.sample.max_prompt_tokens)
    prompt = np.full((batch, config.sample.max_prompt_tokens), tokenizer.pad_id, np.int32)
    prompt[:, :len(segment)] = segment
    length = np.full((batch,), len(segment), np.int32)
    return jnp.asarray(prompt), jnp.asarray(length), rollout_lib.prompt_keys(0, jnp.arange(batch))


def time_rounds(config, params, rounds: int, repeats: int) -> list[float]:
    """Median seconds of each round, run one jitted round at a time from Python."""
    tokenizer, steps = make_steps(config, 1)
    settings = rollout_lib.SamplerSettings.from_config(config.sample)
    start = jax.jit(rollout_lib.start_state, static_argnums=0)
    run_round = jax.jit(rollout_lib.run_round, static_argnames=("steps", "settings"))
    inputs = prompt_batch(tokenizer, config, 1)

    samples = [[] for _ in range(rounds)]
    for repeat in range(repeats + 1):  # the first pass compiles
        state = jax.block_until_ready(start(steps, params, *inputs))
        for index in range(rounds):
            begin = time.perf_counter()
            state, record = run_round(steps, params, state, settings=settings)
            jax.block_until_ready(record)
            if repeat:
                samples[index].append(time.perf_counter() - begin)
        assert bool(np.all(np.asarray(record.has_image))), "the steered rounds must draw an image"
    return [statistics.median(values) for values in samples]


def compile_seconds(config, params, max_rounds: int) -> float:
    config = config.copy_and_resolve_references()
    config.sample.max_rounds = max_rounds
    tokenizer, steps = make_steps(config, 1)
    settings = rollout_lib.SamplerSettings.from_config(config.sample)
    prompt, length, keys = prompt_batch(tokenizer, config, 1)
    run = jax.jit(functools.partial(rollout_lib.rollout, steps, settings=settings))
    begin = time.perf_counter()
    run.lower(params, prompt, length, keys, jnp.int32(max_rounds)).compile()
    return time.perf_counter() - begin


def samples_per_second(config, params, batch: int, sample_rounds: int, repeats: int) -> float:
    tokenizer, steps = make_steps(config, batch)
    settings = rollout_lib.SamplerSettings.from_config(config.sample)
    prompt, length, keys = prompt_batch(tokenizer, config, batch)
    run = jax.jit(functools.partial(rollout_lib.rollout, steps, settings=settings))
    limit = jnp.int32(sample_rounds)
    jax.block_until_ready(run(params, prompt, length, keys, limit))
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(run(params, prompt, length, keys, limit))
        times.append(time.perf_counter() - begin)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/shapes_tiny.py")
    parser.add_argument("--override", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=4, help="rounds timed one by one")
    parser.add_argument("--sample_rounds", type=int, default=2, help="rounds per sample for samples/s")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes for samples/s")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the median is reported")
    args = parser.parse_args()

    config = load_config(args.config, args.override)
    params = testing.random_params(config)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"model: hidden {config.model.llm.hidden_size}, layers {config.model.llm.num_layers}, canvas "
          f"{config.world.canvas} px, text tokens/segment {config.sample.max_text_tokens}, sampler steps "
          f"{config.sample.num_steps}, cfg text {config.sample.cfg_text_scale} / image {config.sample.cfg_img_scale}")

    per_round = time_rounds(config, params, args.rounds, args.repeats)
    for index, seconds in enumerate(per_round, start=1):
        print(f"round {index}: {seconds * 1000:.1f} ms")
    ratio = per_round[-1] / per_round[0]
    print(f"round {args.rounds} / round 1: {ratio:.2f}x (goal <= 1.2x: {'met' if ratio <= 1.2 else 'not met'})")

    short, long = compile_seconds(config, params, 2), compile_seconds(config, params, 8)
    ratio = long / short
    print(f"compile: 2 rounds {short:.1f} s, 8 rounds {long:.1f} s, ratio {ratio:.2f}x "
          f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'not met'})")

    for batch in (int(value) for value in args.batches.split(",")):
        rate = samples_per_second(config, params, batch, args.sample_rounds, args.repeats)
        print(f"batch {batch}: {rate:.2f} samples/s ({args.sample_rounds} rounds per sample)")


if __name__ == "__main__":
    main()
