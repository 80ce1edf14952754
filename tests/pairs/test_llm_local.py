"""LLMPairs with a local GGUF model (--llm-gguf): a tiny random-init llama decoder written by the test.

The model (1 layer, width 32, a byte-level BPE vocabulary of the 256 GPT-2 byte symbols) is
nonsense, but llama.cpp loads and runs it for real: it formats the same chat request the HTTP
backend sends, generates, and the builder turns the text into queries through the same parser and
the same cache. Its output head can only produce ASCII letters and spaces, so every reply is one
non-empty line. Skipped where llama-cpp-python is not installed (see `make llama-cpp`).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embtune.corpus.types import Chunk
from embtune.errors import ConfigError, DataFormatError
from embtune.pairs.llm import LLMPairs, parse_queries

gguf = pytest.importorskip("gguf")

CHUNKS = [Chunk(f"c{i}", f"d{i}", text, f"Doc {i}", ["Section"], f"f{i}.md") for i, text in enumerate([
    "VACUUM rebuilds the database file and reclaims the space left by deleted rows.",
    "Foreign key enforcement is off by default; turn it on with PRAGMA foreign_keys.",
    "WAL mode lets readers and one writer work at the same time.",
])]


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable symbol per byte value, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_tiny_llama_gguf(path, seed: int = 0, width: int = 32, heads: int = 2, ff: int = 64) -> None:
    """A 1-layer random llama decoder with a byte-level BPE vocabulary (any text tokenizes)."""
    rng = np.random.default_rng(seed)
    symbols = _byte_symbols()
    tokens = [*symbols, "Ġt", "<|endoftext|>"]
    eos = len(tokens) - 1
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(width)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(width // heads)
    writer.add_file_type(0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * eos + [gguf.TokenType.CONTROL])
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    output = rand(len(tokens), width)
    letters = [i for i, s in enumerate(symbols) if (s.isascii() and s.isalpha()) or s == "Ġ"]  # Ġ: a space
    blocked = np.ones(len(tokens), bool)
    blocked[letters] = False
    output[blocked] = 0.0  # logit 0 for every other token (EOS, newlines, ...): a letter always wins
    writer.add_tensor("token_embd.weight", rand(len(tokens), width))
    writer.add_tensor("output_norm.weight", np.ones(width, np.float32))
    writer.add_tensor("output.weight", output)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(width, np.float32))
    for name in ("q", "k", "v", "output"):
        writer.add_tensor(f"blk.0.attn_{name}.weight", rand(width, width))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(width, np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", rand(ff, width))
    writer.add_tensor("blk.0.ffn_up.weight", rand(ff, width))
    writer.add_tensor("blk.0.ffn_down.weight", rand(width, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path)
    return path


def local(path, cache, **kwargs) -> LLMPairs:
    return LLMPairs(gguf=path, cache_dir=cache, max_tokens=12, show_progress=False, **kwargs)


def test_generates_queries_through_llama_cpp_and_the_cache(tiny_gguf, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see `make llama-cpp`)")
    cache = tmp_path / "cache"
    first = local(tiny_gguf, cache)
    pairs = first.build(CHUNKS)
    assert first.requests_sent == 3 and first.local.generations == 3
    assert [p.positive_id for p in pairs] == ["c0", "c1", "c2"]
    assert {p.builder for p in pairs} == {"llm"} and all(p.positive == c.text for p, c in zip(pairs, CHUNKS))
    # the query is the text llama.cpp generated, read by the same parser, stored in the same cache
    files = sorted(cache.glob("*.json"))
    assert len(files) == 3
    replies = {json.loads(f.read_text())["content"] for f in files}
    assert {p.query for p in pairs} == {parse_queries(r, 1)[0] for r in replies}
    assert all(p.query and p.query.replace(" ", "").isalpha() for p in pairs)
    assert {json.loads(f.read_text())["model"] for f in files} == {first.model}
    assert first.model.startswith("gguf-")
    # the same request body the HTTP backend sends (prompt, sampling), keyed on the file's fingerprint
    body = first.request_body(CHUNKS[0])
    assert body["model"] == first.model and body["messages"][0]["content"] == first.render(CHUNKS[0])
    first.local.close()

    # a second run, with the model copied under another name, hits the cache: nothing is generated
    copy = tmp_path / "renamed.gguf"
    shutil.copy(tiny_gguf, copy)
    second = local(copy, cache)
    assert [(p.query, p.positive_id) for p in second.build(CHUNKS)] == [(p.query, p.positive_id) for p in pairs]
    assert second.requests_sent == 0 and second.local.generations == 0 and second.local._llm is None

    # greedy decoding is deterministic: a fresh cache gives the same queries again
    again = local(tiny_gguf, tmp_path / "fresh")
    assert [p.query for p in again.build(CHUNKS)] == [p.query for p in pairs]
    again.local.close()


def test_another_model_file_does_not_share_replies(tiny_gguf, tmp_path):
    other = tmp_path / "other.gguf"
    write_tiny_llama_gguf(other, seed=1)
    assert local(other, tmp_path).model != local(tiny_gguf, tmp_path).model


def test_bad_settings_are_one_line_errors(tiny_gguf, tmp_path, monkeypatch):
    with pytest.raises(DataFormatError, match="--llm-gguf file does not exist"):
        LLMPairs(gguf=tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="not both"):
        LLMPairs("http://localhost:11434", "m", gguf=tiny_gguf)
    # llama-cpp-python missing: the error names the package, raised only when generation is needed
    import builtins

    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    builder = local(tiny_gguf, tmp_path / "empty-cache")
    with pytest.raises(ConfigError, match="pip install llama-cpp-python") as err:
        builder.build(CHUNKS[:1])
    assert "\n" not in str(err.value)
    # ... and a from-corpus / pairs run says so before any work, without importing it
    import importlib.util

    from embtune.pipeline.settings import RunSettings

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match="--llm-gguf needs llama-cpp-python"):
        RunSettings(corpus=tmp_path, out=tmp_path / "run", llm_gguf=tiny_gguf).check(until="pairs")


def test_embtune_pairs_with_llm_gguf(tiny_gguf, tmp_path, monkeypatch):
    """`embtune pairs --llm-gguf`: llm pairs through the same filter (Qwen3-style: --filter-top-k 0
    --min-cosine), and a --force rerun is answered from the cache without loading the model."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see `make llama-cpp`)")
    from click.testing import CliRunner
    from tiny_models import build_tiny_hf

    from embtune.cli import main

    monkeypatch.setenv("EMBTUNE_CACHE_DIR", str(tmp_path / "cache"))
    import logging

    for name in ("", "embtune"):  # the in-process CLI sets these levels; give later tests theirs back
        monkeypatch.setattr(logging.getLogger(name or None), "level", logging.getLogger(name or None).level)
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for chunk in CHUNKS:
        (corpus / chunk.source).write_text(f"# {chunk.title}\n\n{chunk.text}\n", encoding="utf-8")
    model = build_tiny_hf(tmp_path / "bert", "bert", seed=0)
    run = tmp_path / "run"
    args = ["pairs", str(corpus), "--out", str(run), "--model", str(model), "--llm-gguf", str(tiny_gguf),
            "--filter-top-k", "0", "--min-cosine", "-1", "--negatives", "0", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    built = [json.loads(line) for line in (run / "work" / "pairs.built.jsonl").read_text().splitlines()]
    assert len(built) == 3 and {p["builder"] for p in built} == {"llm"}
    cached = sorted((tmp_path / "cache" / "llm").glob("*.json"))
    assert {parse_queries(json.loads(f.read_text())["content"], 1)[0] for f in cached} == {p["query"] for p in built}

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached replies should have been used")

    monkeypatch.setattr(llama_cpp, "Llama", no_generation)
    result = CliRunner().invoke(main, [*args, "--force"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    again = [json.loads(line) for line in (run / "work" / "pairs.built.jsonl").read_text().splitlines()]
    assert [p["query"] for p in again] == [p["query"] for p in built]

    for extra, message in ((["--llm-url", "http://localhost:1", "--llm-model", "m"], "give one"),
                           (["--pairs", "heuristic"], "only used by the llm pair builder")):
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code != 0 and message in result.output, result.output
