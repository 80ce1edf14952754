"""Activation checkpointing: ``TrainConfig.gradient_checkpointing``, ``embtune.training.activation_checkpointing``.

Tiny random-init FastSentenceTransformers on the packed (padding-free) path, with LoRA or QLoRA: with
checkpointing the loss and every trainable gradient equal those without, every transformer layer's
inner modules run twice per forward (the recompute in the backward) instead of once, and after
training the model is back as it was. The BERT keeps its dropout (0.1), so equal numbers also show
that the recompute replays the same dropout masks.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from tiny_models import TRAIN_DOCS, TRAIN_QUERIES, build_tiny_hf, randomize_lora_b, torch_threads

from embtune.errors import ConfigError
from embtune.training import TrainConfig
from embtune.training.activation_checkpointing import (activation_checkpointing, checkpointable_models,
                                                       is_checkpointing)

TEXTS = (["what makes proteins fold", "is coffee bad for the heart now"],
         ["Hydrophobic collapse drives protein folding.", "Moderate coffee intake shows no cardiac harm."])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls gain nothing from threads; one keeps the file fast on a busy 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Plain HF folders of a tiny BERT (dropout 0.1, hidden 64: QLoRA's nf4 blocks fit) and a tiny Qwen3."""
    root = tmp_path_factory.mktemp("checkpointing")
    return {family: build_tiny_hf(root / family, family) for family in ("bert", "qwen3")}


def make(folders, family: str = "bert", qlora: bool = False):
    """A tiny FastSentenceTransformer in fp32 on CPU with LoRA r4 (random B, so A gets gradients too)."""
    from embtune import FastSentenceTransformer

    model = FastSentenceTransformer.from_pretrained(folders[family], dtype=torch.float32, device="cpu",
                                                    load_in_4bit=qlora)
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    randomize_lora_b(model)
    assert model[0].packing  # the padding-free path is the one under test
    return model


