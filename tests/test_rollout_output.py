"""Trajectory files: PNGs, JSON trace, strip, escaped self-contained HTML, GenEval layout."""

import base64
import io
import json
import re

import numpy as np
from PIL import Image

from pstroke.rollout import output


def _image(value: int) -> np.ndarray:
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = value
    return image


def _trajectory(prompt="a photo of a red circle") -> output.Trajectory:
    return output.Trajectory(
        prompt=prompt,
        rounds=[
            output.Round(1, "<ins> add a red circle </ins>", _image(200), "<|vision_start|>", "<|im_start|>"),
            output.Round(2, "the image matches the prompt", None, "<|im_start|>", None),
            output.Round(3, None, _image(90), None, "<|endoftext|>"),
        ],
        ended=True,
        first_choice="<|im_start|>",
        timings={"batch_rollout": 0.5},
    )


def test_trajectory_files_written(tmp_path):
    trajectory = _trajectory()
    output.write_trajectory(tmp_path, trajectory)

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "final.png", "round_01.png", "round_03.png", "strip.png", "trace.json", "trajectory.html"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "final.png")), _image(90))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "round_01.png")), _image(200))


def test_trace_lists_rounds_and_files(tmp_path):
    output.write_trajectory(tmp_path, _trajectory())
    trace = json.loads((tmp_path / "trace.json").read_text())

    assert trace["prompt"] == "a photo of a red circle"
    assert trace["ended"] is True
    assert [entry["round"] for entry in trace["rounds"]] == [1, 2, 3]
    assert [entry["image"] for entry in trace["rounds"]] == ["round_01.png", None, "round_03.png"]
    assert trace["rounds"][0]["text"] == "<ins> add a red circle </ins>"
    assert trace["rounds"][2]["after_image"] == "<|endoftext|>"
    assert trace["timings_seconds"] == {"batch_rollout": 0.5}
    for entry in trace["rounds"]:
        if entry["image"]:
            assert (tmp_path / entry["image"]).is_file()


def test_strip_has_one_column_per_round(tmp_path):
    strip = output.render_strip(_trajectory())

    assert strip.width == 3 * output.STRIP_CELL
    pixels = np.asarray(strip)
    top = 2 * output.STRIP_LINE_HEIGHT
    column_one = pixels[top:top + output.STRIP_CELL, :output.STRIP_CELL]
    assert np.all(column_one[:, : output.STRIP_CELL // 2 - 1] == 200)


def test_html_escapes_prompt_and_model_text():
    trajectory = _trajectory(prompt="a photo of <script>alert(1)</script>")
    page = output.render_html(trajectory)

    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "&lt;ins&gt; add a red circle &lt;/ins&gt;" in page
    assert "&lt;|endoftext|&gt;" in page


def test_html_is_self_contained():
    page = output.render_html(_trajectory())

    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 2
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    first = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(first), _image(200))
    assert "href=" not in page


def test_geneval_layout(tmp_path):
    metadata = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    folder = output.write_geneval_sample(tmp_path, 7, metadata, 2, _image(50))

    assert folder == tmp_path / "00007"
    assert json.loads((folder / "metadata.jsonl").read_text()) == metadata
    assert (folder / "metadata.jsonl").read_text().count("\n") == 1
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "samples" / "0002.png")), _image(50))


def test_text_image_pairs_skip_partial_rounds():
    pairs = _trajectory().text_image_pairs()

    assert len(pairs) == 1
    assert pairs[0][0] == "<ins> add a red circle </ins>"
    np.testing.assert_array_equal(pairs[0][1], _image(200))


def test_cut_strip_caption_is_marked():
    words = " ".join(f"word{index}" for index in range(200))
    lines = output.caption_lines(words)
    assert len(lines) == output.STRIP_TEXT_LINES
    assert lines[-1].endswith("[...]")
    assert output.caption_lines("1: the image matches the prompt")[-1].endswith("prompt")
