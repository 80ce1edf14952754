"""`FastSentenceTransformer`: a `sentence_transformers.SentenceTransformer` that loads, adapts and saves fast.

It *is* an ST model: ``encode``, ``encode_query``, ``encode_document``, ``similarity``, ST's trainer,
losses and evaluators all work on it unchanged. On top it adds the loading rules of
`embtune.models.loading` (bf16 frozen weights where the CPU/GPU runs bf16 fast, safetensors only,
pooling chosen per architecture, decoder instructions), LoRA/QLoRA through PEFT, a merged save that
is a plain ST folder, and atomic folder writes.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from embtune.device import default_device, resolve_dtype
from embtune.errors import ConfigError
from embtune.models import loading
from embtune.models.architectures import (Family, family_of_config, folder_family, instruction_prompt,
                                          lora_target_modules)
from embtune.models.fast_transformer import ST_TRANSFORMER_TYPE, FastTransformer
from embtune.models.hub import hidden_token
from embtune.models.merging import merged_transformer
from embtune.models.st_modules import fp32_tail, read_tail_fp32
from embtune.utils.atomic import atomic_dir

logger = logging.getLogger("embtune")


class FastSentenceTransformer(SentenceTransformer):
    """A SentenceTransformer with embtune's loaders, PEFT adapters and merged/atomic saving."""

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        max_seq_length: int | None = None,
        dtype: torch.dtype | str | None = None,
        load_in_4bit: bool = False,
        full_finetuning: bool = False,
        for_inference: bool = False,
        pooling: str | None = None,
        trust_remote_code: bool = False,
        *,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
        instruction: str | None = None,
        prompts: dict[str, str] | None = None,
        packing: bool = True,
        attention: str = "auto",
    ) -> "FastSentenceTransformer":
        """Load a model from an ST folder, a plain HF folder/hub id, or an adapter folder.

        Args:
            model_name_or_path: folder or hub id (adapter folders load their base + the adapter).
            max_seq_length: truncate inputs to this many tokens (default: the model's own).
            dtype: dtype of the frozen weights; None/"auto" means bf16 where the device runs bf16
                matmuls fast (AMX/AVX512-bf16 CPUs, CUDA), else fp32. Full fine-tuning defaults to fp32.
            load_in_4bit: QLoRA: quantise linear layers to bitsandbytes nf4.
            full_finetuning: make every weight trainable (no adapter).
            for_inference: eval mode, no gradients, adapters merged into the weights in memory.
            pooling: override pooling ("mean", "cls", "lasttoken", "max"); default from the folder,
                or mean for encoders / last token for decoders when the folder has no ST config.
                An ST folder's own modules (Pooling, Dense heads, Normalize), prompts and tokenizer
                are kept as saved; a plain HF folder gets its family's defaults (see `family`).
            trust_remote_code: allow custom modelling code from the folder/hub (off by default).
            device: "cpu", "cuda", ... (default: CUDA when available).
            allow_pickle: allow ``.bin`` pickle weights (refused by default).
            instruction: for decoder embedders, the task put before queries as
                ``"Instruct: {instruction}\\nQuery: "`` (for encoders the text itself is the query prompt).
            prompts: ST prompts to set after loading, used as they are, e.g. ``{"query": "query: ",
                "document": "passage: "}`` for e5; they override the folder's own and are saved with the
                model. A ``"query"`` prompt excludes ``instruction``.
            packing: run text batches padding-free (packed tokens, block-diagonal attention) where
                the architecture allows it (see `embtune.models.fast_transformer`); False keeps ST's
                padded forward.
            attention: how packed attention is computed: "auto" (default: the fastest implementation
                on this machine, timed once and cached; ``$EMBTUNE_ATTENTION`` overrides it) or a name
                such as "bucket", "sequence", "matmul", "matmul-recompute", "eager", each optionally
                with "@fp32"/"@bf16" (see `embtune.models.attention_choice`).
        Returns:
            A FastSentenceTransformer on ``device``.
        """
        loading.check_training_mode(full_finetuning, load_in_4bit)
        loading.check_load_arguments(max_seq_length, pooling)
        if instruction is not None and prompts and prompts.get("query") is not None:
            raise ConfigError("give either an instruction or a query prompt, not both (the instruction becomes "
                              "the query prompt)")
        device = torch.device(device) if device is not None else default_device()
        if dtype is None and full_finetuning:
            dtype = torch.float32
        torch_dtype = resolve_dtype(dtype, device)
        source = loading.inspect_source(model_name_or_path)
        if source.is_local:
            loading.check_safe_weights(source.path, allow_pickle)
            loading.check_model_files(source, allow_pickle)
        family = family_of_config(loading.read_config(source, trust_remote_code))
        model_kwargs = loading.model_kwargs_for(torch_dtype, device, load_in_4bit, allow_pickle)

        adapter_st = source.is_adapter and source.is_local and os.path.isfile(
            os.path.join(source.path, "modules.json"))
        from_folder = source.is_sentence_transformer or adapter_st
        with loading.load_errors(source.path):
            if from_folder:
                model = cls(source.path, device=str(device), trust_remote_code=trust_remote_code,
                            model_kwargs=model_kwargs)
                model._embtune_tail_fp32 = read_tail_fp32(source.path, model)
            else:
                path = loading.adapter_base_path(source) if source.is_adapter else source.path
                modules = loading.build_modules_for_plain_model(path, family, model_kwargs, max_seq_length,
                                                                trust_remote_code)
                model = cls(modules=modules, device=str(device), prompts=loading.default_prompts(family))
                if source.is_adapter:
                    model.load_adapter(source.path)
        model._configure_family(family, max_seq_length, pooling, instruction, from_folder)
        model.prompts.update({role: text for role, text in (prompts or {}).items() if text is not None})
        model._install_fast_transformer(packing, attention)
        if full_finetuning:
            for param in model.parameters():
                param.requires_grad_(True)
        else:
            for param in model.parameters():
                param.requires_grad_(False)
        if for_inference:
            model._prepare_for_inference()
        return model

    def _configure_family(self, family: Family, max_seq_length: int | None, pooling: str | None,
                          instruction: str | None, from_folder: bool = False) -> None:
        """Apply sequence length, pooling override and the family's tokenizer rules after loading.

        ``from_folder``: the model came from an ST folder, whose pooling, modules, prompts and
        tokenizer settings stay as saved; only a causal decoder pooling its last token gets the
        EOS/left-padding rule (and a pad token where it has none). A plain HF folder gets the
        family's padding side.
        """
        if max_seq_length is not None:
            self.max_seq_length = max_seq_length
        if pooling is not None:
            loading.set_pooling_mode(self, pooling)
        mode = loading.pooling_mode_of(self) or family.pooling
        family = folder_family(family, mode) if from_folder else family
        self._embtune_family = family
        tokenizer = self.tokenizer
        if family.kind == "decoder" and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if family.append_eos or not from_folder:
            tokenizer.padding_side = family.padding_side
        if family.append_eos:
            loading.ensure_eos_appended(tokenizer)
        if instruction is not None:
            decoder = family.kind == "decoder"
            self.prompts["query"] = instruction_prompt(instruction) if decoder else instruction
        logger.info("embtune: %s model (%s attention), %s pooling, %s padding, modules %s, prompts %s",
                    family.model_type or "unknown", family.attention, mode, tokenizer.padding_side,
                    [type(m).__name__ for m in self._modules.values()], sorted(self.prompts) or "none")

    @property
    def family(self) -> Family | None:
        """What embtune detected at load (`embtune.models.architectures.Family`): encoder/decoder
        (bidirectional/causal attention), pooling mode, padding side, EOS rule, model type."""
        return getattr(self, "_embtune_family", None)

    def _install_fast_transformer(self, packing: bool, attention: str) -> None:
        """Swap ST's Transformer (first module) for a `FastTransformer` sharing its model and tokenizer.

        Pooling stays ST's own unless the caller asks for the kernel (``use_fast_pooling(model)``,
        `embtune.models.pooling`; ``save`` writes it as ST's Pooling either way)."""
        from sentence_transformers.sentence_transformer.modules import Transformer

        name, first = next(iter(self._modules.items()))
        if isinstance(first, FastTransformer):
            first.set_packing(packing, attention)
        elif isinstance(first, Transformer):
            self._modules[name] = FastTransformer.from_transformer(first, packing=packing, attention=attention)

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model inside the first (Transformer) module."""
        return self[0].auto_model

    def _prepare_for_inference(self) -> None:
        """Eval mode, no gradients; LoRA layers merged in memory where the base is not quantised."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not getattr(self.hf_model, "is_loaded_in_4bit", False):
            for module in self.hf_model.modules():
                if isinstance(module, BaseTunerLayer) and not module.merged:
                    module.merge(safe_merge=True)
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)

    @staticmethod
    def get_peft_model(
        model: "FastSentenceTransformer",
        r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: str | list[str] = "all-linear",
        bias: str = "none",
        use_rslora: bool = False,
        random_state: int = 3407,
        lora_compute: str = "bf16",
        **lora_kwargs: Any,
    ) -> "FastSentenceTransformer":
        """Attach a PEFT LoRA adapter (QLoRA when the model was loaded in 4-bit) and return the model.

        ``target_modules="all-linear"`` resolves to every linear layer of the transformer body for the
        model's architecture (see `lora_target_modules`); a list of names is used as given. Only the
        LoRA weights are trainable afterwards (held in fp32; the frozen base keeps its dtype).
        Extra keyword arguments go to ``peft.LoraConfig`` (e.g. ``layers_to_transform``).
        ``lora_compute`` picks the arithmetic of LoRA layers on dense bases (`embtune.models.fast_lora`):
        "bf16" (default: fp32 adapter weights, adapter branch computed in the base's dtype, like
        autocast; the fastest), "exact" (PEFT's fp32 adapter arithmetic bit for bit, fewer passes) or
        "peft" (PEFT's own forward). QLoRA layers take the fused NF4 path in "bf16" mode
        (`embtune.models.fast_lora_4bit`) and PEFT's bitsandbytes layer otherwise.
        """
        from peft import LoraConfig, TaskType

        from embtune.models.fast_lora import COMPUTE_MODES, set_lora_compute, use_fast_lora
        from embtune.models.fast_lora_4bit import use_fast_lora_4bit

        if r <= 0 or lora_alpha <= 0:
            raise ConfigError(f"LoRA needs r > 0 and lora_alpha > 0 (got r={r}, lora_alpha={lora_alpha})")
        if lora_compute not in COMPUTE_MODES:
            raise ConfigError(f"lora_compute must be one of {', '.join(COMPUTE_MODES)}, got {lora_compute!r}")
        hf = model[0].auto_model
        quantized = getattr(hf, "is_loaded_in_4bit", False) or getattr(hf, "is_loaded_in_8bit", False)
        if getattr(hf, "is_loaded_in_4bit", False):
            loading.prepare_4bit_for_training(hf)
        targets = lora_target_modules(hf, target_modules)
        config = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=r, lora_alpha=lora_alpha,
                            lora_dropout=lora_dropout, target_modules=targets, bias=bias,
                            use_rslora=use_rslora, **lora_kwargs)
        if not quantized:
            use_fast_lora(config)
        elif getattr(hf, "is_loaded_in_4bit", False):
            use_fast_lora_4bit(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state)
            model.add_adapter(config)
        set_lora_compute(hf, lora_compute)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()
                param.requires_grad_(True)
            else:
                param.requires_grad_(False)
        return model

    def has_adapter(self) -> bool:
        """True when a PEFT adapter is attached to the transformer."""
        return bool(getattr(self.hf_model, "_hf_peft_config_loaded", False))

    def save(self, path: str, *args: Any, **kwargs: Any) -> None:
        """ST's save (adapter-only when a LoRA adapter is attached), written atomically to ``path``.

        modules.json names sentence-transformers' own ``Transformer`` for the first module (not
        embtune's FastTransformer) and a `FastPooling` is saved as ST's ``Pooling`` (``1_Pooling/``),
        so the folder loads in any ST install without embtune. Frozen
        Dense heads are written with the fp32 weights they were loaded from (`embtune.models.st_modules`).
        """
        from embtune.models.pooling import plain_pooling

        tail = fp32_tail(self, getattr(self, "_embtune_tail_fp32", {}))
        with atomic_dir(path) as tmp, tail, plain_pooling(self):
            super().save(str(tmp), *args, **kwargs)
            _name_st_transformer(os.path.join(str(tmp), "modules.json"))

    def save_pretrained_merged(self, path: str | os.PathLike, *, create_model_card: bool = True) -> None:
        """Write the full model with the adapter merged in: a plain ST folder any ST install loads.

        The merge reloads the base weights in fp32 (dequantising them for QLoRA), applies the adapter
        with PEFT's ``merge_and_unload(safe_merge=True)`` (non-finite results raise), and saves
        ``model.safetensors``, tokenizer, pooling and prompts atomically. Without an adapter this is
        a full save.
        """
        if not self.has_adapter():
            self.save(_str(path), create_model_card=create_model_card)
            return
        transformer = self[0]
        live = transformer.model
        transformer.model = merged_transformer(live)
        try:
            self.save(_str(path), create_model_card=create_model_card)
        finally:
            transformer.model = live

    def save_pretrained_gguf(self, path: str | os.PathLike, quantization: str = "f16") -> Path:
        """Export to GGUF for llama.cpp / Ollama; returns the ``.gguf`` path written.

        ``path`` is a ``*.gguf`` file or a folder (file ``model-{quantization}.gguf``); an Ollama
        ``Modelfile`` is written beside it. ``quantization``: "f32", "f16", "bf16" or "q8_0".
        The merged model is saved to a temporary folder and exported from there (`embtune.export.formats`).
        """
        return self._export_merged("gguf", path, quantization)

    def save_pretrained_tei(self, folder: str | os.PathLike) -> Path:
        """Export a folder Text Embeddings Inference serves as is (``--model-id folder``); returns it."""
        return self._export_merged("tei", folder)

    def save_pretrained_onnx(self, folder: str | os.PathLike) -> Path:
        """Export ``model.onnx`` (pooling + normalisation in the graph) and tokenizer to ``folder``; returns it."""
        return self._export_merged("onnx", folder)

    def _export_merged(self, fmt: str, out: str | os.PathLike, quantization: str | None = None) -> Path:
        """Save the merged model to a temporary folder and run the ``fmt`` writer on it; returns the path written.

        The writers read a folder and never this class (`embtune.export.formats`), so this import
        makes no circle.
        """
        from embtune.export.formats import check_request, export_merged_folder

        quantization = check_request(fmt, out, quantization)
        with tempfile.TemporaryDirectory(prefix="embtune-export-") as tmp:
            merged = os.path.join(tmp, "merged")
            self.save_pretrained_merged(merged, create_model_card=False)
            return export_merged_folder(merged, fmt, out, quantization)

    def push_to_hub(self, repo_id: str, token: str | None = None, *args: Any, **kwargs: Any) -> str:
        """sentence-transformers' upload (the adapter only when one is attached); returns the commit URL.

        The token never appears in a log line or an error message: a failed upload raises a
        one-line EmbtuneError with the token redacted (`embtune.models.hub.hidden_token`).
        """
        with hidden_token(token):
            return super().push_to_hub(repo_id, token, *args, **kwargs)

    def push_to_hub_merged(self, repo_id: str, token: str | None = None, private: bool | None = None,
                           commit_message: str = "Upload merged embtune model") -> str:
        """Save the merged model to a temporary folder and upload it to the Hub; returns the repo URL.

        As with ``push_to_hub``, the token is kept out of logs and error messages.
        """
        from embtune.models.hub import push_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, "model")
            self.save_pretrained_merged(folder)
            return push_folder(folder, repo_id, token=token, private=private, commit_message=commit_message)


def _name_st_transformer(modules_json: str) -> None:
    """Rewrite FastTransformer entries of a saved modules.json to ST's own Transformer type."""
    if not os.path.isfile(modules_json):
        return
    with open(modules_json, encoding="utf-8") as fh:
        modules = json.load(fh)
    fast_type = f"{FastTransformer.__module__}.{FastTransformer.__name__}"
    for entry in modules:
        if entry.get("type") == fast_type:
            entry["type"] = ST_TRANSFORMER_TYPE
    with open(modules_json, "w", encoding="utf-8") as fh:
        json.dump(modules, fh, indent=2)


def _str(path: str | os.PathLike) -> str:
    return os.fspath(path)
