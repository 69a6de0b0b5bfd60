"""Metric output: TensorBoard events, a JSONL file and a one-line progress report."""

import json
import logging
import pathlib
import time

import tensorboardX

log = logging.getLogger(__name__)


class MetricsWriter:
    """Write scalar metrics to <workdir>/tensorboard and <workdir>/metrics.jsonl.

    Only the process with `enabled` set (process 0) writes; the others keep a no-op writer so
    every process runs the same code. Each JSONL line is {"step": n, name: value, ...}; a resumed
    run appends, so a step may appear twice and the last line for a step is the current one.
    """

    def __init__(self, workdir: pathlib.Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            self.tensorboard = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
            self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self.tensorboard.close()
            self.jsonl.close()


class Progress:
    """Throughput and ETA over the steps since the last report (compilation excluded after the first)."""

    def __init__(self, first_step: int, total_steps: int):
        self.total_steps = total_steps
        self.last_step, self.last_time = first_step, time.perf_counter()
        self.tokens = 0.0

    def add_tokens(self, tokens: float) -> None:
        self.tokens += tokens

    def line(self, step: int, metrics: dict[str, float]) -> str:
        """Return 'step n/N | loss .. ce .. mse .. | tok/s .. | eta ..' and reset the window."""
        now = time.perf_counter()
        elapsed = max(now - self.last_time, 1e-9)
        steps_per_second = (step - self.last_step) / elapsed
        tokens_per_second = self.tokens / elapsed
        remaining = (self.total_steps - step) / steps_per_second if steps_per_second > 0 else float("inf")
        self.last_step, self.last_time, self.tokens = step, now, 0.0
        return (f"step {step}/{self.total_steps} | loss {metrics['loss']:.4f} ce {metrics['ce']:.4f} "
                f"mse {metrics['mse']:.4f} | {tokens_per_second:,.0f} tok/s | eta {_format_seconds(remaining)}")


def _format_seconds(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
