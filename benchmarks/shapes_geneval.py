"""Score trained Shapes models on a fixed slice of the ShapesGenEval benchmark, with rollout statistics.

For each model workdir this samples the slice in GenEval's layout (`python -m pstroke.sample
--geneval_metadata`), scores it (`python -m pstroke.evaluate`), and reads every trajectory's
`trace.json` for the process statistics: rounds and images per prompt, denoising steps per prompt,
how often Inspect asked for a refinement, and how often the image after it passes the judge.

It also scores two chance rows: images of random 4 x 4-pixel blocks in palette colours on the
background (the look of an undertrained pixel-patch model), and uniform random pixels. A model's
score means little until it clears them, because the judge credits any solid block of the right
colour that it reads as the right shape.

Usage:
  python benchmarks/shapes_geneval.py --run NAME=CONFIG_SPEC=WORKDIR [--run ...] --out DIR
      [--per_tag 6] [--samples 1] [--chance_samples 4] [--override sample.cfg_text_scale=1.5 ...]

The slice takes the first `per_tag` in-distribution and the first `per_tag` held-out prompts of
every tag of `pstroke/world/assets/shapes_geneval.jsonl` (tags without held-out prompts give
in-distribution ones only).
"""

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from pstroke.world import benchmark
from pstroke.world.scene import BACKGROUND, PALETTE

BENCHMARK = pathlib.Path(__file__).resolve().parents[1] / "pstroke" / "world" / "assets" / "shapes_geneval.jsonl"


def select_slice(rows: list[dict], per_tag: int) -> list[dict]:
    """Return the first `per_tag` rows of every (tag, split) pair, in benchmark order."""
    counts: dict[tuple[str, str], int] = {}
    chosen = []
    for row in rows:
        key = (row["tag"], row["split"])
        if counts.get(key, 0) < per_tag:
            counts[key] = counts.get(key, 0) + 1
            chosen.append(row)
    return chosen


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def random_blocks(rng: np.random.Generator, canvas: int = 32, block: int = 4, coverage: float = 0.15) -> np.ndarray:
    """Return a [canvas, canvas, 3] uint8 image: each block x block cell is a random palette colour
    with probability `coverage`, else the background."""
    cells = canvas // block
    colours = np.array([BACKGROUND] + list(PALETTE.values()), np.uint8)
    filled = rng.random((cells, cells)) < coverage
    choice = np.where(filled, rng.integers(1, len(colours), (cells, cells)), 0)
    return np.repeat(np.repeat(colours[choice], block, axis=0), block, axis=1)


def uniform_noise(rng: np.random.Generator, canvas: int = 32) -> np.ndarray:
    """Return a [canvas, canvas, 3] uint8 image of independent uniform random pixel values."""
    return rng.integers(0, 256, (canvas, canvas, 3)).astype(np.uint8)


def write_chance_images(rows: list[dict], out: pathlib.Path, samples: int, make_image=random_blocks,
                        seed: int = 0) -> None:
    """Write `samples` images of `make_image(rng)` per prompt of `rows` in GenEval's folder layout."""
    rng = np.random.default_rng(seed)
    for index, row in enumerate(rows):
        folder = out / f"{index:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n")
        for sample in range(samples):
            Image.fromarray(make_image(rng)).save(folder / "samples" / f"{sample:04d}.png")


def rollout_statistics(folder: pathlib.Path, records: list[dict], num_steps: int) -> dict:
    """Summarize every `trace.json` under `folder`; `records` are the evaluator's per-image verdicts."""
    correct = {(record["folder"], record["sample"]): record["correct"] for record in records}
    rounds, images, refined, refined_fixed = [], [], 0, 0
    for trace_file in sorted(folder.glob("*/trajectories/*/trace.json")):
        trace = json.loads(trace_file.read_text())
        active = [r for r in trace["rounds"] if r["text"] or r["image"]]
        rounds.append(len(active))
        images.append(sum(1 for r in active if r["image"]))
        if any("<refine>" in (r["text"] or "") for r in active):
            refined += 1
            # The final image of the trajectory is samples/<sample>.png of its prompt folder.
            refined_fixed += correct.get((trace_file.parents[2].name, trace_file.parent.name + ".png"), False)
    count = max(len(rounds), 1)
    return {
        "trajectories": len(rounds),
        "rounds_mean": sum(rounds) / count,
        "rounds_max": max(rounds, default=0),
        "images_mean": sum(images) / count,
        # The Euler sampler evaluates the model num_steps - 1 times per image (per guidance branch).
        "denoising_steps_mean": sum(images) / count * (num_steps - 1),
        "refine_rate": refined / count,
        "refine_fixed_rate": refined_fixed / refined if refined else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True,
                        help="NAME=CONFIG_SPEC=WORKDIR, e.g. process=configs/shapes_tiny.py=runs/process_tiny")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="Output folder.")
    parser.add_argument("--per_tag", type=int, default=6, help="Prompts per tag and split.")
    parser.add_argument("--samples", type=int, default=1, help="Samples per prompt.")
    parser.add_argument("--num_steps", type=int, default=25, help="Sampler timesteps (config.sample.num_steps).")
    parser.add_argument("--override", action="append", default=[],
                        help="KEY=VALUE config override for every run's sampling, e.g. sample.timestep_shift=3.0.")
    parser.add_argument("--chance_samples", type=int, default=4,
                        help="Images per prompt for each chance row; 0 leaves the rows out.")
    args = parser.parse_args()

    rows = select_slice(benchmark.read_jsonl(BENCHMARK), args.per_tag)
    args.out.mkdir(parents=True, exist_ok=True)
    slice_file = args.out / "slice.jsonl"
    slice_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{len(rows)} prompts x {args.samples} samples", flush=True)

    table = {}
    chance_rows = {"chance": random_blocks, "chance_noise": uniform_noise} if args.chance_samples > 0 else {}
    for name, make_image in chance_rows.items():
        chance = args.out / name
        write_chance_images(rows, chance, args.chance_samples, make_image)
        run([sys.executable, "-m", "pstroke.evaluate", f"--images={chance}"])
        results = json.loads((chance / "results.json").read_text())
        table[name] = {"results": {k: v for k, v in results.items() if k != "records"}}

    for spec in args.run:
        name, config, workdir = spec.split("=", 2)
        images = args.out / name
        run([sys.executable, "-m", "pstroke.sample", f"--config={config}", f"--workdir={workdir}",
             f"--outdir={images}", f"--geneval_metadata={slice_file}", f"--samples_per_prompt={args.samples}",
             f"--config.sample.num_steps={args.num_steps}", *[f"--config.{item}" for item in args.override]])
        run([sys.executable, "-m", "pstroke.evaluate", f"--images={images}"])
        results = json.loads((images / "results.json").read_text())
        stats = rollout_statistics(images, results["records"], args.num_steps)
        table[name] = {"results": {k: v for k, v in results.items() if k != "records"}, "rollout": stats}

    (args.out / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
