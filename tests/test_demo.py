"""`python -m pstroke.demo` as a user runs it, on a tiny model, plus its prompt selection."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pstroke.demo import UNFINISHED_TRAINING_FILE, choose_prompts
from pstroke.rollout import testing
from pstroke.world.benchmark import BENCHMARK_PATH, read_jsonl
from pstroke.world.prompts import TAGS

TIMEOUT_SECONDS = 300
TABLE_FOOTER = "overall (mean of per-tag accuracies)"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """JAX's persistent compilation cache, shared by the demo runs of this module."""
    return tmp_path_factory.mktemp("jax_cache")


def _demo(workdir, *args, cache=None, overrides=()):
    """Run the demo in a fresh process with one CPU device and the tiny config."""
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    config_flags = [f"--config.{override}" for override in list(testing.TINY_OVERRIDES) + list(overrides)]
    command = [sys.executable, "-m", "pstroke.demo", f"--workdir={workdir}", *config_flags, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0]


def _assert_scored_outputs(workdir, stdout, prompts):
    """Check the sample folders, the trajectory files, results.json and the printed tables."""
    samples = workdir / "samples"
    results = json.loads((samples / "results.json").read_text())
    assert results["images"] == len(prompts)
    assert [record["prompt"] for record in results["records"]] == [row["prompt"] for row in prompts]
    for record in results["records"]:
        assert isinstance(record["correct"], bool)
        assert record["reason"]
    for index in range(len(prompts)):
        trajectory = samples / f"{index:05d}" / "trajectories" / "0000"
        assert (trajectory / "trajectory.html").is_file()
        assert (trajectory / "strip.png").is_file()
        assert json.loads((trajectory / "trace.json").read_text())["prompt"] == prompts[index]["prompt"]
        assert (samples / f"{index:05d}" / "samples" / "0000.png").is_file()

    assert TABLE_FOOTER in stdout
    for row in prompts:
        assert re.search(rf"^{row['tag']}\s+1\s", stdout, re.MULTILINE), stdout
    # The judge is exact at the default 32 px canvas; at the tests' 16 px some ground truths fail.
    assert re.search(r"^oracle \(ground-truth renders of the same prompts\): overall \d\.\d{3}", stdout,
                     re.MULTILINE), stdout
    oracle = json.loads((workdir / "oracle" / "results.json").read_text())
    assert oracle["images"] == len(prompts)
    page = re.search(r"^one trajectory: (.+)$", stdout, re.MULTILINE)
    assert page is not None, stdout
    assert os.path.isfile(page.group(1))


def test_prompts_cover_tags_and_heldout():
    rows = read_jsonl(BENCHMARK_PATH)
    chosen = choose_prompts(rows, 12)

    assert len(chosen) == 12
    assert {row["tag"] for row in chosen} == set(TAGS)
    assert sum(row["split"] == "heldout" for row in chosen) >= 3
    assert len({row["prompt"] for row in chosen}) == 12
    assert choose_prompts(rows, 12) == chosen
    assert choose_prompts(rows, 3) == chosen[:3]


def test_prompts_stop_when_benchmark_runs_out():
    rows = [{"tag": "colors", "split": "heldout", "prompt": "a photo of a red circle"},
            {"tag": "colors", "split": "in_distribution", "prompt": "a photo of a blue circle"}]
    chosen = choose_prompts(rows, 5)

    assert [row["prompt"] for row in chosen] == ["a photo of a blue circle", "a photo of a red circle"]


def test_demo_restores_workdir_checkpoint(random_workdir, tmp_path, cache):
    workdir = tmp_path / "run"
    shutil.copytree(random_workdir, workdir)
    result = _demo(workdir, "--num_prompts=3", "--pretrained_dir=", cache=cache)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "found a checkpoint in the workdir" in result.stderr
    for stage in range(1, 6):
        assert f"[demo {stage}/5]" in result.stderr
    assert "[train" not in result.stderr
    _assert_scored_outputs(workdir, result.stdout, choose_prompts(read_jsonl(BENCHMARK_PATH), 3))


def test_demo_copies_pretrained_model(random_workdir, tmp_path, cache):
    workdir = tmp_path / "fresh"
    result = _demo(workdir, "--num_prompts=2", f"--pretrained_dir={random_workdir}", cache=cache)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "copying the pretrained demo model" in result.stderr
    assert sorted(path.name for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()) == ["0"]
    assert (workdir / "config.json").is_file()
    _assert_scored_outputs(workdir, result.stdout, choose_prompts(read_jsonl(BENCHMARK_PATH), 2))


