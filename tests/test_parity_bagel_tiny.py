"""Parity of the JAX model with the reference BAGEL fixtures in tests/assets/bagel_tiny_a."""

import subprocess
import sys

import numpy as np
import pytest

from pstroke import parity
from pstroke.model import parity_cases

FIXTURE_INPUTS = {
    "pixels", "pixels_1", "pixels_2", "image", "decode_in", "cu_seqlens", "prompt_ids", "x_t", "t", "image_hw",
    "query_text_ids", "init_noise", "num_timesteps", "timestep_shift", "cfg_interval", "sequence_length",
    "sample_lens", "split_lens", "attn_modes", "text_ids_a", "text_ids_b", "packed_text_ids",
    "packed_text_indexes", "packed_position_ids", "expert", "ce_loss_indexes", "packed_label_ids",
    "ce_loss_weights", "vit_pixels", "packed_vit_tokens", "packed_vit_position_ids", "packed_vit_token_indexes",
    "vit_token_seqlens", "vae_pixels", "patchified_vae_latent_shapes", "packed_latent_position_ids",
    "packed_vae_token_indexes", "packed_timesteps_logit", "mse_loss_indexes", "noise"}


@pytest.fixture(scope="module")
def case_reports(assets_dir):
    """Run every case once on fixture set A; return (fixture, {case: Report})."""
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    fixture = parity.load_fixture(assets_dir / "bagel_tiny_a")
    reports = {}
    for name, case in parity_cases.CASES.items():
        reports[name] = parity.Report()
        case(fixture, reports[name])
    return fixture, reports


@pytest.mark.parametrize("case", list(parity_cases.CASES))
def test_parity_case_within_tolerance(case_reports, case):
    report = case_reports[1][case]

    failed = [f"{name}: abs {max_abs:.2e} rel {max_rel:.2e}" for name, max_abs, max_rel, ok in report.rows if not ok]
    assert report.rows, f"case {case} compared nothing"
    assert not failed


def test_parity_covers_every_output_key(case_reports):
    fixture, reports = case_reports
    compared = {row[0] for report in reports.values() for row in report.rows}

    outputs = {key for key in fixture.arrays if key.split(".", 1)[1] not in FIXTURE_INPUTS}
    assert outputs - compared == set()


def test_report_flags_float_error():
    report = parity.Report()
    expected = np.ones((3, 4), np.float32)

    report.compare("close", expected + 5e-5, expected)
    report.compare("far", expected + 1e-3, expected)

    assert report.rows[0][3]
    assert not report.rows[1][3]
    assert not report.passed


def test_report_requires_exact_integers():
    report = parity.Report()
    report.compare("ids", np.array([1, 2, 4]), np.array([1, 2, 3]))
    assert not report.passed


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pstroke.parity", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_missing_folder_is_one_line(tmp_path):
    result = _run_cli(f"--fixtures={tmp_path / 'nowhere'}")

    assert result.returncode == 2
    assert "error: fixture config not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_names_missing_key(tmp_path, assets_dir):
    import shutil

    from safetensors.flax import load_file, save_file

    folder = tmp_path / "fixture"
    shutil.copytree(assets_dir / "bagel_tiny_a", folder)
    tensors = load_file(str(folder / "weights_ema.safetensors"))
    del tensors["llm2vae.bias"]
    save_file(tensors, str(folder / "weights_ema.safetensors"))

    result = _run_cli(f"--fixtures={folder}", "--cases=vit")

    assert result.returncode == 2
    assert "missing key 'llm2vae.bias'" in result.stderr
    assert "Traceback" not in result.stderr
