"""`embtune train-reranker`: a reranker from pairs with mined negatives, saved merged; bad input fails on one line."""
from __future__ import annotations

import json

import numpy as np
import torch
from cli_helpers import ok, one_line_error

ROWS = [{"anchor": f"question {i} about proteins", "positive": f"answer {i}: proteins fold into shapes",
         "negative_1": f"unrelated text number {i} on weather"} for i in range(12)]


def _pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_train_reranker_writes_a_plain_cross_encoder_resumes_and_pushes(tmp_path, tiny_model, monkeypatch):
    from huggingface_hub import HfApi
    from sentence_transformers import CrossEncoder

    from embtune.rerankers import load_reranker
    from embtune.rerankers.scoring import score_pairs

    out = tmp_path / "run"
    args = ["train-reranker", "--data", _pairs(tmp_path), "--out", out, "--model", tiny_model, "--loss", "bce",
            "--batch-size", "4", "--max-length", "32", "--save-steps", "2", "--quiet"]
    first = ok(*args)
    assert "reranker in" in first.output and (out / "checkpoints").is_dir()
    pairs = [(r["anchor"], r["positive"]) for r in ROWS[:3]]
    saved = CrossEncoder(str(out / "reranker"), device="cpu")  # plain ST loads it
    ours = load_reranker(out / "reranker", device="cpu", for_inference=True)
    np.testing.assert_allclose(saved.predict(pairs, activation_fn=torch.nn.Identity()), score_pairs(ours, pairs),
                               atol=1e-6)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["status"] == "finished" and state["global_step"] > 0
    again = ok(*args)  # the finished run is found and not trained again
    assert f"trained {state['global_step']} steps" in again.output
    assert json.loads((out / "trainer_state.json").read_text())["resumed_from"]

    uploads = []  # embtune push uploads the reranker folder as it is (the Hub itself is mocked)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: uploads.append(
        sorted(p.name for p in (out / "reranker").iterdir())))
    pushed = ok("push", out / "reranker", "--repo-id", "me/reranker")
    assert pushed.output.startswith("uploaded model ") and "model.safetensors" in uploads[0]


def test_train_reranker_bad_input_is_one_line(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "q", "positive": "p"}\n{"anchor": "q2"\n')
    line = one_line_error("train-reranker", "--data", bad, "--out", tmp_path / "r", "--model", tiny_model)
    assert "bad.jsonl:2:" in line
    line = one_line_error("train-reranker", "--data", _pairs(tmp_path), "--out", tmp_path / "r", "--qlora", "--full")
    assert "--qlora and --full" in line
