"""The from-corpus tests run torch on one thread (their fixtures: ``tests/fixtures_pipeline.py``)."""
from __future__ import annotations

import pytest
from tiny_models import torch_threads


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread for the in-process runs (the subprocess runs get OMP_NUM_THREADS=1)."""
    with torch_threads(1):
        yield
