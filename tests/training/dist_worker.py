"""One process of the 2-process gloo runs in ``test_distributed.py`` (launched by torchrun).

Usage: ``torchrun --standalone --nproc_per_node 2 dist_worker.py JOB.json``. The job names the tiny
backbone folder, the training rows and an output folder; each process writes
``rank<r>.json`` and ``rank<r>-<case>.safetensors`` there, and the test compares them with
single-process references computed in the pytest process (no process group at all).

The model builder and the loss cases live here so that the test and the workers use the same code.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

# Cases of part (a): name -> (global rows, loss name, get_loss kwargs, wrap the model in DDP).
# Rows are indices into the job's triplets; 8 rows split 4/4, 7 rows 4/3, 1 row is computed whole
# by both processes.
LOSS_CASES = {
    "infonce_ddp": (8, "infonce", {}, True),
    "symmetric_ddp": (8, "infonce_symmetric", {}, True),
    "matryoshka_ddp": (8, "infonce", {"matryoshka_dims": (32, 16)}, True),
    "symmetric_uneven": (7, "infonce_symmetric", {}, False),
    "cached_uneven": (7, "cached_infonce", {"mini_batch_size": 3, "symmetric": True}, False),
    "matryoshka_cached_uneven": (7, "cached_infonce", {"mini_batch_size": 2, "matryoshka_dims": (32, 16)},
                                 False),
    "infonce_one_row": (1, "infonce", {}, False),
}
# 15 rows in batches of 7: per epoch batches of 7, 7 and 1 rows (shards 4+3, and the 1-row batch whole
# on both processes); 30 steps are 10 epochs.
TRAIN_SETTINGS = {"batch_size": 7, "max_steps": 30, "save_steps": 15, "learning_rate": 1e-2,
                  "logging_steps": 1, "warmup_steps": 0, "show_progress": False, "seed": 7}
CRASH_AT = 20  # the crashed run dies in the loss of step 20, after its step-15 checkpoint


def make_model(folder: str, randomise_lora: bool = False):
    """Tiny SentenceTransformer (the dropout-0 BERT in ``folder``) with a LoRA adapter (r=4) on
    query/key/value/dense; LoRA init fixed by a seed. ``randomise_lora`` replaces every LoRA weight
    by fixed random values, so that all LoRA gradients are non-zero (B starts at zero otherwise)."""
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(folder, max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"),
                                         Normalize()], device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["query", "key", "value", "dense"]))
    for name, param in model.named_parameters():
        if ".pooler." in name:  # LoRA on the unused pooler: no gradient, and DDP waits for one forever
            param.requires_grad_(False)
    if randomise_lora:
        generator = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for param in trainable(model).values():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.train()
    return model


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters that require grad, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def features(model, triplets: list[list[str]]) -> list[dict]:
    """Feature dicts (anchor as query; positive and negative as documents) for ``triplets``."""
    columns = list(zip(*triplets))
    return [model.preprocess(list(columns[0]), task="query")] + [
        model.preprocess(list(column), task="document") for column in columns[1:]]


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Clones of the trainable parameters' gradients (zeros where None)."""
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            for n, p in trainable(model).items()}


class CrashingLoss(nn.Module):
    """embtune's InfoNCE, raising RuntimeError on call number ``at`` (on every process alike)."""

    needs_labels = False

    def __init__(self, model, at: int | None = None):
        super().__init__()
        from embtune.losses import get_loss

        self.model, self.inner, self.at, self.calls = model, get_loss("infonce", model), at, 0

    def forward(self, sentence_features, labels=None):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError(f"simulated crash in loss call {self.calls}")
        return self.inner(sentence_features, labels)


def _loss_cases(job: dict, parallel, out: Path, report: dict) -> None:
    from embtune.losses import get_loss
    from embtune.training.loop import accumulate_gradients
    from torch.nn.parallel import DistributedDataParallel

    triplets = job["triplets"]
    for name, (count, loss_name, kwargs, use_ddp) in LOSS_CASES.items():
        model = make_model(job["model"], randomise_lora=True)
        rows, weight, gather = parallel.shard(list(range(count)))
        feats = features(model, [triplets[i] for i in rows])
        if use_ddp:
            ddp = DistributedDataParallel(model)
            value = get_loss(loss_name, ddp, **kwargs)(feats, None)
            value.backward()  # DDP averages the gradients over the processes
            local = float(value.detach())
            mean = parallel.sum(local) / parallel.world_size
        else:  # the code path of embtune.train: weighted shard losses, then explicit averaging
            loss_fn = get_loss(loss_name, model, **kwargs)
            mean = accumulate_gradients(loss_fn, [(feats, None, weight, gather)], 1, parallel)
            parallel.average_gradients(list(trainable(model).values()))
            local = None
        report["losses"][name] = {"mean": mean, "local": local, "rows": len(rows)}
        save_file(grads(model), str(out / f"rank{parallel.rank}-{name}.safetensors"))


def _training(job: dict, parallel, out: Path, report: dict) -> None:
    from embtune.training import TrainConfig, loop, train

    saves: list[int] = []
    original = loop.save_checkpoint

    def recording_save(output_dir, params, optimizer, progress, extra, rng_states=None):
        saves.append(progress.global_step)
        return original(output_dir, params, optimizer, progress, extra, rng_states=rng_states)

    loop.save_checkpoint = recording_save  # our own function: records which process writes
    data = [tuple(t) for t in job["train_rows"]]
    runs = {}
    for run, crash_at in (("full", None), ("crashed", CRASH_AT), ("resumed", None)):
        saves.clear()
        model = make_model(job["model"])
        config = TrainConfig(output_dir=Path(job["out"]) / ("ddp" if run == "full" else "ddp_resume"),
                             **TRAIN_SETTINGS)
        try:
            result = train(model, data, loss=CrashingLoss(model, at=crash_at), config=config)
        except RuntimeError as err:
            runs[run] = {"error": str(err)}
            continue
        runs[run] = {"loss_history": result.loss_history, "global_step": result.global_step,
                     "resumed_from": str(result.resumed_from) if result.resumed_from else None,
                     "saves": list(saves)}
        save_file({n: p.detach().contiguous() for n, p in trainable(model).items()},
                  str(out / f"rank{parallel.rank}-train-{run}.safetensors"))
    loop.save_checkpoint = original
    report["train"] = runs


def main(job_path: str) -> None:
    """Run the loss cases and the training runs; write this process's results."""
    torch.set_num_threads(1)
    from embtune.training.distributed import DataParallel

    job = json.loads(Path(job_path).read_text())
    out = Path(job["out"])
    parallel = DataParallel.detect()  # joins the group torchrun describes (gloo on CPU)
    report: dict = {"rank": parallel.rank, "world_size": parallel.world_size, "losses": {}}
    started = time.perf_counter()
    _loss_cases(job, parallel, out, report)
    report["seconds_losses"] = time.perf_counter() - started
    _training(job, parallel, out, report)
    report["seconds_total"] = time.perf_counter() - started
    (out / f"rank{parallel.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models
    main(sys.argv[1])
