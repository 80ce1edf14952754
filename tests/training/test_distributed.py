"""Data-parallel training on CPU: 2 gloo processes launched by torchrun against one plain process.

One torchrun launch (``dist_worker.py``) runs every multi-process part and writes its numbers; the
references are computed here, in a process with no process group, by the ordinary single-process
code. Model: tiny random BERT (hidden 32, dropout 0) with a LoRA adapter; data: SciFact
(query, document, other document) triplets.

(a) With the global batch split over the 2 processes, the mean of the per-process losses equals the
    single-process loss on the whole batch, and the averaged gradients (by DDP, or by embtune's
    explicit all-reduce) equal its gradients: InfoNCE with hard negatives, symmetric, Matryoshka,
    the GradCache variant (alone and under Matryoshka), equal and unequal shards, and a batch with
    fewer rows than processes.
(b) ``embtune.train`` under torchrun: both processes end with the same weights, which match a
    single-process run with the same settings; the loss falls; only process 0 writes checkpoints; a
    run killed after its step-15 checkpoint resumes to the uninterrupted run's weights bit for bit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dist_worker as worker
import pytest
import torch
from embtune.losses import get_loss
from embtune.training import TrainConfig, train
from safetensors.torch import load_file
from tiny_models import build_tiny_hf, scifact_dir, torch_threads

WORLD = 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls gain nothing from threads; one keeps this file fast on a busy machine."""
    with torch_threads(1):
        yield


