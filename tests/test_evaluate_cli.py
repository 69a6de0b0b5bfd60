"""The render_benchmark and evaluate commands: GenEval folder layout, results and input errors."""

import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pstroke import demo, evaluate, render_benchmark
from pstroke.world import benchmark
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl

ROWS = read_jsonl(BENCHMARK_PATH)


def _subset(per_tag=1):
    return demo.select_prompts(ROWS, per_tag)


@pytest.fixture
def rendered(tmp_path) -> pathlib.Path:
    """A GenEval-layout folder with one in-distribution and one held-out prompt per tag, 2 samples."""
    out = tmp_path / "renders"
    render_benchmark.render_benchmark(out, _subset(), samples=2, progress=False)
    return out


def _fails_with(main, argv, capsys, *fragments):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # A progress bar may come first; the error is the last line.
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, err
    return message


def test_render_benchmark_writes_geneval_layout(tmp_path):
    rows = {0: ROWS[0], 300: ROWS[300]}
    render_benchmark.render_benchmark(tmp_path, rows, samples=3, progress=False)
    for index, row in rows.items():
        folder = tmp_path / f"{index:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == row
        names = sorted(p.name for p in (folder / "samples").iterdir())
        assert names == ["0000.png", "0001.png", "0002.png"]
        image = np.asarray(Image.open(folder / "samples" / "0001.png"))
        assert image.shape == (32, 32, 3)
        np.testing.assert_array_equal(image, benchmark.render_sample(row, index, 1))


def test_render_benchmark_main_with_canvas_64(tmp_path):
    metadata = tmp_path / "two.jsonl"
    benchmark.write_jsonl(ROWS[:2], metadata)
    render_benchmark.main(["--out", str(tmp_path / "out"), "--samples", "1", "--canvas", "64", "--metadata", str(metadata)])
    assert Image.open(tmp_path / "out" / "00001" / "samples" / "0000.png").size == (64, 64)


def test_evaluate_scores_clean_renders_and_writes_results(rendered, capsys):
    evaluate.main(["--images", str(rendered)])
    out = capsys.readouterr().out
    assert "overall (mean of per-tag accuracies): 1.000" in out

    results = json.loads((rendered / "results.json").read_text())
    assert results["overall"] == 1.0
    assert results["per_tag"] == {tag: 1.0 for tag in results["per_tag"]}
    assert len(results["per_tag"]) == 7
    assert results["in_distribution"]["overall"] == 1.0
    assert results["heldout"]["overall"] == 1.0
    assert results["heldout"]["images"] == 2 * 4  # one held-out prompt for each of 4 tags, 2 samples
    assert len(results["records"]) == results["images"] == 2 * len(_subset())
    assert all(r["correct"] and r["reason"] == "all clauses hold" for r in results["records"])


def test_evaluate_overall_is_mean_of_tag_accuracies(rendered):
    # Blank the images of the single_object prompt: that tag scores 0, the others 1.
    for row_folder in rendered.iterdir():
        if row_folder.is_dir() and json.loads((row_folder / "metadata.jsonl").read_text())["tag"] == "single_object":
            for png in (row_folder / "samples").iterdir():
                Image.new("RGB", (32, 32), (240, 240, 235)).save(png)
    results = evaluate.evaluate(rendered, progress=False)
    assert results["per_tag"]["single_object"] == 0.0
    assert results["overall"] == pytest.approx(6 / 7)
    assert results["geneval"] == pytest.approx(5 / 6)
    failed = [r for r in results["records"] if not r["correct"]]
    assert {r["reason"] for r in failed} == {f"expected {ROWS[0]['include'][0]['class']}>=1, found 0"}


def test_evaluate_with_metadata_file(tmp_path):
    metadata = tmp_path / "two.jsonl"
    benchmark.write_jsonl(ROWS[:2], metadata)
    out = tmp_path / "out"
    render_benchmark.render_benchmark(out, {i: ROWS[i] for i in (0, 1)}, samples=1, progress=False)
    (out / "00000" / "metadata.jsonl").unlink()
    results = evaluate.evaluate(out, metadata, progress=False)
    assert results["overall"] == 1.0
    assert [r["prompt"] for r in results["records"]] == [ROWS[0]["prompt"], ROWS[1]["prompt"]]


