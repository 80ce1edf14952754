"""Test-wide settings: offline, deterministic, quiet."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Per-machine measurements (attention choice ...) go to a folder of this test session, not ~/.cache;
# worker processes the tests start inherit it.
os.environ["EMBTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="embtune-test-cache-")

# tests/ is on sys.path (pytest's rootdir conftest import), so every test can
# ``from tiny_models import ...`` for the no-download tiny models.

# Fixtures shared across packages' tests (session-scoped, built only when a test asks for them).
from fixtures_corpus import encode_queries, minilm, scifact_slice, slice_chunks, slice_embeddings  # noqa: E402,F401
from fixtures_models import tiny_st_factory  # noqa: E402,F401
from fixtures_pipeline import small_corpus, tiny_model  # noqa: E402,F401
from fixtures_export import (export_root, merged_minilm, minilm_folders, qwen_pretokenizer_merged,  # noqa: E402,F401
                             tiny_merged, unigram_xlmr_merged)