def _triplets(count: int) -> list[list[str]]:
    """``count`` (query, its document, a document of another query), all texts distinct."""
    from embtune.data import load_beir

    seen, pairs = set(), []
    for query, doc in load_beir(scifact_dir()).pairs("train"):
        if query not in seen and doc not in seen:
            seen.update((query, doc))
            pairs.append((query, doc))
        if len(pairs) == 2 * count:
            break
    return [[q, d, pairs[count + i][1]] for i, (q, d) in enumerate(pairs[:count])]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Run dist_worker.py under ``torchrun --standalone --nproc_per_node 2``; returns (job, reports)."""
    root = tmp_path_factory.mktemp("distributed")
    triplets = _triplets(15)
    job = {"model": build_tiny_hf(root / "tiny-bert", "bert", hidden_size=32, dropout=0.0),
           "triplets": triplets[:8], "train_rows": triplets, "out": str(root / "out")}
    Path(job["out"]).mkdir()
    (root / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
               worker.__file__, str(root / "job.json")]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    print(f"torchrun with {WORLD} processes took {time.perf_counter() - started:.1f} s")
    reports = [json.loads((Path(job["out"]) / f"rank{r}.json").read_text()) for r in range(WORLD)]
    first = reports[0]
    print(f"process 0: loss cases {first['seconds_losses']:.1f} s, all work {first['seconds_total']:.1f} s")
    assert [r["rank"] for r in reports] == [0, 1] and all(r["world_size"] == WORLD for r in reports)
    return job, reports


def _rank_tensors(job, name: str) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(Path(job["out"]) / f"rank{r}-{name}.safetensors")) for r in range(WORLD)]


def _single_process_grads(job, count, loss_name, kwargs, rows=None):
    """Loss value and trainable gradients of one process on ``job["triplets"][rows or :count]``."""
    model = worker.make_model(job["model"], randomise_lora=True)
    loss_fn = get_loss(loss_name, model, **kwargs)
    picked = [job["triplets"][i] for i in (rows if rows is not None else range(count))]
    value = loss_fn(worker.features(model, picked), None)
    value.backward()
    return float(value.detach()), worker.grads(model)


@pytest.mark.parametrize("case", list(worker.LOSS_CASES))
def test_gathered_loss_and_gradients_equal_single_process(launched, case):
    job, reports = launched
    count, loss_name, kwargs, _ = worker.LOSS_CASES[case]
    expected_loss, expected_grads = _single_process_grads(job, count, loss_name, kwargs)
    rank_grads = _rank_tensors(job, case)
    for report, grads in zip(reports, rank_grads):
        assert report["losses"][case]["mean"] == pytest.approx(expected_loss, abs=1e-6, rel=1e-6)
        assert grads.keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            # float32 sums in another order: ~1e-6 off on gradients of ~0.3 (the control below: 1e-3)
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=3e-6)
    assert all(torch.equal(rank_grads[0][n], rank_grads[1][n]) for n in expected_grads)
    assert sum(float(g.abs().sum()) for g in expected_grads.values()) > 0
    shard_rows = [r["losses"][case]["rows"] for r in reports]
    assert shard_rows == ([count, count] if count < WORLD else [(count + 1) // 2, count // 2])


def test_without_gathering_the_gradient_would_differ(launched):
    """Control: averaging the two half-batch gradients (each process with only its own negatives) is
    measurably not the full-batch gradient, so the equality above depends on the gather."""
    job, _ = launched
    _, full = _single_process_grads(job, 8, "infonce", {})
    halves = [_single_process_grads(job, 8, "infonce", {}, rows=range(i * 4, i * 4 + 4))[1] for i in (0, 1)]
    differences = [float((full[n] - (halves[0][n] + halves[1][n]) / 2).abs().max()) for n in full]
    assert max(differences) > 1e-3


def _fixed_loss(model, rows) -> float:
    """InfoNCE over all ``rows`` at once, eval mode, no gradient."""
    loss_fn = get_loss("infonce", model)
    model.eval()
    with torch.no_grad():
        return float(loss_fn(worker.features(model, rows), None))


def test_train_under_torchrun_matches_single_process(launched, tmp_path):
    job, reports = launched
    runs = [r["train"] for r in reports]
    weights = _rank_tensors(job, "train-full")
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 0
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0]), "ranks diverged"
    assert runs[0]["full"]["loss_history"] == runs[1]["full"]["loss_history"]
    assert runs[0]["full"]["global_step"] == worker.TRAIN_SETTINGS["max_steps"]

    # The same run in one process (see worker.TRAIN_SETTINGS) follows the same trajectory.
    rows = [tuple(t) for t in job["train_rows"]]
    model = worker.make_model(job["model"])
    before = _fixed_loss(worker.make_model(job["model"]), job["train_rows"])
    result = train(model, rows, loss=worker.CrashingLoss(model),
                   config=TrainConfig(output_dir=tmp_path / "single", **worker.TRAIN_SETTINGS))
    single = {n: p.detach() for n, p in worker.trainable(model).items()}
    initial = {n: p.detach() for n, p in worker.trainable(worker.make_model(job["model"])).items()}
    assert single.keys() == weights[0].keys()
    # Training moved the weights by ~0.1; the runs agree to float rounding accumulated over 30 Adam
    # steps (~2e-5 measured).
    assert max(float((single[n] - initial[n]).abs().max()) for n in single) > 1e-2
    for name, value in single.items():
        torch.testing.assert_close(weights[0][name], value, rtol=1e-3, atol=1e-4)
    ddp_history = runs[0]["full"]["loss_history"]
    assert [s for s, _ in ddp_history] == [s for s, _ in result.loss_history]
    assert [v for _, v in ddp_history] == pytest.approx([v for _, v in result.loss_history], rel=1e-4)

    # The loss falls: the whole training set scored before and after, with process 0's weights.
    trained = worker.make_model(job["model"])
    with torch.no_grad():
        for name, param in worker.trainable(trained).items():
            param.copy_(weights[0][name])
    after = _fixed_loss(trained, job["train_rows"])
    assert after < 0.85 * before, (before, after)


def test_only_rank_zero_writes_and_resume_is_exact(launched):
    job, reports = launched
    runs = [r["train"] for r in reports]
    steps, every = worker.TRAIN_SETTINGS["max_steps"], worker.TRAIN_SETTINGS["save_steps"]
    assert runs[0]["full"]["saves"] == [every, steps] and runs[1]["full"]["saves"] == []
    out = Path(job["out"])
    folders = sorted(p.name for p in (out / "ddp" / "checkpoints").iterdir())
    assert folders == [f"step-{every}", f"step-{steps}"]
    state = json.loads((out / "ddp" / "checkpoints" / f"step-{steps}" / "state.json").read_text())
    assert len(state["rng_other_processes"]) == WORLD - 1  # process 1's dropout RNG is saved too
    assert json.loads((out / "ddp" / "trainer_state.json").read_text())["status"] == "finished"

    assert all(f"simulated crash in loss call {worker.CRASH_AT}" in run["crashed"]["error"] for run in runs)
    for run in runs:
        resumed_from = Path(run["resumed"]["resumed_from"])
        assert resumed_from.parts[-3:] == ("ddp_resume", "checkpoints", f"step-{every}")
        assert run["resumed"]["loss_history"] == run["full"]["loss_history"]
    assert runs[0]["resumed"]["saves"] == [steps] and runs[1]["resumed"]["saves"] == []
    full, resumed = _rank_tensors(job, "train-full"), _rank_tensors(job, "train-resumed")
    for rank in range(WORLD):
        assert all(torch.equal(full[rank][n], resumed[rank][n]) for n in full[rank]), f"rank {rank}"