def _start_demo(workdir, log_file, *args, cache, overrides=()) -> subprocess.Popen:
    """Start the demo like `_demo`, with stdout and stderr going to `log_file`."""
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    config_flags = [f"--config.{override}" for override in list(testing.TINY_OVERRIDES) + list(overrides)]
    command = [sys.executable, "-m", "pstroke.demo", f"--workdir={workdir}", *config_flags, *args]
    with open(log_file, "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_stopped_training_resumes_on_rerun(tmp_path, cache):
    workdir = tmp_path / "scratch"
    steps = 10
    args = ("--num_prompts=1", f"--train_steps={steps}", "--pretrained_dir=")
    overrides = ("data.source=synthetic", "data.seq_len=128", "train.batch_size=2")

    # Ctrl-C once the training loop has announced its steps (its stop handlers are installed by then).
    log_file = tmp_path / "stopped.log"
    process = _start_demo(workdir, log_file, *args, cache=cache, overrides=overrides)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while "[train 5/5]" not in log_file.read_text():
        assert process.poll() is None, log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, "training did not start in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=TIMEOUT_SECONDS)
    stopped = log_file.read_text()

    assert process.returncode == 1, stopped[-3000:]
    assert "Traceback" not in stopped
    assert f"training {steps} steps from scratch" in stopped
    assert "SIGINT received" in stopped
    reached = max(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())
    assert 1 <= reached < steps, stopped[-3000:]
    message = [line for line in stopped.splitlines() if line.startswith("stopped: ")]
    assert len(message) == 1, stopped[-3000:]
    assert f"training stopped at step {reached} of {steps}" in message[0]
    assert "Rerun the same command to continue" in message[0]
    assert not (workdir / "samples").exists()

    # The same command continues from the saved step to the requested one, then samples.
    result = _demo(workdir, *args, cache=cache, overrides=overrides)

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"continuing the demo's training in the workdir from step {reached} to step {steps}" in result.stderr
    assert f"resumed from checkpoint step {reached}" in result.stderr
    assert f"checkpoint of step {steps}" in result.stdout
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in metrics] == list(range(1, steps + 1))
    stages = re.findall(r"\[(demo|train) (\d)/5\]", result.stderr)
    expected = [("demo", "1"), ("demo", "2"), *(("train", str(k)) for k in range(1, 6)),
                *(("demo", str(k)) for k in range(3, 6))]
    assert stages == expected, result.stderr[-3000:]
    _assert_scored_outputs(workdir, result.stdout, choose_prompts(read_jsonl(BENCHMARK_PATH), 1))
    assert not (workdir / UNFINISHED_TRAINING_FILE).exists()  # a later run restores step 10 without training


def test_checkpoint_of_other_config_rejected(random_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(random_workdir, workdir)
    result = _demo(workdir, "--num_prompts=1", overrides=("model.llm.hidden_size=64",))

    _assert_one_line_error(result, "different config", "model.llm.hidden_size")


def test_uncreatable_workdir_rejected(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder\n")
    result = _demo(blocker / "run", "--num_prompts=1")

    _assert_one_line_error(result, "cannot create workdir", str(blocker / "run"))


def test_zero_prompts_rejected(tmp_path):
    result = _demo(tmp_path / "run", "--num_prompts=0")

    _assert_one_line_error(result, "--num_prompts=0")


def test_missing_pretrained_dir_rejected(tmp_path):
    result = _demo(tmp_path / "run", f"--pretrained_dir={tmp_path / 'nope'}")

    _assert_one_line_error(result, "--pretrained_dir", str(tmp_path / "nope"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def _fake_train(stop_signal):
    """Return a stand-in for `pstroke.train.loop.train` that saves the last step at once and acts as
    the loop does when `stop_signal` (if any) lands during that step."""
    from pstroke.train.loop import StopRequested

    def train(config, workdir, raise_on_stop=False):
        steps = config.train.steps
        (pathlib.Path(workdir) / "checkpoints" / str(steps)).mkdir(parents=True)
        if stop_signal is not None and raise_on_stop:
            raise StopRequested(stop_signal, steps, steps)
        return {"loss": 1.0}

    return train


def test_stop_in_last_step_ends_demo(tmp_path, monkeypatch):
    from pstroke import demo
    from pstroke.config import load_config
    from pstroke.train import loop

    monkeypatch.setattr(loop, "train", _fake_train("SIGTERM"))
    workdir = tmp_path / "run"
    with pytest.raises(demo.TrainingStopped) as stopped:
        demo.run_demo(load_config("configs/shapes_tiny.py"), workdir, num_prompts=1, samples_per_prompt=1,
                      train_steps=3, pretrained=None)

    message = str(stopped.value)
    assert "SIGTERM received at the last training step" in message
    assert "checkpoint of step 3" in message
    assert "Rerun the same command to sample" in message
    assert not (workdir / "samples").exists()
    assert not (workdir / UNFINISHED_TRAINING_FILE).exists()  # the rerun samples without training


def test_finished_demo_training_clears_marker(tmp_path, monkeypatch):
    from pstroke import demo
    from pstroke.config import load_config
    from pstroke.train import loop

    monkeypatch.setattr(loop, "train", _fake_train(None))
    workdir = tmp_path / "run"
    workdir.mkdir()
    demo.train_demo_model(load_config("configs/shapes_tiny.py"), workdir, 3)

    assert demo.latest_checkpoint_step(workdir) == 3
    assert not (workdir / UNFINISHED_TRAINING_FILE).exists()


def test_copy_pretrained_keeps_its_records(tmp_path):
    from pstroke.demo import copy_pretrained

    source = tmp_path / "pretrained"
    (source / "checkpoints" / "800").mkdir(parents=True)
    for name in ("config.json", "README.md", "metrics.jsonl", "git_revision.txt"):
        (source / name).write_text(name)

    copy_pretrained(source, tmp_path / "run")

    copied = sorted(path.name for path in (tmp_path / "run").iterdir())
    assert copied == ["README.md", "checkpoints", "config.json", "git_revision.txt", "metrics.jsonl"]
    assert (tmp_path / "run" / "checkpoints" / "800").is_dir()
