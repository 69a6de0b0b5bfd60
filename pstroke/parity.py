"""Check the JAX model against golden fixtures computed with the reference PyTorch BAGEL.

Usage: python -m pstroke.parity --fixtures=tests/assets/bagel_tiny_a [--cases=vit,train]

The fixture folder contains `config.json` (every size and case parameter), `cases.npz` (inputs and
expected outputs, keys `<case>.<name>`), `weights_ema.safetensors` and `weights_ae.safetensors`
(BAGEL key names). Weights load through `pstroke.model.convert`. Each compared array prints one
line with its max absolute and relative error; the exit status is 1 when any float array is off
by more than atol + rtol * |expected| (1e-4 each, float32) or any integer array differs.
"""

import dataclasses
import json
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from pstroke.config import run_cli
from pstroke.errors import UserError, exit_on_user_error
from pstroke.model import convert
from pstroke.model.config import bagel_model

ATOL = 1e-4
RTOL = 1e-4


@dataclasses.dataclass
class Fixture:
    """A loaded fixture folder: model config, converted params, expected arrays and token ids."""

    folder: pathlib.Path
    raw_config: dict
    model_config: object
    params: dict
    ae_params: dict
    arrays: dict
    token_ids: dict

    def get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise UserError(f"missing array {key!r} in {self.folder / 'cases.npz'}")
        return self.arrays[key]


@dataclasses.dataclass
class Report:
    """Results of the comparisons: one (name, max abs error, max rel error, passed) per array."""

    rows: list = dataclasses.field(default_factory=list)

    def compare(self, name: str, got, expected) -> None:
        """Compare `got` with `expected`: exact for integers and bools, allclose for floats."""
        got = np.asarray(got)
        expected = np.asarray(expected)
        if got.shape != expected.shape:
            self.rows.append((name, float("inf"), float("inf"), False))
            print(f"FAIL {name}: shape {list(got.shape)} != expected {list(expected.shape)}")
            return
        if expected.dtype.kind in "biu":
            passed = bool(np.array_equal(got.astype(expected.dtype), expected))
            errors = int(np.sum(got.astype(expected.dtype) != expected))
            print(f"{'ok  ' if passed else 'FAIL'} {name}: {errors} mismatching entries (exact)")
            self.rows.append((name, float(errors), 0.0, passed))
            return
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(expected), 1e-12)).max()) if diff.size else 0.0
        passed = bool(np.all(diff <= ATOL + RTOL * np.abs(expected)))
        print(f"{'ok  ' if passed else 'FAIL'} {name}: max abs err {max_abs:.3e}, max rel err {max_rel:.3e}")
        self.rows.append((name, max_abs, max_rel, passed))

    @property
    def passed(self) -> bool:
        return all(row[3] for row in self.rows)


def load_fixture(folder: pathlib.Path) -> Fixture:
    """Read config.json, cases.npz and both weight files of a fixture folder."""
    folder = pathlib.Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"fixture config not found: {str(config_path)!r}; pass --fixtures=DIR with config.json inside")
    raw = json.loads(config_path.read_text())
    model_config = bagel_model(raw["llm_config"], raw["vit_config"], raw["vae_config"], raw["bagel_config"])
    model_config.compute_dtype = "float32"

    params, ae_params = convert.load_bagel(folder, model_config, "weights_ema.safetensors", "weights_ae.safetensors")
    cases_path = folder / "cases.npz"
    if not cases_path.is_file():
        raise UserError(f"fixture cases not found: {str(cases_path)!r}")
    with np.load(cases_path) as data:
        arrays = {key: data[key] for key in data.files}
    return Fixture(folder, raw, model_config, params, ae_params, arrays, raw["special_token_ids"])


def _cases() -> dict[str, Callable[[Fixture, Report], None]]:
    from pstroke.model import parity_cases

    return parity_cases.CASES


def run(folder: pathlib.Path, case_names: list[str]) -> Report:
    """Run the named cases (all when empty) on a fixture folder; return the report."""
    cases = _cases()
    unknown = [name for name in case_names if name not in cases]
    if unknown:
        raise UserError(f"unknown case {unknown[0]!r}; known cases: {', '.join(cases)}")
    fixture = load_fixture(folder)
    report = Report()
    for name in case_names or list(cases):
        print(f"== {name}")
        cases[name](fixture, report)
    return report


FLAGS = flags.FLAGS
flags.DEFINE_string("fixtures", None, "Fixture folder with config.json, cases.npz and the two weight files.")
flags.DEFINE_list("cases", [], "Comma-separated case names to run; empty runs every case.")


@exit_on_user_error
def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; use --fixtures=DIR [--cases=a,b]")
    if not FLAGS.fixtures:
        raise UserError("missing --fixtures: pass a fixture folder such as tests/assets/bagel_tiny_a")
    jax.config.update("jax_default_matmul_precision", "highest")
    report = run(pathlib.Path(FLAGS.fixtures), FLAGS.cases)
    failed = [row[0] for row in report.rows if not row[3]]
    print(f"{len(report.rows) - len(failed)}/{len(report.rows)} arrays within tolerance")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_cli(main)
