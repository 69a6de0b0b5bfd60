"""`python -m pstroke.sample` checks --outdir before it samples."""

import json
import subprocess
import sys

from pstroke.rollout import testing

TIMEOUT_SECONDS = 300
PROMPT = "--prompt=a photo of a red circle"


def _sample(*args):
    config_flags = [f"--config.{override}" for override in testing.TINY_OVERRIDES]
    command = [sys.executable, "-m", "pstroke.sample", "--config=configs/shapes_tiny.py", *config_flags, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)


def _error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "sampling 1 prompt" not in result.stderr  # failed before the sampler was built
    return errors[0]


def test_file_as_outdir_rejected(random_workdir, tmp_path):
    not_a_folder = tmp_path / "results.json"
    not_a_folder.write_text("{}")
    error = _error_line(_sample(f"--workdir={random_workdir}", f"--outdir={not_a_folder}", PROMPT))
    assert f"--outdir={str(not_a_folder)!r}" in error
    assert "is a file, not a folder" in error
    assert not_a_folder.read_text() == "{}"


def test_earlier_geneval_run_rejected(random_workdir, tmp_path):
    metadata = tmp_path / "metadata.jsonl"
    entry = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    metadata.write_text(json.dumps(entry) + "\n")
    outdir = tmp_path / "geneval"
    for index in range(3):
        (outdir / f"{index:05d}" / "samples").mkdir(parents=True)
    (outdir / "results.json").write_text("{}")

    error = _error_line(_sample(f"--workdir={random_workdir}", f"--outdir={outdir}", f"--geneval_metadata={metadata}"))
    assert f"--outdir={str(outdir)!r}" in error
    assert "3 prompt folders (00000, 00001, 00002) and results.json" in error
    assert "pass a new --outdir or remove that folder" in error
    assert (outdir / "results.json").read_text() == "{}"
    assert (outdir / "00002" / "samples").is_dir()
