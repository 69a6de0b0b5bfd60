"""Measure the data pipeline's throughput: record generation, sequence building, packed batches.

Usage: `python benchmarks/pipeline.py [--config=configs/shapes_tiny.py] [--seconds=20] [--dataset-dir=DIR]`.

Stages, each timed for about `--seconds` on the main process (data.worker_count 0):
- generate: `trajectories.make_record` (layout sampling and trajectory text), samples/s.
- sequence: record -> rendered images -> per-token fields, samples/s and tokens/s.
- batches: the train iterator (shuffle, render, tokenize, first-fit packing, batching) from
  memory, and also from a written TFDS dataset when `--dataset-dir` is given. It reports
  samples/s, real (non-pad) tokens/s and the fraction of row tokens that are not padding.
"""

import argparse
import platform
import time

import numpy as np

from pstroke.config import load_config
from pstroke.data import pipeline, trajectories
from pstroke.data.tokenizer import build_tokenizer


def _timed(step, seconds: float) -> tuple[int, float, list]:
    """Call `step()` until `seconds` have passed; return calls, elapsed seconds and results."""
    results, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        results.append(step())
    return len(results), time.perf_counter() - start, results


def bench_generate(config, seconds: float) -> dict:
    counter = iter(range(10**9))
    calls, elapsed, _ = _timed(lambda: trajectories.make_record(config.data, config.world.canvas, "train", next(counter)), seconds)
    return {"samples_per_s": calls / elapsed}


def bench_sequence(config, seconds: float) -> dict:
    words = build_tokenizer(config)
    records = [trajectories.make_record(config.data, config.world.canvas, "train", i) for i in range(200)]
    rng = np.random.default_rng(0)
    counter = iter(range(10**9))
    calls, elapsed, samples = _timed(
        lambda: pipeline.record_to_sample(records[next(counter) % len(records)], rng, words, config), seconds)
    tokens = sum(len(sample["token_id"]) for sample in samples)
    return {"samples_per_s": calls / elapsed, "tokens_per_s": tokens / elapsed}


def bench_batches(config, seconds: float) -> dict:
    iterator = pipeline.make_iterator(config, "train")
    next(iterator)  # start-up (tokenizer, threads) is not counted
    calls, elapsed, batches = _timed(lambda: next(iterator), seconds)
    samples = sum(int(row.max()) for batch in batches for row in batch["sample_id"])
    real = sum(int((batch["sample_id"] > 0).sum()) for batch in batches)
    total = sum(batch["sample_id"].size for batch in batches)
    return {"batches_per_s": calls / elapsed, "samples_per_s": samples / elapsed,
            "tokens_per_s": real / elapsed, "fill": real / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/shapes_tiny.py")
    parser.add_argument("--seconds", type=float, default=20.0, help="time per stage, in seconds")
    parser.add_argument("--dataset-dir", default="", help="dataset folder written by pstroke.build_data")
    args = parser.parse_args()
    config = load_config(args.config)

    print(f"machine: {platform.machine()}, {platform.processor() or 'unknown cpu'}, python {platform.python_version()}")
    print(f"config: {args.config}, canvas {config.world.canvas}, seq_len {config.data.seq_len}, "
          f"batch {config.train.batch_size} rows, packing bins {config.data.num_packing_bins}")
    results = {
        "generate records": bench_generate(config, args.seconds),
        "build sequences": bench_sequence(config, args.seconds),
        "train batches (in memory)": bench_batches(config, args.seconds),
    }
    if args.dataset_dir:
        config.data.dir = args.dataset_dir
        results["train batches (dataset folder)"] = bench_batches(config, args.seconds)

    print(f"{'stage':32} {'samples/s':>10} {'tokens/s':>10} {'fill':>6}")
    for name, numbers in results.items():
        tokens = f"{numbers['tokens_per_s']:10.0f}" if "tokens_per_s" in numbers else f"{'-':>10}"
        fill = f"{numbers['fill']:6.2f}" if "fill" in numbers else f"{'-':>6}"
        print(f"{name:32} {numbers['samples_per_s']:10.1f} {tokens} {fill}")


if __name__ == "__main__":
    main()
