"""A killed reranker run resumes exactly: same weights, optimizer state and loss history as a run
that was never interrupted (the embedder's checkpoint format and fingerprint, applied to a CrossEncoder)."""
from __future__ import annotations

import json

import pytest
import torch
from tiny_rerankers import TRAIN_ROWS
from safetensors.torch import load_file
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

from embtune.errors import TrainingError
from embtune.rerankers import add_lora, load_reranker
from embtune.training import TrainConfig, train


class _Crash(Exception):
    """Stands for the process dying (kill -9, OOM) in the middle of a step."""


class CrashingBCE(BinaryCrossEntropyLoss):
    """ST's BCE loss that raises on its ``at``-th call (1-based)."""

    def __init__(self, model, at=None):
        super().__init__(model)
        self.at, self.calls = at, 0

    def forward(self, inputs, labels, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise _Crash()
        return super().forward(inputs, labels, **kwargs)


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_killed_reranker_run_resumes_to_the_uninterrupted_weights(tmp_path, tiny_encoder_reranker):
    # 4 rows x (1 positive + 2 negatives) = 12 labelled pairs in batches of at most 3 (pairs sharing a
    # query go to different batches)
    settings = dict(batch_size=3, epochs=2, save_steps=3, learning_rate=5e-3, logging_steps=1,
                    show_progress=False, seed=5)

    def run(folder, crash_at=None):
        model = load_reranker(tiny_encoder_reranker, device="cpu")  # a fresh process
        add_lora(model, r=4, lora_alpha=8, lora_dropout=0.1)  # dropout: the RNG state must be restored too
        config = TrainConfig(output_dir=str(tmp_path / folder), **settings)
        return model, train(model, TRAIN_ROWS, loss=CrashingBCE(model, at=crash_at), config=config)

    model_a, result_a = run("a")
    total = result_a.global_step
    assert total > 5
    with pytest.raises(_Crash):
        run("b", crash_at=5)  # dies in step 5, after the step-3 checkpoint
    checkpoints = tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3"]
    assert json.loads((tmp_path / "b" / "trainer_state.json").read_text())["status"] == "interrupted"

    model_c, result_c = run("b")
    assert result_c.resumed_from == checkpoints / "step-3" and result_c.global_step == total
    final_a, final_c = _trainable(model_a), _trainable(model_c)
    assert final_a.keys() == final_c.keys() and any("modules_to_save" in n for n in final_a)
    assert all(torch.equal(final_a[n], final_c[n]) for n in final_a), "resumed weights differ"
    assert result_c.loss_history == result_a.loss_history
    opt_a = load_file(str(tmp_path / "a" / "checkpoints" / f"step-{total}" / "optimizer.safetensors"))
    opt_c = load_file(str(checkpoints / f"step-{total}" / "optimizer.safetensors"))
    assert opt_a.keys() == opt_c.keys() and all(torch.equal(opt_a[k], opt_c[k]) for k in opt_a)


def test_checkpoint_of_another_reranker_loss_is_refused(tmp_path, tiny_encoder_reranker):
    model = load_reranker(tiny_encoder_reranker, device="cpu", full_finetuning=True)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=1, show_progress=False)
    train(model, TRAIN_ROWS, loss="bce", config=config)
    model = load_reranker(tiny_encoder_reranker, device="cpu", full_finetuning=True)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=2, show_progress=False,
                         resume=True)
    with pytest.raises(TrainingError, match="loss"):
        train(model, TRAIN_ROWS, loss="listwise", config=config)
