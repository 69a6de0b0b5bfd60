"""Files of a finished rollout: PNGs, the JSON trace, a PNG strip, an HTML page, GenEval's layout.

Per prompt, `write_trajectory` writes into one folder:

- `final.png`: the last image of the trajectory (absent when the model drew none),
- `round_NN.png`: the image of round NN (1-based), for every round that drew one,
- `trace.json`: the prompt, each round's text, switch choices, image file and wall time, and the
  batch's compile and rollout times,
- `strip.png`: every state side by side, the text of each round under its image,
- `trajectory.html`: one self-contained page (images inline as base64 PNGs, text escaped).

`write_geneval_sample` writes GenEval's layout, `<outdir>/<5-digit index>/metadata.jsonl` and
`<outdir>/<index>/samples/<4-digit sample>.png`, which `python -m pstroke.evaluate` scores.
"""

import base64
import dataclasses
import html
import io
import json
import pathlib
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

STRIP_CELL = 160  # pixels per image side in the strip
STRIP_TEXT_LINES = 9
STRIP_FONT_SIZE = 12  # Pillow's default font; at its size-10 default, spaces shrink to a pixel or two
STRIP_LINE_HEIGHT = 14  # pixels per line
STRIP_CHARS_PER_LINE = 24


@dataclasses.dataclass
class Round:
    """One round of one prompt, decoded to host values."""

    index: int  # 1-based
    text: str | None  # None when the round decoded no text
    image: np.ndarray | None  # uint8 [H, W, 3], None when the round drew no image
    after_text: str | None  # token the model chose after the text (e.g. "<|vision_start|>")
    after_image: str | None  # token the model chose after the image
    batch_seconds: float | None = None  # wall time of this round for the whole batch


@dataclasses.dataclass
class Trajectory:
    """A whole trajectory of one prompt."""

    prompt: str
    rounds: list[Round]
    ended: bool  # the model emitted <|endoftext|>; False when the round limit cut it
    first_choice: str  # token the model chose after the prompt
    timings: dict[str, float]  # seconds, shared by the batch the prompt ran in

    @property
    def final_image(self) -> np.ndarray | None:
        images = [round_.image for round_ in self.rounds if round_.image is not None]
        return images[-1] if images else None

    def text_image_pairs(self) -> list[tuple[str, np.ndarray]]:
        """Return (text, image) of every round that has both, in order.

        This is the `rounds` input of `pstroke.data.trajectories.critiques_from_rollout`.
        """
        return [(round_.text, round_.image) for round_ in self.rounds
                if round_.text is not None and round_.image is not None]


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _enlarge(image: np.ndarray, side: int) -> Image.Image:
    """Scale an image to side x side with nearest-neighbour, so pixel art stays sharp."""
    return Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST)


def write_trace(folder: pathlib.Path, trajectory: Trajectory, image_files: dict[int, str]) -> None:
    """Write `trace.json`: prompt, rounds (text, choices, image file), end flag and timings."""
    trace = {
        "prompt": trajectory.prompt,
        "first_choice": trajectory.first_choice,
        "ended": trajectory.ended,
        "final_image": "final.png" if trajectory.final_image is not None else None,
        "rounds": [
            {
                "round": round_.index,
                "text": round_.text,
                "after_text": round_.after_text,
                "image": image_files.get(round_.index),
                "after_image": round_.after_image,
                "batch_seconds": round_.batch_seconds,
            }
            for round_ in trajectory.rounds
        ],
        "timings_seconds": trajectory.timings,
    }
    (folder / "trace.json").write_text(json.dumps(trace, indent=2) + "\n")


def caption_lines(caption: str) -> list[str]:
    """Wrap a strip caption into at most STRIP_TEXT_LINES lines; a cut caption ends with " [...]"
    (trace.json and trajectory.html keep the whole text)."""
    return textwrap.wrap(caption, STRIP_CHARS_PER_LINE, max_lines=STRIP_TEXT_LINES, placeholder=" [...]")


