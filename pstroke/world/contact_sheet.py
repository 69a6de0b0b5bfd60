"""Draw a contact sheet of benchmark renders: one row per tag, each render with its prompt below.

    python -m pstroke.world.contact_sheet --out docs/contact_sheet.png [--per-tag 4] [--canvas 32]

Renders are upscaled with nearest-neighbour sampling so their pixels stay visible.
"""

import argparse
import pathlib
import textwrap
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from pstroke.errors import exit_on_user_error
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl, render_sample
from pstroke.world.prompts import TAGS

CELL = 176  # px per column
LABEL = 110  # px for the tag name on the left
TEXT_LINES = 4
LINE_HEIGHT = 13


def draw_contact_sheet(rows: list[dict], per_tag: int, canvas: int) -> Image.Image:
    """Return the sheet: for each tag, its first `per_tag` prompts alternating in-distribution and
    held-out where the tag has both, rendered with sample 0."""
    font = ImageFont.load_default(size=11)
    zoom = (CELL - 16) // canvas
    image_side = canvas * zoom
    row_height = image_side + 8 + TEXT_LINES * LINE_HEIGHT + 8
    sheet = Image.new("RGB", (LABEL + per_tag * CELL, len(TAGS) * row_height), "white")
    draw = ImageDraw.Draw(sheet)

    for row_index, tag in enumerate(TAGS):
        top = row_index * row_height
        draw.text((6, top + image_side // 2), tag, fill="black", font=font)
        by_split = {
            split: [i for i, row in enumerate(rows) if row["tag"] == tag and row["split"] == split]
            for split in ("in_distribution", "heldout")
        }
        picks = [i for pair in zip(by_split["in_distribution"], by_split["heldout"]) for i in pair]
        picks = (picks + by_split["in_distribution"])[:per_tag] if picks else by_split["in_distribution"][:per_tag]
        picks = list(dict.fromkeys(picks))[:per_tag]

        for column, index in enumerate(picks):
            left = LABEL + column * CELL + (CELL - image_side) // 2
            render = Image.fromarray(render_sample(rows[index], index, 0, canvas))
            sheet.paste(render.resize((image_side, image_side), Image.Resampling.NEAREST), (left, top + 4))
            caption = rows[index]["prompt"].removeprefix("a photo of ")
            if rows[index]["split"] == "heldout":
                caption += " [held-out]"
            for line_index, line in enumerate(textwrap.wrap(caption, width=28)[:TEXT_LINES]):
                y = top + image_side + 8 + line_index * LINE_HEIGHT
                draw.text((LABEL + column * CELL + 6, y), line, fill="black", font=font)
    return sheet


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Write the contact sheet PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/contact_sheet.png"), help="output PNG")
    parser.add_argument("--per-tag", type=int, default=4, help="renders per tag")
    parser.add_argument("--canvas", type=int, default=32, help="render side in pixels")
    args = parser.parse_args(argv)

    sheet = draw_contact_sheet(read_jsonl(BENCHMARK_PATH), args.per_tag, args.canvas)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
