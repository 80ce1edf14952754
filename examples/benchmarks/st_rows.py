"""sentence-transformers rows of ``train_speed.py``: the shared baseline script and ST + PEFT in-process.

Row kinds (the ``"kind"`` of a row's settings in ``train_speed.ROWS`` / ``GPU_ROWS``):

- ``"st"``: ``shared/bench/st_baseline.py`` in a subprocess (CPU only; not edited here), parsed from
  its ``BASELINE`` line by :func:`run_baseline_script`.
- ``"st-peft"``: the same setup built in this script (:func:`st_peft_model` + :func:`train_st`):
  ``SentenceTransformer`` from the model folder, PEFT LoRA r16 / alpha 32 / dropout 0 through
  ``model.add_adapter``, ``SentenceTransformerTrainer`` with the baseline's arguments (lr 2e-4, one
  epoch, default batch sampler, no warm-up, no weight decay), so that ST's own speed settings can be
  switched on one at a time. Settings read: ``bf16`` (trainer ``bf16=True``: autocast),
  ``loss="cached"`` + ``tokens`` (``CachedMultipleNegativesRankingLoss(mini_batch_num_tokens=tokens)``),
  ``compile`` (trainer ``torch_compile=True``), ``attention`` (``attn_implementation``; with
  ``"flash_attention_2"`` ST packs text inputs without padding, see ``Transformer.unpad_inputs``).
  A decoder folder (Qwen3) gets last-token pooling, bf16 frozen weights with fp32 LoRA weights, LoRA on
  ``q/k/v/o/gate/up/down_proj`` and embtune's default query instruction, so it embeds the same texts
  as embtune's decoder rows.
- ``"st-trainer"``: ST's trainer on an embtune ``FastSentenceTransformer`` (built by the caller), also
  through :func:`train_st`.

``ST_KINDS`` are the kinds that measure sentence-transformers itself: the fastest of them is "ST best".
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
BASELINE = SHARED / "bench" / "st_baseline.py"
DATA = SHARED / "data" / "scifact"

ST_KINDS = ("st", "st-peft")
#: Token budget of the CachedMNRL rows: 16 texts at max_len 256, so all 32 short SciFact queries share
#: one mini-batch while the (mostly truncated, 256-token) documents split into two.
DEFAULT_TOKEN_BUDGET = 4096
ENCODER_TARGETS = ["query", "key", "value", "dense"]  # as shared/bench/st_baseline.py
DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DECODER_TYPES = ("qwen2", "qwen3", "llama", "mistral")


def is_st_row(settings: dict) -> bool:
    """Whether a row with these settings measures sentence-transformers itself (counts for "ST best")."""
    return settings.get("kind") in ST_KINDS


def skip_reason(settings: dict) -> str | None:
    """Why a row cannot run in this environment (a missing optional package), or None if it can.

    In: a row's settings; ``"needs"`` names a module that must be importable (e.g. ``"flash_attn"``);
    ``"fast_bf16"`` asks for a CPU where bf16 matmuls are fast (``embtune.device.cpu_has_fast_bf16``,
    measured once per machine).
    """
    needs = settings.get("needs")
    if needs and importlib.util.find_spec(needs) is None:
        return f"needs the {needs!r} package, which is not installed"
    if settings.get("fast_bf16"):
        from embtune.device import cpu_has_fast_bf16

        if not cpu_has_fast_bf16():
            return "bf16 matmuls are emulated on this CPU (measured much slower than fp32)"
    return None


def run_baseline_script(folder: str, pairs: int, batch: int, max_len: int, bf16: bool,
                        timeout: float | None = None) -> dict:
    """Run shared/bench/st_baseline.py in a subprocess and parse its BASELINE line.

    In: model folder, number of pairs, batch size, max length, whether to pass ``--bf16``.
    Out: ``{"seconds", "pairs", "steps": None, "flops": None, "real_tokens", "peak_rss_mb",
    "mean_loss": None}``. Raises RuntimeError (with the script's stderr tail) if it printed no BASELINE line,
    subprocess.TimeoutExpired after ``timeout`` seconds (None: no limit).
    """
    cmd = [sys.executable, str(BASELINE), "--model", folder, "--data", str(DATA), "--pairs", str(pairs),
           "--batch-size", str(batch), "--max-len", str(max_len)] + (["--bf16"] if bf16 else [])
    with tempfile.TemporaryDirectory() as cwd:  # the script writes st_baseline_out/ into its cwd
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BASELINE")), None)
    if line is None:
        raise RuntimeError(f"st_baseline.py failed:\n{proc.stderr[-3000:]}")
    fields = dict(item.split("=", 1) for item in line.split()[2:])
    seconds = float(fields["seconds"])
    return {"seconds": seconds, "pairs": int(fields["pairs"]), "steps": None, "flops": None,
            "real_tokens": round(float(fields["real_tokens_per_s"]) * seconds),
            "peak_rss_mb": float(fields["peak_rss_mb"]), "mean_loss": None}


def is_decoder_folder(folder: str) -> bool:
    """Whether the Hugging Face config in ``folder`` is a decoder family (last-token pooling)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder).model_type in DECODER_TYPES


