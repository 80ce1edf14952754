"""Test-wide settings: offline, deterministic, quiet."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# tests/ is on sys.path (pytest's rootdir conftest import), so every test can
# ``from tiny_models import ...`` for the no-download tiny models.
