"""Test setup: 8 simulated CPU devices, and the shared-data fixture.

XLA_FLAGS must be set before jax initialises its backend, so this file sets it
at import time, before any test module imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from golf_jax.paths import shared_data_dir  # noqa: E402


def _has_gpu() -> bool:
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if os.environ.get("JAX_PLATFORMS") == "cpu" or not _has_gpu():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data; skip when absent, but fail under CI=true."""
    path = shared_data_dir()
    if not (path / "tokenizers" / "fineweb_1024_bpe.model").exists():
        message = (
            f"shared data not found at {path} (set GOLF_JAX_SHARED_DATA or place "
            "the shared/ folder beside the repository)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