def render_strip(trajectory: Trajectory) -> Image.Image:
    """Draw every round as a column: its image (or a grey box) with its text below, prompt on top."""
    font = ImageFont.load_default(size=STRIP_FONT_SIZE)
    columns = max(1, len(trajectory.rounds))
    header = 2 * STRIP_LINE_HEIGHT
    text_height = STRIP_TEXT_LINES * STRIP_LINE_HEIGHT
    strip = Image.new("RGB", (columns * STRIP_CELL, header + STRIP_CELL + text_height), "white")
    draw = ImageDraw.Draw(strip)
    draw.text((4, 4), textwrap.shorten(trajectory.prompt, width=columns * STRIP_CHARS_PER_LINE), fill="black",
              font=font)

    for column, round_ in enumerate(trajectory.rounds):
        left = column * STRIP_CELL
        if round_.image is not None:
            strip.paste(_enlarge(round_.image, STRIP_CELL), (left, header))
        else:
            draw.rectangle((left, header, left + STRIP_CELL - 1, header + STRIP_CELL - 1), fill=(225, 225, 225))
        caption = f"{round_.index}: {round_.text or '(no text)'}"
        for line_index, line in enumerate(caption_lines(caption)):
            draw.text((left + 3, header + STRIP_CELL + 2 + line_index * STRIP_LINE_HEIGHT), line, fill="black",
                      font=font)
    return strip


def render_html(trajectory: Trajectory) -> str:
    """Return one self-contained HTML page of the trajectory; every model or user text is escaped."""
    rows = []
    for round_ in trajectory.rounds:
        cells = [f"<h2>Round {round_.index}</h2>"]
        if round_.text is not None:
            cells.append(f"<p class='text'>{html.escape(round_.text)}</p>")
            cells.append(f"<p class='choice'>then: {html.escape(round_.after_text or '')}</p>")
        if round_.image is not None:
            encoded = base64.b64encode(_png_bytes(round_.image)).decode("ascii")
            cells.append(f"<img alt='round {round_.index} image' src='data:image/png;base64,{encoded}'>")
            cells.append(f"<p class='choice'>then: {html.escape(round_.after_image or '')}</p>")
        rows.append("<section>" + "\n".join(cells) + "</section>")

    ending = "the model ended the sequence" if trajectory.ended else "stopped at the round limit"
    timings = ", ".join(f"{html.escape(name)} {seconds:.3f} s" for name, seconds in trajectory.timings.items())
    return "\n".join([
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'><title>pstroke trajectory</title>",
        "<style>body{font-family:sans-serif;margin:2em} section{margin-bottom:1.5em}"
        " img{width:256px;image-rendering:pixelated;border:1px solid #999}"
        " .text{font-family:monospace;white-space:pre-wrap} .choice{color:#666}</style>",
        "</head><body>",
        f"<h1>{html.escape(trajectory.prompt)}</h1>",
        f"<p class='choice'>after the prompt: {html.escape(trajectory.first_choice)}; {ending}</p>",
        *rows,
        f"<p class='choice'>timings (whole batch): {timings}</p>",
        "</body></html>",
        "",
    ])


def write_trajectory(folder: pathlib.Path, trajectory: Trajectory) -> None:
    """Write the PNGs, `trace.json`, `strip.png` and `trajectory.html` of one prompt into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)

    image_files = {}
    for round_ in trajectory.rounds:
        if round_.image is not None:
            name = f"round_{round_.index:02d}.png"
            Image.fromarray(round_.image).save(folder / name)
            image_files[round_.index] = name
    if trajectory.final_image is not None:
        Image.fromarray(trajectory.final_image).save(folder / "final.png")

    write_trace(folder, trajectory, image_files)
    render_strip(trajectory).save(folder / "strip.png")
    (folder / "trajectory.html").write_text(render_html(trajectory))


def write_geneval_sample(outdir: pathlib.Path, prompt_index: int, metadata: dict, sample_index: int,
                         image: np.ndarray) -> pathlib.Path:
    """Write one image in GenEval's layout and return the prompt's folder.

    `metadata` is the prompt's GenEval JSON object, written as the folder's `metadata.jsonl` line.
    """
    folder = outdir / f"{prompt_index:05d}"
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text(json.dumps(metadata) + "\n")
    Image.fromarray(image).save(folder / "samples" / f"{sample_index:04d}.png")
    return folder
