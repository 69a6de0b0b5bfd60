"""End-to-end demo: render a sample of the Shapes-world benchmark and score it.

    python -m pstroke.demo --workdir DIR      (or `make demo`)

Writes `DIR/benchmark_renders/` in GenEval's layout (ground-truth renders of a few prompts per tag,
in-distribution and held-out), scores it with the exact evaluator and prints the table. Clean
renders score 1.000 on every tag, which checks the whole render-and-judge chain.
"""

import argparse
import pathlib
from typing import Sequence

from pstroke.errors import exit_on_user_error
from pstroke.evaluate import evaluate, format_table
from pstroke.render_benchmark import render_benchmark
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl
from pstroke.world.prompts import TAGS


def select_prompts(rows: list[dict], per_tag: int) -> dict[int, dict]:
    """Return {benchmark index: metadata} of the first `per_tag` in-distribution and the first
    `per_tag` held-out prompts of every tag."""
    chosen: dict[int, dict] = {}
    for tag in TAGS:
        for split in ("in_distribution", "heldout"):
            matches = [i for i, row in enumerate(rows) if row["tag"] == tag and row["split"] == split]
            chosen.update({i: rows[i] for i in matches[:per_tag]})
    return dict(sorted(chosen.items()))


def run_benchmark_sample(workdir: pathlib.Path, per_tag: int, samples: int, canvas: int) -> dict:
    """Render the selected prompts under `workdir/benchmark_renders`, score them, return results."""
    out = workdir / "benchmark_renders"
    rows = select_prompts(read_jsonl(BENCHMARK_PATH), per_tag)
    render_benchmark(out, rows, samples=samples, canvas=canvas)
    return evaluate(out)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo stages in order and print the score table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=pathlib.Path, required=True, help="output folder")
    parser.add_argument("--per-tag", type=int, default=4, help="prompts per tag and split")
    parser.add_argument("--samples", type=int, default=4, help="images per prompt")
    parser.add_argument("--canvas", type=int, default=32, help="image side in pixels")
    args = parser.parse_args(argv)

    results = run_benchmark_sample(args.workdir, args.per_tag, args.samples, args.canvas)
    print(format_table(results, results["records"]))
    print(f"renders and results.json are in {args.workdir / 'benchmark_renders'}")


if __name__ == "__main__":
    main()
