"""Measure how the judge's accuracy on clean benchmark renders degrades with pixel noise and blur.

    python -m pstroke.world.robustness [--canvas 32] [--stride 4]

Renders every `stride`-th benchmark prompt once and perturbs it: a Gaussian blur of the given
sigma in pixels, then Gaussian pixel noise of the given standard deviation in uint8 levels,
clipped to [0, 255]. Prints the per-tag accuracy of the judge for each level.
"""

import argparse
from typing import Sequence

import numpy as np
from scipy import ndimage

from pstroke.errors import exit_on_user_error
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl, render_sample
from pstroke.world.judge import judge
from pstroke.world.prompts import TAGS

NOISE_LEVELS = (0.0, 8.0, 16.0, 24.0, 32.0, 48.0)
BLUR_LEVELS = (0.0, 0.5, 0.7, 1.0, 1.5)


def perturb(image: np.ndarray, noise: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """Return `image` blurred by a Gaussian of sigma `blur` px, then with Gaussian noise of standard
    deviation `noise` (uint8 levels) added, clipped and rounded back to uint8."""
    pixels = image.astype(np.float32)
    if blur > 0:
        pixels = ndimage.gaussian_filter(pixels, sigma=(blur, blur, 0), mode="nearest")
    if noise > 0:
        pixels = pixels + rng.normal(0.0, noise, size=pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def accuracy_under(rows: list[dict], noise: float, blur: float, canvas: int, stride: int) -> dict[str, float]:
    """Return the judge's accuracy per tag on perturbed renders of every `stride`-th prompt."""
    rng = np.random.default_rng(0)
    correct: dict[str, list[bool]] = {}
    for index in range(0, len(rows), stride):
        image = perturb(render_sample(rows[index], index, 0, canvas), noise, blur, rng)
        correct.setdefault(rows[index]["tag"], []).append(judge(image, rows[index]).correct)
    return {tag: float(np.mean(values)) for tag, values in correct.items()}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Print the accuracy table over noise levels (no blur) and blur levels (no noise)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvas", type=int, default=32, help="canvas side in pixels")
    parser.add_argument("--stride", type=int, default=4, help="use every STRIDE-th benchmark prompt")
    args = parser.parse_args(argv)
    rows = read_jsonl(BENCHMARK_PATH)

    print("noise  blur  " + "  ".join(f"{tag[:10]:>10}" for tag in TAGS))
    levels = [(noise, 0.0) for noise in NOISE_LEVELS] + [(0.0, blur) for blur in BLUR_LEVELS[1:]]
    levels += [(8.0, 0.5), (16.0, 0.7)]
    for noise, blur in levels:
        scores = accuracy_under(rows, noise, blur, args.canvas, args.stride)
        print(f"{noise:5.0f}  {blur:4.1f}  " + "  ".join(f"{scores.get(tag, float('nan')):10.3f}" for tag in TAGS))


if __name__ == "__main__":
    main()