def st_peft_model(spec: dict):
    """Plain sentence-transformers + PEFT LoRA r16 / alpha 32, as shared/bench/st_baseline.py builds it.

    In: a worker spec (``folder``, ``max_len``, ``device``, ``settings``; see the module docstring).
    Out: the ``SentenceTransformer`` with its LoRA adapter, on ``spec["device"]`` (default CPU). On CPU
    with no ``attention`` setting no model kwargs are passed, exactly like the baseline script.
    """
    import torch
    from peft import LoraConfig, TaskType
    from sentence_transformers import SentenceTransformer

    settings = spec["settings"]
    device = spec.get("device") or "cpu"
    model_kwargs = {}
    if device != "cpu" or settings.get("attention"):
        model_kwargs["attn_implementation"] = settings.get("attention", "sdpa")
    decoder = is_decoder_folder(spec["folder"])
    if decoder:
        from embtune.models.architectures import DEFAULT_QUERY_TASK, instruction_prompt
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        transformer = Transformer(spec["folder"], model_kwargs={"dtype": torch.bfloat16, **model_kwargs},
                                  max_seq_length=spec["max_len"])
        pooling = Pooling(transformer.get_embedding_dimension(), "lasttoken")
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device,
                                    prompts={"query": instruction_prompt(DEFAULT_QUERY_TASK), "document": ""})
    else:
        model = SentenceTransformer(spec["folder"], device=device, model_kwargs=model_kwargs or None)
    model.max_seq_length = spec["max_len"]
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules=DECODER_TARGETS if decoder else ENCODER_TARGETS))
    if decoder:  # fp32 LoRA weights on the bf16 base, as PEFT's get_peft_model does (autocast_adapter_dtype)
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return model


def train_st(model, pairs: list[tuple[str, str]], spec: dict) -> tuple[float, float, int, dict]:
    """One epoch of ``SentenceTransformerTrainer`` over ``pairs`` with the baseline's arguments.

    In: the model (ST + PEFT or a FastSentenceTransformer), the (query, document) pairs, the worker
    spec (``batch``, ``device``, ``settings``: ``bf16``, ``loss``/``tokens``, ``compile``).
    Out: (seconds of ``trainer.train()``, mean training loss, optimizer steps, extras), where extras
    holds ``compiled_graphs`` (torch.compile's graph count) for compile rows.
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses

    settings = spec["settings"]
    device = spec.get("device") or "cpu"
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    query_prompt = (getattr(model, "prompts", None) or {}).get("query")
    if settings.get("loss") == "cached":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, scale=20.0, mini_batch_num_tokens=settings.get("tokens", DEFAULT_TOKEN_BUDGET))
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=spec["batch"], num_train_epochs=1, learning_rate=2e-4,
            use_cpu=device == "cpu", bf16=settings.get("bf16", False),
            torch_compile=settings.get("compile", False),
            prompts={"anchor": query_prompt} if query_prompt else None, report_to=[], save_strategy="no",
            logging_steps=10_000 if settings.get("kind") == "st-peft" else 1,  # st-peft: as the baseline script
            dataloader_num_workers=0, disable_tqdm=True, seed=0)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
    extras = {}
    if settings.get("compile"):
        from torch._dynamo.utils import counters

        extras["compiled_graphs"] = counters["stats"]["unique_graphs"]
    return seconds, output.training_loss, trainer.state.global_step, extras
