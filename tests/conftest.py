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
