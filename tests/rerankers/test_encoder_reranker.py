"""Encoder rerankers: the model is sentence-transformers' CrossEncoder, scores and losses are ST's.

Every reference below is sentence-transformers itself: ``CrossEncoder(folder)`` loaded by ST from the
saved folder, and ST's cross-encoder losses called directly on the batch the loop trains on.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_rerankers import TRAIN_ROWS
from sentence_transformers import CrossEncoder
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MultipleNegativesRankingLoss

from embtune.errors import ConfigError
from embtune.rerankers import add_lora, load_reranker, rerank, save_reranker
from embtune.rerankers.data import pointwise_pairs
from embtune.rerankers.scoring import score_pairs
from embtune.data import as_pairs_data
from embtune.training import TrainConfig, train
from embtune.training.batching import BatchPlanner, intern_rows

PAIRS = [("what does vacuum do", "VACUUM rebuilds the database file."),
         ("what does vacuum do", "Bananas are yellow."),
         ("is sqlite serverless", "SQLite has no separate server process.")]


def test_scores_equal_sentence_transformers_cross_encoder(tiny_encoder_reranker):
    ours = load_reranker(tiny_encoder_reranker, device="cpu", for_inference=True)
    assert isinstance(ours, CrossEncoder) and ours.num_labels == 1
    reference = CrossEncoder(str(tiny_encoder_reranker), device="cpu")
    expected = reference.predict(PAIRS, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(score_pairs(ours, PAIRS), expected, rtol=0, atol=1e-6)
    # rerank orders one query's documents by those scores, best first
    docs = [d for _, d in PAIRS]
    same_query = reference.predict([(PAIRS[0][0], d) for d in docs], activation_fn=torch.nn.Identity())
    order = rerank(ours, PAIRS[0][0], docs)
    assert [i for i, _ in order] == list(np.argsort(-same_query, kind="stable"))
    assert [s for _, s in order] == pytest.approx(sorted(same_query, reverse=True), abs=1e-6)


def test_fresh_head_on_an_embedder_folder_is_a_one_logit_classifier():
    from tiny_models import minilm_path

    model = load_reranker(minilm_path(), device="cpu", max_length=32)
    assert type(model[0].model).__name__ == "BertForSequenceClassification"
    assert model.num_labels == 1 and model.max_length == 32
    assert not any(p.requires_grad for p in model.parameters())


def _first_batch(rows, batch_size, seed):
    _, row_ids = intern_rows([tuple(r[c] for c in ("query", "document")) if isinstance(r, dict) else r
                              for r in rows])
    return BatchPlanner(row_ids, batch_size, seed).batches(0)[0]


def test_bce_loss_in_the_loop_equals_st_loss_on_the_same_batch(tmp_path, tiny_encoder_reranker):
    labelled = pointwise_pairs(as_pairs_data([row[:3] for row in TRAIN_ROWS]))
    assert [r["label"] for r in labelled.rows[:2]] == [1.0, 0.0] and len(labelled.rows) == 8
    first = _first_batch(labelled.rows, 4, seed=7)
    batch = [labelled.rows[i] for i in first]
    reference = load_reranker(tiny_encoder_reranker, device="cpu")
    with torch.no_grad():
        expected = BinaryCrossEntropyLoss(reference)([[r["query"] for r in batch], [r["document"] for r in batch]],
                                                     torch.tensor([r["label"] for r in batch]))
    model = load_reranker(tiny_encoder_reranker, device="cpu", full_finetuning=True)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=1, seed=7, logging_steps=1,
                         show_progress=False)
    result = train(model, [row[:3] for row in TRAIN_ROWS], loss="bce", config=config)
    assert result.loss_history[0][1] == pytest.approx(float(expected), rel=1e-5)


def test_listwise_loss_in_the_loop_equals_st_loss_on_the_same_batch(tmp_path, tiny_encoder_reranker):
    first = _first_batch([r[:2] for r in TRAIN_ROWS], 4, seed=3)
    batch = [TRAIN_ROWS[i] for i in first]
    reference = load_reranker(tiny_encoder_reranker, device="cpu")
    columns = [list(col) for col in zip(*batch)]
    with torch.no_grad():
        expected = MultipleNegativesRankingLoss(reference, num_negatives=None)(columns, None)
    model = load_reranker(tiny_encoder_reranker, device="cpu", full_finetuning=True)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=1, seed=3, logging_steps=1,
                         show_progress=False, loss_kwargs={"num_negatives": None})
    result = train(model, TRAIN_ROWS, loss="listwise", config=config)
    assert result.loss_history[0][1] == pytest.approx(float(expected), rel=1e-5)


def test_lora_trains_adapter_and_head_and_merged_save_scores_the_same(tmp_path, tiny_encoder_reranker):
    model = load_reranker(tiny_encoder_reranker, device="cpu")
    add_lora(model, r=4, lora_alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    before = score_pairs(model, PAIRS)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, epochs=3, learning_rate=5e-3,
                         show_progress=False)
    result = train(model, TRAIN_ROWS, loss="bce", config=config)
    assert result.loss_history[-1][1] < result.loss_history[0][1] or len(result.loss_history) == 1
    after = score_pairs(model, PAIRS)
    assert not np.allclose(before, after)
    save_reranker(model, tmp_path / "merged")
    reloaded = CrossEncoder(str(tmp_path / "merged"), device="cpu")  # plain ST, no embtune
    np.testing.assert_allclose(reloaded.predict(PAIRS, activation_fn=torch.nn.Identity()), after, atol=1e-5)
    assert not any("lora" in k for k in reloaded.state_dict())


def test_bad_arguments_are_config_errors(tiny_encoder_reranker):
    with pytest.raises(ConfigError, match="exclude each other"):
        load_reranker(tiny_encoder_reranker, load_in_4bit=True, full_finetuning=True)
    with pytest.raises(ConfigError, match="decoder rerankers"):
        load_reranker(tiny_encoder_reranker, device="cpu", instruction="find it")
    model = load_reranker(tiny_encoder_reranker, device="cpu", full_finetuning=True)
    with pytest.raises(ConfigError, match="unknown reranker loss"):
        train(model, TRAIN_ROWS, loss="cosent", config=TrainConfig(output_dir="unused", show_progress=False))
