"""The Shapes-world benchmark: a deterministic JSONL file in GenEval's metadata format.

Regenerate the committed file byte-identically with

    python -m pstroke.world.benchmark            # writes pstroke/world/assets/shapes_geneval.jsonl
    python -m pstroke.world.benchmark --out FILE

Each line is a GenEval JSONL object (tag, include, optional exclude, prompt) plus `split`
("in_distribution" or "heldout"). Tags appear in GenEval's order with GenEval's per-tag prompt
counts, followed by the harder `relations3` tag.
"""

import argparse
import json
import pathlib
from typing import Iterable, Sequence

import numpy as np

from pstroke.errors import UserError, exit_on_user_error
from pstroke.world.layout import sample_layout
from pstroke.world.prompts import HELDOUT_TAGS, TAGS, graph_from_metadata, sample_graph, to_metadata
from pstroke.world.render import render

BENCHMARK_PATH = pathlib.Path(__file__).parent / "assets" / "shapes_geneval.jsonl"
BENCHMARK_SEED = 2026

# Prompts per tag: GenEval's counts in evaluation_metadata.jsonl (553 in all) and 100 for the
# harder tag.
TAG_COUNTS: dict[str, int] = {
    "single_object": 80,
    "two_object": 99,
    "counting": 80,
    "colors": 94,
    "position": 100,
    "color_attr": 100,
    "relations3": 100,
}

# Share of the prompts of each tag in `HELDOUT_TAGS` that contain a held-out composition.
HELDOUT_FRACTION = 0.25


def build_benchmark(seed: int = BENCHMARK_SEED) -> list[dict]:
    """Return the benchmark's metadata objects, in file order; the same `seed` gives the same list."""
    rows = []
    for tag_index, tag in enumerate(TAGS):
        rng = np.random.default_rng([seed, tag_index])
        count = TAG_COUNTS[tag]
        heldout = np.zeros(count, dtype=bool)
        if tag in HELDOUT_TAGS:
            heldout[rng.permutation(count)[: round(HELDOUT_FRACTION * count)]] = True
        for is_heldout in heldout:
            graph = sample_graph(tag, rng, "heldout" if is_heldout else "train")
            rows.append(to_metadata(graph, tag))
    return rows


def write_jsonl(rows: Iterable[dict], path: pathlib.Path) -> None:
    """Write one JSON object a line (GenEval's separators, a newline after every line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """Read a JSONL metadata file.

    Raises:
      UserError: the file is missing, or a line is not a JSON object (the message gives its number).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"metadata file not found: {str(path)!r}; pass a JSONL file such as {BENCHMARK_PATH}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; pass a JSONL metadata file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: malformed JSON line ({error.msg}); each line must be one JSON object")
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, found {type(row).__name__}")
        rows.append(row)
    return rows


def render_sample(metadata: dict, index: int, sample: int, canvas: int = 32, seed: int = 0) -> np.ndarray:
    """Render sample `sample` of benchmark prompt `index` as a uint8 [canvas, canvas, 3] image.

    The layout is drawn with `np.random.default_rng([seed, index, sample])`, so a render depends
    only on these arguments.
    """
    graph = graph_from_metadata(metadata)
    rng = np.random.default_rng([seed, index, sample])
    return render(sample_layout(graph, canvas, rng))


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Write the benchmark JSONL file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=BENCHMARK_PATH, help="output JSONL path")
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED, help="benchmark seed (the committed file uses the default)")
    args = parser.parse_args(argv)

    rows = build_benchmark(args.seed)
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} prompts to {args.out}")


if __name__ == "__main__":
    main()
