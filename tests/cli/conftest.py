"""The CLI tests run torch on one thread, as the from-corpus tests do, and share one `embtune train` run
(``trained``); the tiny model and corpus come from ``tests/fixtures_pipeline.py``."""
from __future__ import annotations

import pytest
from cli_helpers import SMALL, Spy, ok, scored_pairs
from tiny_models import torch_threads


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread for the in-process runs (the subprocess runs get OMP_NUM_THREADS=1)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model):
    """One `embtune train` run with every model/LoRA/loss flag set away from its default."""
    root = tmp_path_factory.mktemp("train-flags")
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp)
        ok("train", "--data", scored_pairs(root / "scores.csv"), "--out", root / "run", "--model", tiny_model,
           "--loss", "CoSENT", "--matryoshka-dims", "32,16", "--query-prompt", "query: ", "--document-prompt",
           "passage: ", "--lora-target-modules", "query,value", "--lora-r", "4", "--lora-alpha", "8",
           "--lora-dropout", "0.1", "--lora-compute", "exact", "--dtype", "fp32", "--gradient-checkpointing",
           *SMALL)
    return root / "run", spy
