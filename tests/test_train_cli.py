"""`python -m pstroke.train` as a user runs it: killed and rerun, stopped by SIGTERM, bad input."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = [
    "--config.data.source=synthetic", "--config.data.seq_len=128", "--config.world.canvas=16",
    "--config.model.max_latent_size=4", "--config.model.llm.hidden_size=64",
    "--config.model.llm.intermediate_size=128", "--config.model.llm.num_layers=2",
    "--config.model.llm.head_dim=16", "--config.train.batch_size=4", "--config.train.steps=60",
    "--config.train.checkpoint_every=4", "--config.train.log_every=1", "--config.train.warmup_steps=5",
]


def _command(workdir: pathlib.Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pstroke.train", "--config=configs/shapes_tiny.py", f"--workdir={workdir}",
            *TINY, *extra]


def _env(cache: pathlib.Path | None = None) -> dict:
    """One CPU device, as a user's shell has (the test process itself has 8 fake ones).

    With `cache`, runs share JAX's persistent compilation cache, so only the first one compiles.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""
    env["JAX_PLATFORMS"] = "cpu"
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _losses(workdir: pathlib.Path) -> dict[int, tuple[float, float]]:
    """Map step -> (ce, mse) from metrics.jsonl; a step written twice keeps its last line."""
    losses = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        losses[record["step"]] = (record["ce"], record["mse"])
    return losses


def _saved_steps(workdir: pathlib.Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(path.name) for path in folder.iterdir() if path.name.isdigit()) if folder.is_dir() else []


def _start_and_stop(workdir: pathlib.Path, sig: int, after_step: int, env: dict) -> subprocess.CompletedProcess:
    """Start a run and send `sig` once checkpoint `after_step` or later is committed."""
    log_file = workdir.with_suffix(f".{sig}.log")
    with open(log_file, "w") as log:
        process = subprocess.Popen(_command(workdir), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not any(step >= after_step for step in _saved_steps(workdir)):
        assert process.poll() is None, "run ended before it was stopped"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    process.send_signal(sig)
    process.wait(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, log_file.read_text(), "")


def test_killed_run_resumes_bitwise(tmp_path):
    env = _env(cache=tmp_path / "jax_cache")
    reference = tmp_path / "reference"
    full = subprocess.run(_command(reference), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 61))

    # SIGKILL: no chance to save; the rerun resumes from the last committed checkpoint.
    workdir = tmp_path / "interrupted"
    killed = _start_and_stop(workdir, signal.SIGKILL, after_step=8, env=env)
    assert killed.returncode == -signal.SIGKILL
    assert max(_saved_steps(workdir)) < 60

    # SIGTERM: the run saves the step it reached and exits with status 1, because steps remain.
    stopped = _start_and_stop(workdir, signal.SIGTERM, after_step=max(_saved_steps(workdir)) + 4, env=env)
    assert stopped.returncode == 1, stopped.stdout[-2000:]
    assert "Traceback" not in stopped.stdout
    assert "resumed from checkpoint step" in stopped.stdout
    assert "SIGTERM received: saving after the current step" in stopped.stdout
    assert "SIGTERM received: saved step" in stopped.stdout
    assert max(_saved_steps(workdir)) < 60

    resumed = subprocess.run(_command(workdir), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from checkpoint step" in resumed.stderr
    assert _losses(workdir) == expected


def test_ctrl_c_saves_and_exits_1(tmp_path):
    workdir = tmp_path / "run"
    stopped = _start_and_stop(workdir, signal.SIGINT, after_step=4, env=_env())

    assert stopped.returncode == 1, stopped.stdout[-2000:]
    assert "Traceback" not in stopped.stdout
    saved = max(_saved_steps(workdir))
    assert 4 <= saved < 60
    received = stopped.stdout.index("Ctrl-C received: saving after the current step; press Ctrl-C again")
    assert received < stopped.stdout.index(f"SIGINT received: saved step {saved} of 60 and stopped")


@pytest.mark.parametrize("extra, message", [
    (["--config.mesh.data=3"], r"error: mesh .* has 3 devices but 1 are available; set --config.mesh"),
    (["--config.train.schedule=linear"], r"error: invalid train.schedule 'linear'"),
])
def test_bad_input_prints_one_line(tmp_path, extra, message):
    result = subprocess.run(_command(tmp_path / "run", *extra), cwd=REPO, env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr[-2000:]


def test_unwritable_workdir_prints_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(_command(blocker / "run"), cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "file' is a file, not a folder" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_on_loopback(tmp_path):
    """Two local processes joined by jax.distributed train one model over a 2-device mesh."""
    workdir = tmp_path / "run"
    distributed = ["--distributed", f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2",
                   "--config.train.steps=4", "--config.train.checkpoint_every=2"]
    logs = [tmp_path / f"process_{index}.log" for index in range(2)]
    processes = []
    for index, log in enumerate(logs):
        with open(log, "w") as out:
            processes.append(subprocess.Popen(_command(workdir, *distributed, f"--process_id={index}"), cwd=REPO,
                                              env=_env(), stdout=out, stderr=subprocess.STDOUT))
    for process in processes:
        process.wait(timeout=300)
    outputs = [log.read_text() for log in logs]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-2000:]

    assert "mesh {'data': 2, 'fsdp': 1, 'tensor': 1}" in outputs[0]
    assert sorted(_losses(workdir)) == [1, 2, 3, 4]
    assert _saved_steps(workdir) == [1, 2, 4]
    last_lines = [re.search(r"step 4/4 \| loss \S+ ce \S+ mse \S+", output).group(0) for output in outputs]
    assert last_lines[0] == last_lines[1]
