"""Draw a strip of trajectories: each image state with its plan and inspection under it.

Usage: `python -m pstroke.data.figure --config=configs/shapes_tiny.py --out=docs/trajectories.png`.
Each row shows one train-split trajectory with its prompt above it. The rows are a multi-turn
trajectory, an augmented one, a conflict critique and an alignment critique.
"""

import re
import textwrap
from typing import Sequence

import numpy as np
from absl import flags
from PIL import Image, ImageDraw, ImageFont

from pstroke.config import define_config_flag, run_cli
from pstroke.data import trajectories
from pstroke.errors import UserError

_CONFIG = define_config_flag()
_OUT = flags.DEFINE_string("out", "docs/trajectories.png", "PNG file to write.")

CELL = 150  # pixels per image side in the figure
TEXT_LINES = 10
FONT_SIZE = 11
LINE_HEIGHT = 13
WRAP = 26  # characters per caption line
ROWS = (("multi_turn", "additive"), ("multi_turn", "augmented_change"), ("conflict_critique", "wrong"),
        ("alignment_critique", "mismatch"))


def _caption_for(record: dict) -> list[tuple[np.ndarray, str]]:
    """Return (image, caption) per image: the text before it (plan or refine) and the inspection after."""
    segments = record["segments"]
    cells = []
    for index, segment in enumerate(segments):
        if segment["type"] != "image":
            continue
        before = segments[index - 1]["parts"][-1][0]
        after = segments[index + 1]["parts"][0][0] if index + 1 < len(segments) else ""
        plan = re.fullmatch(r"<ins> (.*) </ins> <des> (.*) </des>", before)
        if plan:
            caption = f"ins: {plan.group(1)}\ndes: {plan.group(2)}"
        else:
            caption = "refine: " + re.sub(r"</?refine>", "", before).strip()
        cells.append((trajectories.decode_image(segment, record["canvas"]), f"{caption}\ninspect: {after}"))
    return cells


def _find(config, subset: str, kind: str) -> dict:
    for index in range(2000):
        record = trajectories.make_record(config.data, config.world.canvas, "train", index)
        if (record["subset"], record["kind"]) == (subset, kind) and trajectories.image_count(record) >= 2:
            return record
    raise UserError(f"no {subset} {kind} trajectory with two images in the first 2000 train records")


def draw_strip(records: list[dict]) -> Image.Image:
    """Return the figure: one row per record, the prompt above its cells."""
    font = ImageFont.load_default(size=FONT_SIZE)
    rows = [(record["prompt"], record["subset"], _caption_for(record)) for record in records]
    columns = max(len(cells) for _, _, cells in rows)
    cell_height = CELL + TEXT_LINES * LINE_HEIGHT + 8
    row_height = LINE_HEIGHT + 6 + cell_height
    figure = Image.new("RGB", (columns * (CELL + 10) + 10, len(rows) * row_height + 10), "white")
    draw = ImageDraw.Draw(figure)

    for row, (prompt, subset, cells) in enumerate(rows):
        top = 10 + row * row_height
        draw.text((10, top), f"{subset.replace('_', ' ')}: {prompt}", fill="black", font=font)
        for column, (image, caption) in enumerate(cells):
            left, image_top = 10 + column * (CELL + 10), top + LINE_HEIGHT + 6
            figure.paste(Image.fromarray(image).resize((CELL, CELL), Image.NEAREST), (left, image_top))
            lines = [line for paragraph in caption.split("\n") for line in textwrap.wrap(paragraph, WRAP)]
            for number, line in enumerate(lines[:TEXT_LINES]):
                draw.text((left, image_top + CELL + 4 + number * LINE_HEIGHT), line, fill=(40, 40, 40), font=font)
    return figure


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; pass settings as --config.a.b=value")
    config = _CONFIG.value
    records = [_find(config, subset, kind) for subset, kind in ROWS]
    draw_strip(records).save(_OUT.value)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    run_cli(main)