def test_metadata_file_length_mismatch_rejected(tmp_path, capsys):
    out = tmp_path / "out"
    render_benchmark.render_benchmark(out, {i: ROWS[i] for i in (0, 1, 2)}, samples=1, progress=False)
    (out / "results.json").write_text("{}")
    message = _fails_with(evaluate.main, ["--images", str(out), "--metadata", str(BENCHMARK_PATH)], capsys,
                          "3 prompt folders", f"{len(ROWS)} lines", "--metadata")
    assert str(BENCHMARK_PATH) in message
    assert (out / "results.json").read_text() == "{}"


def test_metadata_file_prompt_mismatch_rejected(tmp_path, capsys):
    metadata = tmp_path / "other.jsonl"
    benchmark.write_jsonl([ROWS[0], ROWS[5]], metadata)
    out = tmp_path / "out"
    render_benchmark.render_benchmark(out, {i: ROWS[i] for i in (0, 1)}, samples=1, progress=False)
    assert ROWS[1]["prompt"] != ROWS[5]["prompt"]
    message = _fails_with(evaluate.main, ["--images", str(out), "--metadata", str(metadata)], capsys,
                          repr(str(out / "00001")), repr(ROWS[1]["prompt"]), repr(ROWS[5]["prompt"]))
    assert "other.jsonl:2" in message
    assert not (out / "results.json").exists()


def test_metadata_file_prompt_case_ignored(tmp_path):
    upper = {**ROWS[0], "prompt": ROWS[0]["prompt"].upper()}
    metadata = tmp_path / "upper.jsonl"
    benchmark.write_jsonl([upper], metadata)
    out = tmp_path / "out"
    render_benchmark.render_benchmark(out, {0: ROWS[0]}, samples=1, progress=False)
    results = evaluate.evaluate(out, metadata, progress=False)
    assert results["overall"] == 1.0


def test_evaluate_downscales_large_images(tmp_path, caplog):
    render_benchmark.render_benchmark(tmp_path, {0: ROWS[0]}, samples=1, progress=False)
    png = tmp_path / "00000" / "samples" / "0000.png"
    Image.open(png).resize((512, 512), Image.Resampling.NEAREST).save(png)
    with caplog.at_level(logging.WARNING):
        results = evaluate.evaluate(tmp_path, progress=False)
    assert results["overall"] == 1.0
    assert "resizing" in caplog.text


def test_bad_image_file_is_reported(rendered, capsys):
    (rendered / "00000" / "samples" / "0000.png").write_bytes(b"not an image")
    _fails_with(evaluate.main, ["--images", str(rendered)], capsys, "cannot read image", "0000.png")


def test_non_square_and_tiny_images_are_reported(rendered, capsys):
    png = rendered / "00000" / "samples" / "0000.png"
    Image.new("RGB", (40, 32), "white").save(png)
    _fails_with(evaluate.main, ["--images", str(rendered)], capsys, "40x32", "square")
    Image.new("RGB", (8, 8), "white").save(png)
    _fails_with(evaluate.main, ["--images", str(rendered)], capsys, "8x8", "at least 16x16")


def test_missing_metadata_is_reported(rendered, capsys):
    (rendered / "00000" / "metadata.jsonl").unlink()
    _fails_with(evaluate.main, ["--images", str(rendered)], capsys, "missing", "metadata.jsonl", "--metadata")


def test_malformed_jsonl_line_is_reported(tmp_path, capsys):
    metadata = tmp_path / "bad.jsonl"
    metadata.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    render_benchmark.render_benchmark(tmp_path / "out", {0: ROWS[0]}, samples=1, progress=False)
    _fails_with(evaluate.main, ["--images", str(tmp_path / "out"), "--metadata", str(metadata)], capsys, "bad.jsonl:2", "malformed JSON")


