"""Render ground-truth images of benchmark prompts in GenEval's folder layout.

    python -m pstroke.render_benchmark --out DIR [--samples 4] [--canvas 32] [--metadata FILE]

writes, for prompt index i (the line number from 0 in the metadata file),
`DIR/<i:05d>/metadata.jsonl` (that line's JSON object) and `DIR/<i:05d>/samples/<s:04d>.png`.
Sample s of prompt i is drawn with seed `[--seed, i, s]`, so reruns write identical files.
"""

import argparse
import json
import pathlib
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from pstroke.cli_output import check_no_earlier_run, check_output_folder
from pstroke.errors import UserError, exit_on_user_error
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl, render_sample
from pstroke.world.layout import Unsatisfiable
from pstroke.world.prompts import TAGS, graph_from_metadata


def write_prompt_folder(out: pathlib.Path, index: int, metadata: dict, samples: int, canvas: int, seed: int) -> None:
    """Write one prompt's folder: its metadata line and `samples` PNG renders."""
    folder = out / f"{index:05d}"
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text(json.dumps(metadata) + "\n")
    for sample in range(samples):
        image = render_sample(metadata, index, sample, canvas, seed)
        Image.fromarray(image).save(folder / "samples" / f"{sample:04d}.png")


def render_benchmark(
    out: pathlib.Path, rows: dict[int, dict], samples: int = 4, canvas: int = 32, seed: int = 0, progress: bool = True
) -> None:
    """Render `rows` ({prompt index: metadata object}) into `out` in GenEval's layout.

    Raises:
      UserError: a row has an unknown tag, or a clause outside the Shapes world, or no layout on
        this canvas.
    """
    for index, metadata in rows.items():
        if metadata.get("tag") not in TAGS:
            raise UserError(f"prompt {index}: unknown tag {metadata.get('tag')!r}; expected one of {', '.join(TAGS)}")
        graph_from_metadata(metadata)

    for index, metadata in tqdm(rows.items(), desc="render", unit="prompt", disable=not progress):
        try:
            write_prompt_folder(out, index, metadata, samples, canvas, seed)
        except Unsatisfiable as error:
            raise UserError(f"prompt {index} ({metadata['prompt']!r}) cannot be laid out on a {canvas} px canvas: {error}")


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Render the benchmark (or another metadata file) into a GenEval-layout folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder")
    parser.add_argument("--samples", type=int, default=4, help="images per prompt (GenEval uses 4)")
    parser.add_argument("--canvas", type=int, default=32, help="image side in pixels")
    parser.add_argument("--metadata", type=pathlib.Path, default=BENCHMARK_PATH, help="JSONL metadata file")
    parser.add_argument("--seed", type=int, default=0, help="layout seed")
    args = parser.parse_args(argv)
    if args.samples < 1:
        raise UserError(f"--samples={args.samples} must be at least 1")
    if args.canvas < 16:
        raise UserError(f"--canvas={args.canvas} is too small; objects need a canvas of at least 16 px (default 32)")

    rows = dict(enumerate(read_jsonl(args.metadata)))
    check_no_earlier_run(args.out, "--out")
    check_output_folder(args.out, "--out")
    render_benchmark(args.out, rows, args.samples, args.canvas, args.seed)
    print(f"wrote {len(rows)} prompts x {args.samples} samples to {args.out}")


if __name__ == "__main__":
    main()
