"""`python -m pstroke.sample`: trajectory files, GenEval layout, and one-line errors for bad input."""

import json
import shutil
import subprocess
import sys

from pstroke.rollout import testing

TIMEOUT_SECONDS = 300


def _sample(*args, overrides=(), config="configs/shapes_tiny.py"):
    replaced = {override.split("=")[0] for override in overrides}
    tiny = [override for override in testing.TINY_OVERRIDES if override.split("=")[0] not in replaced]
    config_flags = [f"--config.{override}" for override in tiny + list(overrides)]
    command = [sys.executable, "-m", "pstroke.sample", f"--config={config}", *config_flags, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0]


def test_prompts_write_trajectory_files(random_workdir, tmp_path):
    typed = ["  A Photo of a Red Circle left of a Blue Square ", "a photo of a green triangle"]
    outdir = tmp_path / "out"
    result = _sample(f"--workdir={random_workdir}", f"--outdir={outdir}",
                     *(f"--prompt={prompt}" for prompt in typed))

    assert result.returncode == 0, result.stderr[-3000:]
    prompts = ["a photo of a red circle left of a blue square", "a photo of a green triangle"]
    drawn = []
    for index, prompt in enumerate(prompts):
        folder = outdir / f"{index:05d}"
        trace = json.loads((folder / "trace.json").read_text())
        assert trace["prompt"] == prompt
        assert (folder / "strip.png").is_file()
        page = (folder / "trajectory.html").read_text()
        assert prompt in page
        images = [entry["image"] for entry in trace["rounds"] if entry["image"]]
        for name in images:
            assert (folder / name).is_file()
        assert (folder / "final.png").is_file() == bool(images)
        assert trace["timings_seconds"]["compile"] > 0.0
        for entry in trace["rounds"]:
            assert entry["batch_seconds"] > 0.0
        drawn.append(bool(images))
    assert any(drawn), "the random model drew no image, so no image path was checked"


def test_geneval_metadata_layout_is_scored(random_workdir, tmp_path):
    metadata = tmp_path / "metadata.jsonl"
    entry = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    metadata.write_text(json.dumps(entry) + "\n")
    outdir = tmp_path / "geneval"

    result = _sample(f"--workdir={random_workdir}", f"--outdir={outdir}", f"--geneval_metadata={metadata}",
                     "--samples_per_prompt=2")

    assert result.returncode == 0, result.stderr[-3000:]
    folder = outdir / "00000"
    assert json.loads((folder / "metadata.jsonl").read_text()) == entry
    assert sorted(path.name for path in (folder / "samples").iterdir()) == ["0000.png", "0001.png"]
    assert (folder / "trajectories" / "0001" / "trace.json").is_file()
    assert "sampling 1 prompt with the checkpoint of step 0" in result.stderr

    scored = subprocess.run([sys.executable, "-m", "pstroke.evaluate", f"--images={outdir}"], capture_output=True,
                            text=True, timeout=TIMEOUT_SECONDS)
    assert scored.returncode == 0, scored.stderr[-3000:]
    results = json.loads((outdir / "results.json").read_text())
    assert "images" in json.dumps(results)


def test_unknown_words_are_named(random_workdir, tmp_path):
    result = _sample(f"--workdir={random_workdir}", f"--outdir={tmp_path}",
                     "--prompt=a photo of a Zebra near a dragon")
    _assert_one_line_error(result, "'dragon', 'near', 'zebra'", "vocabulary")

    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    listed = error.split("Prompt words: ")[1].split(", ")
    assert "circle" in listed
    assert "triangle" in listed
    assert "left" in listed
    assert listed == sorted(listed)
    assert "zebra" not in listed
    assert "swap" not in listed


def test_empty_prompt_rejected(random_workdir, tmp_path):
    result = _sample(f"--workdir={random_workdir}", f"--outdir={tmp_path}", "--prompt=   ")
    _assert_one_line_error(result, "empty prompt")


def test_prompt_over_budget_rejected(random_workdir, tmp_path):
    result = _sample(f"--workdir={random_workdir}", f"--outdir={tmp_path}", "--prompt=a photo of a red circle",
                     overrides=("sample.max_prompt_tokens=8",))
    _assert_one_line_error(result, "max_prompt_tokens", "8")


def test_workdir_without_checkpoint_rejected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _sample(f"--workdir={empty}", f"--outdir={tmp_path / 'out'}", "--prompt=a photo of a red circle")
    _assert_one_line_error(result, "no checkpoint", str(empty))


def test_checkpoint_of_other_config_rejected(random_workdir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(random_workdir, copy)
    result = _sample(f"--workdir={copy}", f"--outdir={tmp_path / 'out'}", "--prompt=a photo of a red circle",
                     overrides=("model.llm.hidden_size=64",))
    _assert_one_line_error(result, "different config", "model.llm.hidden_size")


def test_shape_mismatch_found_without_saved_config(random_workdir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(random_workdir, copy)
    (copy / "config.json").unlink()
    result = _sample(f"--workdir={copy}", f"--outdir={tmp_path / 'out'}", "--prompt=a photo of a red circle",
                     overrides=("model.llm.intermediate_size=48",))
    _assert_one_line_error(result, "different config", "down_proj", "(2, 2, 48, 32)")


def test_checkpoint_of_other_variant_rejected(random_workdir, tmp_path):
    result = _sample(f"--workdir={random_workdir}", f"--outdir={tmp_path / 'out'}", "--prompt=a photo of a red circle",
                     config="configs/shapes_tiny.py:baseline")
    _assert_one_line_error(result, "variant 'process'", "--config gives variant 'baseline'",
                           "--config=configs/shapes_tiny.py:process", str(random_workdir))
    assert not (tmp_path / "out").exists()
