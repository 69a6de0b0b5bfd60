"""Test set-up shared by every test: 8 fake CPU devices, so sharding code runs from the start.

The flags must be set before jax is imported anywhere, which is why they live at the top of this
file and not in a fixture.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

ASSETS = pathlib.Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def assets_dir() -> pathlib.Path:
    """Folder of the test assets committed under tests/assets."""
    return ASSETS


@pytest.fixture(scope="session")
def random_workdir(tmp_path_factory) -> pathlib.Path:
    """A training workdir (step-0 checkpoint) of the tiny test config with random parameters that draw
    visible images. Tests that change the workdir copy it first."""
    from pstroke.rollout import testing

    path = tmp_path_factory.mktemp("random_workdir")
    config = testing.tiny_config()
    testing.write_workdir(path, config, params=testing.random_params(config))
    return path
