"""Selection of the checkpoint and adapter strength that ships (``embtune.pipeline.selection``).

Adapter strength 0 is the base model and 1 the tuned model, exactly; the selection keeps the base
when training hurts the validation queries (here: a learning rate far too high) and says so in
selection.json, report.json and report.md; merged/ is exactly the chosen candidate; the new stages
skip on an unchanged rerun and rerun when their settings change.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import TINY_ARGS, invoke
from tiny_models import randomize_lora_b

from embtune.errors import ConfigError
from embtune.models import FastSentenceTransformer
from embtune.models.strength import StrengthModel
from embtune.pipeline.selection import (MIN_GAIN, MIN_SIGNAL_QUERIES, MIN_Z, SCORES, add_significance, choose,
                                        paired_z, validation_signals)
from embtune.pipeline.settings import check_strengths

TEXTS = ["protein folding and hydrophobic collapse", "how do cells divide", "coffee and the heart"]


def encode(model, texts=TEXTS) -> np.ndarray:
    return model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)


def load(path) -> FastSentenceTransformer:
    return FastSentenceTransformer.from_pretrained(str(path), dtype="fp32", device="cpu")


def assert_same_model(got: FastSentenceTransformer, want: FastSentenceTransformer) -> None:
    """Bit-identical weights, and encodings equal up to the BLAS: a loaded (memory-mapped) weight and a
    computed one may sit at different memory alignments, and the CPU GEMM then sums in another order
    (differences of ~1e-7 on packed batches), so the encodings are compared at 1e-6."""
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for name, value in got_state.items():
        assert torch.equal(value, want_state[name]), name
    np.testing.assert_allclose(encode(got), encode(want), rtol=0, atol=1e-6)


def hurt_args(model: str, *extra: str) -> list[str]:
    """A run whose training wrecks the model: learning rate 0.5, so every trained candidate validates worse."""
    return ["--model", model, *TINY_ARGS, "--max-steps", "6", "--batch-size", "8", "--save-steps", "3", "--lr", "0.5",
            "--negatives", "0", "--quiet", *extra]


def stamps(run: Path) -> dict[str, str]:
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return {name: entry["finished_at"] for name, entry in stages.items()}


# -- strength: the interpolation itself ----------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model) -> Path:
    """A LoRA adapter of the tiny model with random (non-zero) B matrices."""
    model = FastSentenceTransformer.get_peft_model(load(tiny_model), r=4, lora_alpha=8)
    randomize_lora_b(model, std=0.3)
    out = tmp_path_factory.mktemp("strength") / "adapter"
    model.save_pretrained(str(out))
    return out


def test_lora_strength_zero_is_base_and_one_is_the_merged_adapter(adapter, tiny_model, tmp_path):
    from embtune.pipeline.training import merge_model

    model = StrengthModel.load(adapter, device="cpu")
    assert model.changed > 0
    tuned = encode(model.model)
    assert_same_model(load(merge_model(adapter, tmp_path / "merged")), model.model)
    base_model = load(tiny_model)
    assert_same_model(model.set_strength(0.0), base_model)
    base = encode(base_model)
    half = encode(model.set_strength(0.5))
    assert np.abs(half - base).max() > 1e-3 and np.abs(half - tuned).max() > 1e-3
    np.testing.assert_array_equal(encode(model.set_strength(1.0)), tuned)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        model.set_strength(1.5)


def test_full_model_strength_interpolates_weights(tiny_model, tmp_path):
    full = load(tiny_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in full.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    full.save(str(tmp_path / "full"))
    model = StrengthModel.load(tmp_path / "full", base_source=tiny_model, device="cpu")
    assert_same_model(model.set_strength(0.0), load(tiny_model))
    np.testing.assert_allclose(encode(model.set_strength(1.0)), encode(load(tmp_path / "full")), atol=1e-6)
    with pytest.raises(ConfigError, match="base model"):
        StrengthModel.load(tmp_path / "full", device="cpu")


def row(checkpoint, step, strength, keywords, cloze):
    return {"checkpoint": checkpoint, "step": step, "strength": strength, "ndcg@10": (keywords + cloze) / 2,
            "by_signal": {"keywords": keywords, "cloze": cloze}}


def test_choose_ships_a_tuned_candidate_only_if_every_signal_gains_the_margin():
    base = row("base", None, 0.0, 0.50, 0.60)
    # keywords +0.10 but cloze -0.01: the overall mean rises, yet one signal lost, so the base stays
    one_sided = row("final", 6, 1.0, 0.60, 0.59)
    assert one_sided["ndcg@10"] > base["ndcg@10"]
    assert choose([base, one_sided]) is base
    # both signals gain, but by less than MIN_GAIN: within noise, the base stays
    tiny = row("final", 6, 1.0, 0.50 + MIN_GAIN / 2, 0.60 + MIN_GAIN / 2)
    assert choose([base, tiny]) is base
    # both gain at least the margin: the candidate whose worst signal gains most ships
    half = row("final", 6, 0.5, 0.52, 0.61)       # worst gain +0.01
    full = row("final", 6, 1.0, 0.70, 0.615)      # worst gain +0.015, best overall too
    early = row("step-3", 3, 1.0, 0.53, 0.62)     # worst gain +0.02 although its mean is lower than full's
    assert choose([base, half, full]) is full
    assert choose([base, half, full, early]) is early
    # ties go to the smaller strength, then the earlier step
    twin = row("step-3", 3, 0.5, 0.52, 0.61)
    assert choose([base, full | {"strength": 0.75}, full])["strength"] == 0.75
    assert choose([base, half, twin]) is twin
    # a grid without the base (strength 0) picks the best mean
    assert choose([half, full]) is full


def scored(checkpoint, step, strength, keywords: list[float], cloze: list[float]):
    """A candidate row with per-query scores (the means follow from them, as in select_stage)."""
    by_signal = {"keywords": sum(keywords) / len(keywords), "cloze": sum(cloze) / len(cloze)}
    return {"checkpoint": checkpoint, "step": step, "strength": strength,
            "ndcg@10": (sum(keywords) + sum(cloze)) / (len(keywords) + len(cloze)), "by_signal": by_signal,
            SCORES: {"keywords": list(keywords), "cloze": list(cloze)}}


def test_paired_z_is_the_mean_difference_over_its_standard_error():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    tuned = base + rng.normal(0.02, 0.1, 200)
    diffs = tuned - base
    expected = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(len(diffs)))
    assert paired_z(list(tuned), list(base)) == pytest.approx(expected, rel=1e-9)
    from scipy import stats  # the paired t statistic is the same number
    assert paired_z(list(tuned), list(base)) == pytest.approx(stats.ttest_rel(tuned, base).statistic, rel=1e-9)
    assert paired_z([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert paired_z([0.6, 0.7], [0.5, 0.6]) == float("inf")


def test_choose_needs_each_signal_gain_to_be_significant_not_only_large():
    n = 400
    base = scored("base", None, 0.0, [0.5] * n, [0.6] * n)
    # keywords: +0.01 on average, but carried by noise (half the queries +0.3, half -0.28): z about 0.7
    noisy_kw = [0.5 + (0.3 if i % 2 else -0.28) for i in range(n)]
    steady_cloze = [0.6 + (0.02 if i % 2 else 0.0) for i in range(n)]
    noisy = scored("final", 6, 1.0, noisy_kw, steady_cloze)
    assert noisy["by_signal"]["keywords"] - 0.5 >= MIN_GAIN
    assert choose([base, noisy]) is base
    assert choose([base, noisy], min_z=0.0) is noisy  # the gain alone would have shipped it
    # the same mean gain, steady over the queries: significant, ships
    steady_kw = [0.5 + (0.02 if i % 2 else 0.0) for i in range(n)]
    steady = scored("final", 6, 1.0, steady_kw, steady_cloze)
    assert choose([base, noisy, steady]) is steady
    rows = [base, noisy, steady]
    add_significance(rows)
    assert all(SCORES not in r for r in rows) and "z" not in base
    assert noisy["z"]["keywords"] < MIN_Z <= steady["z"]["keywords"]


def test_strength_grid_and_signals():
    assert check_strengths("1, 0,0.5,0.5") == (0.0, 0.5, 1.0)
    assert check_strengths([0.25]) == (0.25,)
    for bad in ("", "0,2", "a,b", ()):
        with pytest.raises(ConfigError, match="--strengths"):
            check_strengths(bad)
    assert validation_signals({"heuristic:title", "heuristic:cloze"}) == ("keywords",)
    assert validation_signals({"labels"}) == ("title", "cloze", "keywords")
    everything = {"heuristic:title", "heuristic:cloze", "heuristic:keywords"}
    assert validation_signals(everything) == ("title", "cloze", "keywords")


# -- the pipeline stages -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hurt_run(tmp_path_factory, small_corpus, tiny_model) -> Path:
    """A from-corpus run whose training hurts (learning rate 0.5)."""
    run = tmp_path_factory.mktemp("selection") / "run"
    invoke("from-corpus", str(small_corpus), "--out", str(run), *hurt_args(tiny_model))
    return run


def test_training_that_hurts_keeps_the_base_model_and_says_so(hurt_run, tiny_model):
    selection = json.loads((hurt_run / "selection.json").read_text())
    rows = selection["candidates"]
    builders = {json.loads(line)["builder"] for line in (hurt_run / "pairs.jsonl").read_text().splitlines()}
    assert "heuristic:title" in builders
    assert selection["validated"] and selection["validation"]["signals"] == list(validation_signals(builders))
    assert not {f"heuristic:{s}" for s in selection["validation"]["signals"]} & builders
    assert selection["validation"]["queries"] > 0
    assert {r["checkpoint"] for r in rows} == {"base", "step-3", "final"}
    assert len(rows) == 1 + 2 * 4  # base once, then each checkpoint at 0.25, 0.5, 0.75, 1
    base = rows[0]["ndcg@10"]
    assert max(r["ndcg@10"] for r in rows if r["strength"] == 1.0) < base, "training did not hurt"
    assert selection["kept_base"] and selection["choice"]["strength"] == 0.0
    assert selection["choice"]["ndcg@10"] == max(r["ndcg@10"] for r in rows)
    assert "kept the base model" in selection["message"]
    report = json.loads((hurt_run / "report.json").read_text())
    assert report["selection"]["kept_base"]
    assert "## Selection" in (hurt_run / "report.md").read_text()
    assert "kept the base model" in (hurt_run / "report.md").read_text()
    # merged/ is the base model, so the run ships no regression
    np.testing.assert_array_equal(encode(load(hurt_run / "merged")), encode(load(tiny_model)))
    assert report["after"] == report["before"]
    # merged/ is the base, so the corpus is not encoded again: the base embeddings are reused, and they
    # are what encoding with merged/ gives
    manifest = json.loads((hurt_run / "manifest.json").read_text())["stages"]
    assert manifest["embed_after"]["info"]["reused"] == "base"
    reused = np.load(hurt_run / "work/chunk_embeddings.merged.npy")
    np.testing.assert_array_equal(reused, np.load(hurt_run / "work/chunk_embeddings.npy"))
    from embtune.pairs.embeddings import encode_chunk_texts
    texts = [json.loads(line)["text"] for line in (hurt_run / "chunks.jsonl").read_text().splitlines()[:6]]
    np.testing.assert_allclose(encode_chunk_texts(load(hurt_run / "merged"), texts, show_progress=False), reused[:6],
                               atol=1e-5)
    # the validation queries come from held-out documents only
    held = set(json.loads((hurt_run / "manifest.json").read_text())["stages"]["split"]["info"]["held_out_documents"])
    chunks = {json.loads(line)["id"]: json.loads(line)["doc_id"]
              for line in (hurt_run / "chunks.jsonl").read_text().splitlines()}
    validation = [json.loads(line) for line in (hurt_run / "work/validation.jsonl").read_text().splitlines()]
    assert validation and all(chunks[c] in held for q in validation for c in q["relevant"])
    # every validation query names its signal; each candidate is scored per signal (or on "all" of them)
    assert {q["signal"] for q in validation} <= set(selection["validation"]["signals"])
    groups = selection["validation"]["by_signal"]
    assert set(groups) == {"all"} or (set(groups) <= set(selection["validation"]["signals"])
                                      and min(groups.values()) >= MIN_SIGNAL_QUERIES)
    assert all(set(r["by_signal"]) == set(groups) for r in rows)
    trained = {json.loads(line)["query"] for line in (hurt_run / "pairs.jsonl").read_text().splitlines()}
    assert not trained & {q["query"] for q in validation}


def test_merge_writes_exactly_the_chosen_candidate(hurt_run, tmp_path):
    from embtune.pipeline.stages_model import merge_stage

    adapter = hurt_run / "adapter"
    run = Path(shutil.copytree(hurt_run, tmp_path / "run"))
    merge_stage(run / "adapter", run / "merged", False, {"checkpoint": "step-3", "strength": 0.5})
    want = StrengthModel.load(adapter, checkpoint=hurt_run / "checkpoints" / "step-3", device="cpu")
    merged = load(run / "merged")
    assert_same_model(merged, want.set_strength(0.5))
    got = encode(merged)
    assert np.abs(got - encode(load(hurt_run / "merged"))).max() > 1e-3  # not the base
    final = StrengthModel.load(adapter, device="cpu").set_strength(0.5)
    assert np.abs(got - encode(final)).max() > 1e-4  # the checkpoint's weights, not the final ones


def test_rerun_skips_and_changed_settings_rerun_only_what_they_change(hurt_run, tmp_path, small_corpus, tiny_model):
    run = Path(shutil.copytree(hurt_run, tmp_path / "run"))
    before = stamps(run)
    invoke("from-corpus", str(small_corpus), "--out", str(run), *hurt_args(tiny_model))
    assert stamps(run) == before, "an unchanged rerun must skip every stage"

    invoke("from-corpus", str(small_corpus), "--out", str(run), *hurt_args(tiny_model, "--strengths", "0.5,1"))
    now = stamps(run)
    assert now["validation"] == before["validation"] and now["train"] == before["train"]
    assert now["select"] != before["select"]
    selection = json.loads((run / "selection.json").read_text())
    assert {r["strength"] for r in selection["candidates"]} == {0.5, 1.0}
    assert not selection["kept_base"]  # the base was not on the grid

    invoke("from-corpus", str(small_corpus), "--out", str(run), *hurt_args(tiny_model, "--no-select-strength"))
    report = json.loads((run / "report.json").read_text())
    assert "selection" not in report and stamps(run)["merge"] != now["merge"]
    final = StrengthModel.load(run / "adapter", device="cpu")
    assert_same_model(load(run / "merged"), final.model)
