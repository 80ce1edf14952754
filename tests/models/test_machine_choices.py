"""Per-machine choices (attention implementation, CPU weight dtype): measured on first use, cached on disk,
overridable, logged."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from embtune.models import attention_choice
from embtune.models.attention_choice import AttentionImpl
from embtune.models.varlen_attention import choose_attention, run_packed
from embtune.utils import tuning


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBTUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(attention_choice.ENV_VAR, raising=False)
    tuning.forget()
    attention_choice._announced.clear()
    yield tmp_path
    tuning.forget()


def test_names_parse_and_bad_names_fail():
    assert attention_choice.parse("auto") is None
    assert attention_choice.parse("matmul@bf16") == AttentionImpl("matmul", torch.bfloat16)
    assert str(AttentionImpl("bucket", torch.float32)) == "bucket@fp32"
    assert AttentionImpl("sequence").compute_dtype(torch.bfloat16) == torch.bfloat16
    for bad in ("flash", "matmul@int8", "bucket@"):
        with pytest.raises(ValueError, match="unknown attention implementation"):
            attention_choice.check(bad)


def test_auto_measures_once_caches_on_disk_and_logs(fresh_cache, caplog):
    q, k = torch.randn(1, 4, 10, 8), torch.randn(1, 2, 10, 8)
    with caplog.at_level(logging.INFO, logger="embtune"):
        impl = attention_choice.resolve("auto", q, k, causal=True, training=True, run=run_packed)
    stored = json.loads((fresh_cache / tuning.TUNING_FILE).read_text())
    (machine, entries), = stored.items()
    assert machine == tuning.machine_key("cpu")
    (name, entry), = entries.items()
    assert name == "attention/train/H4-2/D8/fp32/causal"
    assert set(entry["ms"]) == {str(c) for c in attention_choice.candidates(torch.float32)}
    assert entry["choice"] == min(entry["ms"], key=entry["ms"].get) == str(impl)
    assert f"packed attention for {name}: {impl}" in caplog.text
    # another process (memory forgotten) reads the file: editing the entry forces the choice
    entry["choice"] = "eager"
    (fresh_cache / tuning.TUNING_FILE).write_text(json.dumps(stored))
    tuning.forget()
    assert attention_choice.resolve("auto", q, k, causal=True, training=True, run=run_packed) == AttentionImpl("eager")
    attention_choice.resolve("auto", q, k, causal=True, training=False, run=run_packed)  # inference is measured apart
    assert "attention/infer/H4-2/D8/fp32/causal" in json.loads((fresh_cache / tuning.TUNING_FILE).read_text())[machine]


def test_environment_overrides_auto_and_explicit_names_win(fresh_cache, monkeypatch):
    q = torch.randn(1, 2, 6, 4)
    monkeypatch.setenv(attention_choice.ENV_VAR, "matmul-recompute@bf16")
    expected = AttentionImpl("matmul-recompute", torch.bfloat16)
    assert attention_choice.resolve("auto", q, q, causal=False, training=True, run=run_packed) == expected
    explicit = attention_choice.resolve("sequence", q, q, causal=False, training=True, run=run_packed)
    assert explicit == AttentionImpl("sequence")
    assert not (fresh_cache / tuning.TUNING_FILE).exists()  # nothing was measured


def test_unwritable_cache_still_returns_a_choice(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMBTUNE_CACHE_DIR", str(blocker / "cache"))
    tuning.forget()
    try:
        impl = choose_attention(2, 2, 4, torch.float32, torch.device("cpu"), causal=False, training=False)
    finally:
        tuning.forget()
    assert impl in attention_choice.candidates(torch.float32)


def test_fast_model_uses_the_measured_choice(fresh_cache, tmp_path):
    from embtune import FastSentenceTransformer
    from tiny_models import build_tiny_hf

    model = FastSentenceTransformer.from_pretrained(build_tiny_hf(tmp_path / "bert", "bert"), dtype=torch.float32)
    assert model[0].attention == "auto"
    model.encode(["one text", "and a second, longer text to pack"])
    names = json.loads((fresh_cache / tuning.TUNING_FILE).read_text())[tuning.machine_key("cpu")]
    assert any(name.startswith("attention/infer/") for name in names)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        model[0].set_packing(True, "flash")


def test_cpu_weight_dtype_is_measured_and_cached(fresh_cache):
    from embtune import device

    chosen = device.fast_dtype("cpu")
    entry = json.loads((fresh_cache / tuning.TUNING_FILE).read_text())[tuning.machine_key("cpu")]["matmul-dtype/cpu"]
    faster = entry["fp32_ms"] >= device.BF16_MIN_SPEEDUP * entry["bf16_ms"]
    assert entry["dtype"] == ("bf16" if faster else "fp32")
    assert chosen == (torch.bfloat16 if faster else torch.float32)
    # the cached answer is what later processes use (edit it to force the other dtype)
    stored = json.loads((fresh_cache / tuning.TUNING_FILE).read_text())
    stored[tuning.machine_key("cpu")]["matmul-dtype/cpu"]["dtype"] = "fp32" if faster else "bf16"
    (fresh_cache / tuning.TUNING_FILE).write_text(json.dumps(stored))
    tuning.forget()
    assert device.fast_dtype("cpu") == (torch.float32 if faster else torch.bfloat16)