def test_binary_metadata_file_is_reported(rendered, capsys):
    png = rendered / "00000" / "samples" / "0000.png"
    _fails_with(evaluate.main, ["--images", str(rendered), "--metadata", str(png)], capsys, "not a UTF-8 text file")


def test_unknown_tag_is_reported(rendered, capsys):
    path = rendered / "00000" / "metadata.jsonl"
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "tag": "texture"}) + "\n")
    _fails_with(evaluate.main, ["--images", str(rendered)], capsys, "unknown tag 'texture'", "single_object")


def test_prompt_with_unknown_word_is_reported(rendered, capsys):
    path = rendered / "00000" / "metadata.jsonl"
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "prompt": row["prompt"] + " and a hexagon"}) + "\n")
    _fails_with(evaluate.main, ["--images", str(rendered)], capsys, "unknown word 'hexagon'", "vocabulary")


def test_geneval_metadata_reports_undetectable_class(tmp_path, capsys, assets_dir):
    first_line = (assets_dir / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()[0]
    geneval = tmp_path / "geneval.jsonl"
    geneval.write_text(first_line + "\n")
    first_class = json.loads(first_line)["include"][0]["class"]
    out = tmp_path / "out"
    render_benchmark.render_benchmark(out, {0: ROWS[0]}, samples=1, progress=False)
    (out / "00000" / "metadata.jsonl").unlink()
    _fails_with(
        evaluate.main, ["--images", str(out), "--metadata", str(geneval)], capsys, f"class {first_class!r} cannot be detected"
    )


def test_missing_folder_and_metadata_file_are_reported(tmp_path, capsys):
    _fails_with(evaluate.main, ["--images", str(tmp_path / "nowhere")], capsys, "not found")
    _fails_with(evaluate.main, ["--images", str(tmp_path)], capsys, "no prompt folders")
    _fails_with(render_benchmark.main, ["--out", str(tmp_path), "--metadata", str(tmp_path / "none.jsonl")], capsys, "not found")


def test_render_benchmark_rejects_unknown_tag(tmp_path, capsys):
    metadata = tmp_path / "bad.jsonl"
    benchmark.write_jsonl([{**ROWS[0], "tag": "texture"}], metadata)
    _fails_with(render_benchmark.main, ["--out", str(tmp_path / "o"), "--metadata", str(metadata)], capsys, "unknown tag 'texture'")


def test_evaluate_command_prints_one_line_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "pstroke.evaluate", "--images", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: image folder not found")
    assert "Traceback" not in completed.stderr


def test_file_passed_as_image_folder_is_named(tmp_path):
    not_a_folder = tmp_path / "results.json"
    not_a_folder.write_text("{}")
    with pytest.raises(evaluate.UserError, match="is a file"):
        evaluate.prompt_folders(not_a_folder)


def test_benchmark_regenerates_byte_identically(tmp_path):
    out = tmp_path / "benchmark.jsonl"
    benchmark.main(["--out", str(out)])
    assert out.read_bytes() == BENCHMARK_PATH.read_bytes()


def test_render_benchmark_rejects_file_as_out(tmp_path, capsys):
    not_a_folder = tmp_path / "renders"
    not_a_folder.write_text("keep")
    _fails_with(render_benchmark.main, ["--out", str(not_a_folder)], capsys, "is a file, not a folder", "--out=")
    _fails_with(render_benchmark.main, ["--out", str(not_a_folder / "inner")], capsys,
                f"{str(not_a_folder)!r} is a file, not a folder")
    assert not_a_folder.read_text() == "keep"


def test_render_benchmark_rejects_folder_of_earlier_run(tmp_path, capsys):
    metadata = tmp_path / "two.jsonl"
    benchmark.write_jsonl(ROWS[:2], metadata)
    args = ["--out", str(tmp_path / "out"), "--samples", "1", "--metadata", str(metadata)]
    render_benchmark.main(args)

    _fails_with(render_benchmark.main, args, capsys, "already contains an earlier run's 2 prompt folders", "--out=")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["00000", "00001"]
