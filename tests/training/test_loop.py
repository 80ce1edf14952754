"""embtune.train: learning, no-duplicate batches, schedule, accumulation, exact resume, refusals, failures.

Models are tiny random BERTs (hidden 64, 2 layers, BERT's default dropout 0.1) with a LoRA adapter,
from ``tiny_models.build_tiny_st``; data are SciFact train pairs.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tiny_models import build_tiny_st
from tiny_models import scifact_dir, torch_threads

from embtune.errors import ConfigError, TrainingError
from embtune.losses import get_loss
from embtune.training import TrainConfig, TrainResult, train
from embtune.training.batching import BatchPlanner, intern_rows
from embtune.training.features import DOCUMENT, QUERY, FeatureCache, role_prompt
from embtune.training.loop import accumulate_gradients
from embtune.training.schedule import Schedule, lr_factor, warmup_steps_for

CHECKPOINT_FILES = {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls gain nothing from threads, and on a busy 2-core machine OpenMP's spin-waiting makes
    them ~100x slower; one thread keeps this file fast and its numbers stable."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-backbones")


@pytest.fixture
def make_model(backbones):
    def make(**kwargs):
        kwargs.setdefault("lora", True)
        return build_tiny_st(backbones, **kwargs)
    return make


@pytest.fixture(scope="module")
def scifact_pairs() -> list[tuple[str, str]]:
    from embtune.data import load_beir

    return load_beir(scifact_dir()).pairs("train")


@pytest.fixture(scope="module")
def unique_pairs(scifact_pairs) -> list[tuple[str, str]]:
    """SciFact pairs in which no query and no document repeats (so every epoch has the same batches)."""
    seen, out = set(), []
    for query, doc in scifact_pairs:
        if query not in seen and doc not in seen:
            seen.update((query, doc))
            out.append((query, doc))
    return out


def _config(tmp_path, **kwargs) -> TrainConfig:
    kwargs.setdefault("show_progress", False)
    kwargs.setdefault("output_dir", tmp_path / "run")
    return TrainConfig(**kwargs)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class _Crash(Exception):
    """Stands for the process dying (kill -9, OOM, power cut) in the middle of a step."""


class ScriptedLoss(nn.Module):
    """embtune's InfoNCE loss that misbehaves on call number ``at``: raises _Crash, returns NaN, or
    returns a finite loss whose gradient is NaN. Also records the features it was called with."""

    needs_labels = False

    def __init__(self, model, at: int | None = None, action: str = "crash"):
        super().__init__()
        self.model = model
        self.inner = get_loss("infonce", model)
        self.at, self.action, self.calls, self.seen, self.modes = at, action, 0, [], []

    def forward(self, features, labels=None):
        self.calls += 1
        self.modes.append(self.model.training)
        self.seen.append([{k: v.clone() for k, v in f.items() if k in ("input_ids", "attention_mask")}
                          for f in features])
        value = self.inner(features, labels)
        if self.calls == self.at:
            if self.action == "crash":
                raise _Crash(f"simulated crash in loss call {self.calls}")
            if self.action == "nan":
                return value * float("nan")
            if self.action == "nan_grad":  # d sqrt(x)/dx at 0 is inf; inf * 0 = NaN in every LoRA grad
                zero = sum((p * 0).sum() for p in self.model.parameters() if p.requires_grad)
                return value + torch.sqrt(zero)
        return value


def _fixed_loss(model, pairs) -> float:
    """InfoNCE over fixed batches of 16 in eval mode (no dropout): comparable before and after training."""
    loss = get_loss("infonce", model)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(pairs), 16):
            chunk = pairs[i:i + 16]
            q = model.encode_query([a for a, _ in chunk], convert_to_tensor=True)
            d = model.encode_document([p for _, p in chunk], convert_to_tensor=True)
            total += float(loss.compute_loss_from_embeddings([q, d], None))
    return total / math.ceil(len(pairs) / 16)


# --------------------------------------------------------------------------------------------------


def test_loss_falls_and_only_trainable_params_change(tmp_path, make_model, scifact_pairs):
    model = make_model()
    pairs = scifact_pairs[:64]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = _trainable(model)
    before = _fixed_loss(model, pairs)
    result = train(model, pairs, loss="infonce",
                   config=_config(tmp_path, batch_size=16, max_steps=30, learning_rate=1e-2, logging_steps=5))
    after = _fixed_loss(model, pairs)
    assert after < 0.75 * before, (before, after)
    assert isinstance(result, TrainResult)
    assert result.global_step == 30 and [s for s, _ in result.loss_history] == [5, 10, 15, 20, 25, 30]
    first, last = result.loss_history[0][1], result.loss_history[-1][1]
    assert last < first and result.final_loss == last
    planner, done, epochs = BatchPlanner(intern_rows(pairs)[1], 16, seed=42), 0, 0
    while done + len(planner.batches(epochs)) <= 30:  # shared texts make some epochs longer than 4 batches
        done, epochs = done + len(planner.batches(epochs)), epochs + 1
    assert result.epochs_completed == epochs and result.train_samples_per_second > 0
    assert result.last_checkpoint == tmp_path / "run" / "checkpoints" / "step-30"
    assert not model.training
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in frozen.items())
    changed = {n for n, p in lora.items() if not torch.equal(p, dict(model.named_parameters())[n])}
    assert changed == {n for n in lora if ".pooler." not in n}  # BERT's pooler is outside ST's forward
    summary = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 30


def test_batches_never_repeat_a_text_and_use_role_prompts(tmp_path, make_model):
    # 10 queries and 7 documents shared by 40 rows; "bridge" is a query in one row, a document in another.
    rows = [(f"question {i % 10}", f"document {i % 7}") for i in range(40)]
    rows += [("bridge text", "answer a"), ("question b", "bridge text")]
    texts, row_ids = intern_rows(rows)
    planner = BatchPlanner(row_ids, batch_size=8, seed=3)
    assert planner.has_shared_texts
    for epoch in range(3):
        plan = planner.batches(epoch)
        assert sorted(r for batch in plan for r in batch) == list(range(len(rows)))
        for batch in plan:
            batch_texts = [t for r in batch for t in rows[r]]
            assert len(batch_texts) == len(set(batch_texts)), batch_texts
    assert BatchPlanner(row_ids, 8, 3).batches(2) == planner.batches(2)  # a function of seed and epoch only
    assert planner.batches(0) != planner.batches(1)

    prompts = {"query": "search query: ", "document": "search document: "}
    model = make_model(prompts=prompts)
    loss = ScriptedLoss(model)
    result = train(model, rows, loss=loss, config=_config(tmp_path, batch_size=8, epochs=2))
    assert result.epochs_completed == 2
    assert sum(call[0]["input_ids"].shape[0] for call in loss.seen) == 2 * len(rows)
    tokenizer = model.tokenizer
    query_ids = tokenizer(prompts["query"], add_special_tokens=False)["input_ids"]
    doc_ids = tokenizer(prompts["document"], add_special_tokens=False)["input_ids"]
    for call in loss.seen:
        sequences = []
        for column, prefix in zip(call, (query_ids, doc_ids)):
            for ids, mask in zip(column["input_ids"].tolist(), column["attention_mask"].tolist()):
                real = [i for i, m in zip(ids, mask) if m]
                assert real[1:1 + len(prefix)] == prefix  # after [CLS]: the role's prompt
                sequences.append(tuple(real[1 + len(prefix):]))
        assert len(sequences) == len(set(sequences))


def test_schedule_values():
    assert warmup_steps_for(10, 0.1) == 1 and warmup_steps_for(10, 0.15) == 2
    assert warmup_steps_for(10, 0.1, warmup_steps=3) == 3 and warmup_steps_for(5, 0.0, warmup_steps=9) == 5
    linear = [lr_factor(s, 10, 2, "linear") for s in range(10)]
    assert linear[:4] == [0.5, 1.0, 1.0, 0.875] and linear[-1] == pytest.approx(0.125)
    assert all(a > b for a, b in zip(linear[2:], linear[3:]))
    assert lr_factor(2, 10, 2, "cosine") == 1.0 and lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 5, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(0, 4, 0, "linear") == 1.0
    assert Schedule(2e-4, 10, 2, "linear").lr(0) == pytest.approx(1e-4)


def test_accumulation_gives_mean_gradient_of_micro_batches(tmp_path, make_model, unique_pairs):
    model = make_model()
    model.eval()  # no dropout: each micro-batch's gradient is reproducible on its own
    loss_fn = get_loss("infonce", model)
    params = [p for n, p in model.named_parameters() if p.requires_grad and ".pooler." not in n]

    def features(chunk):
        return [model.preprocess([a for a, _ in chunk], task="query"),
                model.preprocess([d for _, d in chunk], task="document")]

    micro = [(features(unique_pairs[i:i + 4]), None) for i in (0, 4, 8)]
    single = []
    for feats, _ in micro:
        model.zero_grad(set_to_none=True)
        loss_fn(features_copy(feats), None).backward()
        single.append([p.grad.clone() for p in params])
    model.zero_grad(set_to_none=True)
    mean_loss = accumulate_gradients(loss_fn, [(features_copy(f), None) for f, _ in micro], 3)
    for i, p in enumerate(params):
        expected = (single[0][i] + single[1][i] + single[2][i]) / 3
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-8)
    with torch.no_grad():
        losses = [float(loss_fn(features_copy(f), None)) for f, _ in micro]
    assert mean_loss == pytest.approx(sum(losses) / 3, rel=1e-6)

    # In the loop: 5 micro-batches of 8 with accumulation 2 are 3 optimizer steps per epoch.
    result = train(make_model(), unique_pairs[:40],
                   config=_config(tmp_path, batch_size=8, gradient_accumulation_steps=2, epochs=2))
    assert result.global_step == 6 and result.epochs_completed == 2


def features_copy(features):
    """The model writes its outputs into the features dict; give each call a fresh one."""
    return [dict(f) for f in features]


def test_exact_resume_after_crash_matches_uninterrupted_run(tmp_path, make_model, unique_pairs):
    data = unique_pairs[:48]  # 6 micro-batches of 8, accumulation 2: 3 steps per epoch, 2 calls per step
    settings = dict(batch_size=8, gradient_accumulation_steps=2, max_steps=6, save_steps=3,
                    learning_rate=5e-3, logging_steps=2)

    def run(folder: str, crash_at: int | None = None):
        model = make_model()  # a fresh process: new model object, LoRA at its initial weights
        config = _config(tmp_path, output_dir=tmp_path / folder, **settings)
        return model, train(model, data, loss=ScriptedLoss(model, at=crash_at), config=config)

    model_a, result_a = run("a")
    assert result_a.global_step == 6
    with pytest.raises(_Crash):  # dies in the first loss call of step 5, after the step-3 checkpoint
        run("b", crash_at=9)
    checkpoints = tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3"]
    summary = json.loads((tmp_path / "b" / "trainer_state.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == 4
    (checkpoints / ".step-6.killed.tmp").mkdir()  # what kill -9 during a checkpoint write leaves

    model_c, result_c = run("b")
    assert result_c.resumed_from == checkpoints / "step-3" and result_c.global_step == 6
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3", "step-6"]
    final_a, final_c = _trainable(model_a), _trainable(model_c)
    assert final_a.keys() == final_c.keys()
    assert all(torch.equal(final_a[n], final_c[n]) for n in final_a), "resumed weights differ"
    assert result_c.loss_history == result_a.loss_history
    opt_a = load_file(str(tmp_path / "a" / "checkpoints" / "step-6" / "optimizer.safetensors"))
    opt_c = load_file(str(checkpoints / "step-6" / "optimizer.safetensors"))
    assert opt_a.keys() == opt_c.keys() and all(torch.equal(opt_a[k], opt_c[k]) for k in opt_a)

    # A rerun of the finished run does no step and leaves the model with the final weights.
    model_d, result_d = run("b")
    assert result_d.global_step == 6 and result_d.train_samples_per_second == 0.0
    assert all(torch.equal(final_a[n], p) for n, p in _trainable(model_d).items())


def test_resume_refuses_checkpoint_of_another_run(tmp_path, make_model, unique_pairs):
    data = unique_pairs[:16]
    train(make_model(), data, config=_config(tmp_path, batch_size=8, max_steps=2))
    with pytest.raises(TrainingError, match=r"learning_rate: checkpoint 0\.0002, now 0\.001"):
        train(make_model(), data, config=_config(tmp_path, batch_size=8, max_steps=2, learning_rate=1e-3))
    with pytest.raises(TrainingError, match="trainable parameters differ"):
        train(make_model(lora_r=8), data, config=_config(tmp_path, batch_size=8, max_steps=2))
    with pytest.raises(TrainingError, match="training data differs"):
        train(make_model(), unique_pairs[16:32], config=_config(tmp_path, batch_size=8, max_steps=2))
    with pytest.raises(TrainingError, match="total_steps: checkpoint 2, now 4"):
        train(make_model(), data, config=_config(tmp_path, batch_size=8, max_steps=4))
    with pytest.raises(ConfigError, match="resume=True"):
        train(make_model(), data, config=_config(tmp_path, batch_size=8, max_steps=2, resume=False))
    summary = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 2  # refusals leave the run alone


@pytest.mark.parametrize("action, step, reason", [("nan", 4, "the loss is nan"),
                                                   ("nan_grad", 4, "the gradient norm is nan")])
def test_non_finite_loss_or_gradient_stops_at_its_step(tmp_path, make_model, unique_pairs, action, step,
                                                       reason):
    model = make_model()
    config = _config(tmp_path, batch_size=8, max_steps=6, save_steps=3)
    with pytest.raises(TrainingError, match=f"training stopped at step {step}: {reason}") as err:
        train(model, unique_pairs[:48], loss=ScriptedLoss(model, at=step, action=action), config=config)
    assert "step-3" in str(err.value)  # names the last good checkpoint
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3"]
    summary = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert summary["status"] == "failed" and f"step {step}" in summary["error"]
    assert not model.training


def test_checkpoints_are_pruned_and_hold_only_trainable_params(tmp_path, make_model, unique_pairs):
    model = make_model()
    config = _config(tmp_path, batch_size=8, max_steps=4, save_steps=1, save_total_limit=2,
                     warmup_steps=1, scheduler="cosine")
    result = train(model, unique_pairs[:32], config=config)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3", "step-4"]
    folder = result.last_checkpoint
    assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES  # safetensors + JSON, no pickle
    stored = load_file(str(folder / "trainable.safetensors"))
    trainable = _trainable(model)
    assert stored.keys() == trainable.keys() and all("lora_" in n for n in stored)
    assert all(torch.equal(stored[n], trainable[n]) for n in stored)
    assert len(stored) < sum(1 for _ in model.parameters())
    state = json.loads((folder / "state.json").read_text())
    assert state["progress"]["global_step"] == 4 and state["progress"]["epoch"] == 1
    last_lr = Schedule(config.learning_rate, 4, 1, "cosine").lr(3)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last_lr)


@pytest.mark.parametrize("family, padding_side", [("bert", None), ("qwen3", "left")])
def test_feature_cache_equals_preprocess(backbones, family, padding_side):
    prompts = {"query": "Instruct: find the abstract\nQuery: ", "document": "Passage: "}
    model = build_tiny_st(backbones, family, prompts=prompts, padding_side=padding_side, max_seq_length=24)
    assert role_prompt(model, QUERY) == prompts["query"]
    assert role_prompt(model, DOCUMENT) == prompts["document"]
    texts = ["short", "a somewhat longer sentence about proteins", "x " * 80, "cells divide", "short again"]
    cache = FeatureCache(model, texts, {QUERY: [0, 1, 2, 3], DOCUMENT: [1, 2, 4]}, chunk_size=2)
    assert sorted(cache.cached_roles) == [DOCUMENT, QUERY]  # the cached path is the one under test
    for role, ids in ((QUERY, [3, 0, 2]), (QUERY, [1]), (DOCUMENT, [4, 2, 1]), (DOCUMENT, [4])):
        got = cache.collate(role, ids)
        want = model.preprocess([texts[i] for i in ids], prompt=role_prompt(model, role), task=role)
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == got[key].dtype and torch.equal(value, got[key]), (role, key)
            else:
                assert got[key] == value


def test_eval_runs_every_eval_steps_and_at_the_end(tmp_path, make_model, unique_pairs):
    calls = []

    def evaluator(model):
        calls.append(model.training)
        return {"score": len(calls)}

    model = make_model()
    loss = ScriptedLoss(model)
    result = train(model, unique_pairs[:16], loss=loss, eval_data=evaluator,
                   config=_config(tmp_path, batch_size=4, max_steps=5, eval_steps=2))
    assert result.eval_history == [(2, {"score": 1.0}), (4, {"score": 2.0}), (5, {"score": 3.0})]
    assert calls == [False, False, False]  # evaluated in eval mode (no dropout) ...
    assert len(loss.modes) == 5 and all(loss.modes)  # ... and every step trained in train mode

    pairs = unique_pairs[:12]
    corpus = {f"d{i}": doc for i, (_, doc) in enumerate(pairs)}
    queries = {f"q{i}": query for i, (query, _) in enumerate(pairs)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(pairs))}
    result = train(make_model(), pairs, eval_data=(corpus, queries, qrels),
                   config=_config(tmp_path, output_dir=tmp_path / "retrieval", batch_size=4, epochs=2))
    assert [step for step, _ in result.eval_history] == [3, 6]  # each epoch end
    assert 0.0 <= result.eval_history[-1][1]["ndcg@10"] <= 1.0


def test_bad_arguments_fail_before_training(tmp_path, make_model, unique_pairs):
    for bad in (dict(batch_size=0), dict(scheduler="step"), dict(warmup_ratio=1.0), dict(learning_rate=-1.0),
                dict(max_grad_norm=0.0), dict(save_total_limit=0), dict(epochs=True),
                dict(matryoshka_dims=(8, 8))):
        with pytest.raises(ConfigError):
            _config(tmp_path, **bad)
    with pytest.raises(ConfigError, match="output_dir"):
        TrainConfig(output_dir="")
    model = make_model()
    with pytest.raises(ConfigError, match="TrainConfig"):
        train(model, unique_pairs[:8])
    with pytest.raises(ConfigError, match="needs a 'label' column"):
        train(model, unique_pairs[:8], loss="cosent", config=_config(tmp_path))
    labelled = [(a, b, 1.0) for a, b in unique_pairs[:8]]
    with pytest.raises(ConfigError, match="ignores labels"):
        train(model, labelled, loss="infonce", config=_config(tmp_path))
    with pytest.raises(ConfigError, match="nothing to train"):
        train(make_model(lora=False).requires_grad_(False), unique_pairs[:8], config=_config(tmp_path))
    assert not (tmp_path / "run" / "checkpoints").exists()
