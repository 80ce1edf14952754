"""Checks shared by the fault tests (kill -9, disk full): is every output in a run folder whole, and
was nothing temporary left behind. A plain module, imported by the test files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

JSONL = ("chunks.jsonl", "pairs.jsonl", "eval.jsonl", "work/pairs.built.jsonl", "work/pairs.split.jsonl")
JSON = ("manifest.json", "report.json", "trainer_state.json", "work/before.json", "work/after.json")
NPY = ("work/chunk_embeddings.npy", "work/chunk_embeddings.merged.npy")
CHECKPOINT_FILES = {"state.json", "trainable.safetensors", "optimizer.safetensors", "rng.safetensors"}


def leftovers(folder: Path) -> list[str]:
    """Every hidden file or folder under ``folder`` (temporary names of atomic writes start with ".",
    and so does the run lock), as paths relative to ``folder``."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def assert_whole(run: Path, load_models: bool = False) -> None:
    """Assert every output present under its final name in ``run`` is complete.

    JSON and JSONL files parse to their last line, .npy files load without pickle, each
    ``checkpoints/step-N`` holds all four checkpoint files (tensors readable), weight folders have
    their config; with ``load_models`` the merged folder loads in sentence-transformers and encodes.
    """
    from safetensors.numpy import load_file

    for name in JSONL + JSON:
        path = run / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n"), f"{name} is cut short"
        if name.endswith(".jsonl"):
            for line in text.splitlines():
                json.loads(line)
        else:
            json.loads(text)
    for name in NPY:
        if (run / name).exists():
            assert np.load(run / name, allow_pickle=False).ndim == 2
    for step in (run / "checkpoints").glob("step-*"):
        assert {p.name for p in step.iterdir()} == CHECKPOINT_FILES, f"{step} is incomplete"
        for name in CHECKPOINT_FILES - {"state.json"}:
            load_file(str(step / name))
    if (run / "adapter").exists():
        assert (run / "adapter" / "adapter_config.json").is_file()
        load_file(str(run / "adapter" / "adapter_model.safetensors"))
    if (run / "merged").exists():
        assert (run / "merged" / "modules.json").is_file()
        load_file(str(run / "merged" / "model.safetensors"))
        if load_models:
            from sentence_transformers import SentenceTransformer

            emb = SentenceTransformer(str(run / "merged"), device="cpu").encode(["a whole model"])
            assert np.isfinite(emb).all()