def layers(model) -> list[torch.nn.Module]:
    """The transformer blocks transformers checkpoints (``GradientCheckpointingLayer`` instances)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    found = [m for m in model.hf_model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(found) == model.hf_model.config.num_hidden_layers
    return found


@contextmanager
def counting(model):
    """Count the forward calls of each layer's first submodule (its attention). transformers checkpoints a
    layer's ``forward``, not its ``__call__``, so hooks on the layer itself fire once either way; the
    submodules inside are called again by the recompute. Yields ``{"calls": [per layer], "shapes": set}``
    (shapes of the hidden states entering the attention: ``[1, tokens, hidden]`` when packed)."""
    seen = {"calls": [0] * len(layers(model)), "shapes": set()}
    handles = []
    for index, layer in enumerate(layers(model)):
        def hook(module, args, kwargs, index=index):
            seen["calls"][index] += 1
            hidden = args[0] if args else kwargs["hidden_states"]
            seen["shapes"].add(tuple(hidden.shape[:2]))
        handles.append(next(layer.children()).register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def loss_and_grads(model, seed: int = 5):
    """One InfoNCE forward + backward in train mode (dropout on, seeded). Out: (loss, {name: grad})."""
    from embtune.losses import InfoNCELoss

    model.train()
    torch.manual_seed(seed)
    loss = InfoNCELoss(model, scale=20.0)([model.preprocess(list(t)) for t in TEXTS])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def assert_same_step(folders, family: str, qlora: bool = False) -> None:
    """Loss and every LoRA gradient with checkpointing equal those without; the recompute happened.

    The checkpointed step runs first, so whatever the packed forward sets up on first use (e.g. a
    per-machine choice of attention implementation) is set up inside a checkpointed layer."""
    model = make(folders, family, qlora)
    with activation_checkpointing(model) as switched, counting(model) as twice:
        assert switched == [model.hf_model] and is_checkpointing(model.hf_model)
        loss, grads = loss_and_grads(model)
    assert not is_checkpointing(model.hf_model)
    plain = make(folders, family, qlora)
    with counting(plain) as once:
        ref_loss, ref_grads = loss_and_grads(plain)
    forwards = len(TEXTS)  # queries, then documents
    assert once["calls"] == [forwards] * len(once["calls"])
    assert twice["calls"] == [2 * forwards] * len(twice["calls"])  # each layer run again in the backward
    assert {shape[0] for shape in once["shapes"] | twice["shapes"]} == {1}  # packed: one [1, T] stream
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
    assert grads.keys() == ref_grads.keys() and len(grads) >= 4 * len(layers(model))
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("family", ["bert", "qwen3"])
def test_lora_step_equals_the_step_without_checkpointing(folders, family):
    assert_same_step(folders, family)


@pytest.mark.slow  # a fresh process: ~6-13 s
def test_first_checkpointed_step_on_a_machine_with_nothing_cached(folders, tmp_path):
    """In a fresh process with an empty embtune cache (``EMBTUNE_CACHE_DIR``), the very first forward
    runs checkpointed: anything measured or cached on first use happens inside the checkpointed layer
    and must not upset the recompute."""
    here = Path(__file__).resolve().parent
    code = ("import sys; sys.path[:0] = sys.argv[1:3]; import torch; torch.set_num_threads(1); "
            "import test_activation_checkpointing as t; t.assert_same_step({'bert': sys.argv[3]}, 'bert')")
    env = {**os.environ, "EMBTUNE_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code, str(here.parent), str(here), folders["bert"]], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_qlora_step_equals_the_step_without_checkpointing(folders):
    model = make(folders, "bert", qlora=True)
    assert any(type(m).__name__ == "Linear4bit" for m in model.hf_model.modules())
    assert_same_step(folders, "bert", qlora=True)


def _config(tmp_path, name: str, **kwargs) -> TrainConfig:
    kwargs = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0.0,
              "show_progress": False, **kwargs}
    return TrainConfig(output_dir=tmp_path / name, **kwargs)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_train_checkpoints_for_the_run_only_and_learns_the_same(folders, tmp_path):
    from embtune.training import train

    data = list(zip(TRAIN_QUERIES, TRAIN_DOCS))
    plain = make(folders)
    with counting(plain) as once:
        ref = train(plain, data, config=_config(tmp_path, "plain"))
    model = make(folders)
    embed_hooks = len(model.hf_model.get_input_embeddings()._forward_hooks)
    with counting(model) as twice:
        result = train(model, data, config=_config(tmp_path, "checkpointed", gradient_checkpointing=True))
    assert once["calls"][0] == 2 * 2  # 2 steps x (queries, documents)
    assert twice["calls"] == [2 * c for c in once["calls"]]  # the loop really checkpointed
    assert result.loss_history == ref.loss_history
    expected = _trainable(plain)
    for name, value in _trainable(model).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-7, msg=name)
    # switched off again: no checkpointing, no input-grad hook, encoding unchanged
    assert not is_checkpointing(model.hf_model)
    assert len(model.hf_model.get_input_embeddings()._forward_hooks) == embed_hooks
    with counting(model) as after:
        embeddings = model.encode(TRAIN_QUERIES, convert_to_tensor=True)
    assert after["calls"] == [1] * len(after["calls"])
    torch.testing.assert_close(embeddings, plain.encode(TRAIN_QUERIES, convert_to_tensor=True))


def test_a_run_resumes_with_checkpointing_switched_on(folders, tmp_path):
    """The setting changes no number, so it is not in the checkpoint fingerprint: a run saved without it
    (say, before running out of memory) continues with it, to the same weights; evaluation during the
    checkpointed run (eval mode, no grad) works."""
    from embtune.training import train

    data = list(zip(TRAIN_QUERIES, TRAIN_DOCS))
    first = make(folders)
    train(first, data, config=_config(tmp_path, "run", save_steps=1, save_total_limit=None))
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-2")
    again = make(folders)
    corpus = {f"d{i}": doc for i, doc in enumerate(TRAIN_DOCS)}
    queries = {f"q{i}": q for i, q in enumerate(TRAIN_QUERIES)}
    evaluation = (corpus, queries, {f"q{i}": {f"d{i}": 1} for i in range(len(queries))})
    result = train(again, data, config=_config(tmp_path, "run", save_steps=1, save_total_limit=None,
                                                gradient_checkpointing=True), eval_data=evaluation)
    assert result.resumed_from is not None and result.resumed_from.name == "step-1"
    assert [step for step, _ in result.eval_history] == [2] and "ndcg@10" in result.eval_history[0][1]
    expected = _trainable(first)
    for name, value in _trainable(again).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_setting_is_checked(tmp_path):
    assert TrainConfig(output_dir=tmp_path).gradient_checkpointing is False
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        TrainConfig(output_dir=tmp_path, gradient_checkpointing="yes")
    with pytest.raises(ConfigError, match="holds none"):
        checkpointable_models(torch.nn.Linear(2, 2))


def test_a_model_transformers_cannot_checkpoint_is_refused_before_training(tmp_path):
    from embtune import FastSentenceTransformer
    from embtune.training import train

    model = FastSentenceTransformer.from_pretrained(build_tiny_hf(tmp_path / "mpnet", "mpnet"), device="cpu")
    model = FastSentenceTransformer.get_peft_model(model, r=4)
    with pytest.raises(ConfigError, match="MPNetModel does not support"):
        train(model, list(zip(TRAIN_QUERIES, TRAIN_DOCS)),
              config=_config(tmp_path, "run", gradient_checkpointing=True))
    assert not (tmp_path / "run").exists()  # refused before any work
