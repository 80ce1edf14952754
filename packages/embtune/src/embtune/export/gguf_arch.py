"""Which Hugging Face architectures go to which llama.cpp architecture, and their GGUF keys/tensors.

Facts from llama.cpp's converter (``convert_hf_to_gguf.py``) and loader (``llama-model.cpp``):

* BERT, DistilBERT, RoBERTa, XLM-R, CamemBERT → ``bert``. RoBERTa-style models number positions
  from ``pad_token_id + 1``; llama.cpp from 0, so those first rows of the position table are
  dropped and ``context_length`` shrinks by as many (P7). llama.cpp's BERT graph uses GELU,
  absolute positions and token type 0, and needs ``token_type_count > 0``.
* Qwen3 → ``qwen3`` with ``attention.key_length/value_length = head_dim`` (P8), RMS-norm eps and
  rope base; it stays causal and pools with LAST.
* No llama.cpp architecture for MPNet; ModernBERT (``modern-bert``) needs a fused-QKV/GeGLU
  layout and a gpt2 vocabulary that this exporter does not write; both are refused.
* ST Dense heads exist in llama.cpp only for EmbeddingGemma (``gemma-embedding``, §1.5), which
  this exporter does not write: gemma3_text and any folder with a Dense module are refused.

Tensor names are mapped with ``gguf.get_tensor_name_map`` (the gguf package's own table); only the
prefix stripping and row slicing are done here. Dtype rules follow llama.cpp's converter: vectors,
norms, biases, ``position_embd`` and ``token_types`` stay F32; other matrices take the requested
type (Q8_0 needs rows that are a multiple of 32, else F16 is used for that tensor).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import gguf
import numpy as np

from embtune.errors import ExportError
from embtune.export.source import StFolder

logger = logging.getLogger("embtune")

QUANTIZATIONS = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
BERT_LIKE = {"bert": 0, "distilbert": 0, "roberta": None, "xlm-roberta": None, "camembert": None}
POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
GELU_NAMES = {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
UNSUPPORTED = {
    "mpnet": "llama.cpp has no MPNet architecture (its converter has no MPNet class)",
    "modernbert": "ModernBERT GGUF export is not implemented (llama.cpp's modern-bert needs fused QKV, "
                  "GeGLU and a BPE vocabulary); use the TEI or ONNX export",
    "gemma3_text": "embtune's GGUF writer has no gemma-embedding architecture and cannot carry its Dense "
                   "heads (llama.cpp's convert_hf_to_gguf.py --sentence-transformers-dense-modules can); "
                   "use the TEI or ONNX export",
}
DROP_PREFIXES = ("pooler.", "cls.", "lm_head.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.")


@dataclass
class ArchPlan:
    """How one model goes to GGUF: llama.cpp arch, key values, position-row offset, tensor prefix."""

    arch: gguf.MODEL_ARCH
    name: str
    n_layers: int
    position_offset: int
    strip_prefix: str


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def plan_for(st: StFolder) -> ArchPlan:
    """Decide the llama.cpp architecture for ``st``; ExportError for what llama.cpp cannot run."""
    cfg, model_type = st.config, st.model_type
    where = st.path / "config.json"
    if model_type in UNSUPPORTED:
        raise ExportError(f"cannot export {model_type} to GGUF: {UNSUPPORTED[model_type]}", path=where)
    if st.pooling not in POOLING:
        raise ExportError(f"llama.cpp pools with mean, cls or last token only; this model uses "
                          f"{st.pooling!r} pooling", path=st.path)
    if not st.include_prompt and any(st.prompts.values()):
        raise ExportError("pooling excludes the prompt tokens (include_prompt=false), which llama.cpp "
                          "cannot do", path=st.path)
    if st.extra_modules:
        raise ExportError(f"llama.cpp cannot run the {st.extra_modules[0].kind} module after pooling "
                          f"({st.extra_modules[0].path}); only Transformer+Pooling(+Normalize) models export "
                          "to GGUF", path=st.path / "modules.json")
    n_layers = _first(cfg, "num_hidden_layers", "n_layers")
    if model_type in BERT_LIKE:
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ExportError("llama.cpp's BERT needs absolute position embeddings", path=where)
        act = _first(cfg, "hidden_act", "activation")
        if act not in GELU_NAMES:
            raise ExportError(f"llama.cpp's BERT uses GELU; this model uses {act!r}", path=where)
        if st.pooling == "lasttoken":
            raise ExportError("last-token pooling on a BERT-style encoder is not exported", path=where)
        offset = 0 if BERT_LIKE[model_type] == 0 else int(cfg.get("pad_token_id", 1)) + 1
        prefix = {"bert": "bert.", "distilbert": "distilbert."}.get(model_type, "roberta.")
        return ArchPlan(gguf.MODEL_ARCH.BERT, "bert", int(n_layers), offset, prefix)
    if model_type == "qwen3":
        if st.pooling != "lasttoken":
            logger.warning("embtune: Qwen3 model with %s pooling: llama.cpp runs Qwen3 causally; "
                           "check parity", st.pooling)
        return ArchPlan(gguf.MODEL_ARCH.QWEN3, "qwen3", int(n_layers), 0, "model.")
    raise ExportError(f"GGUF export supports BERT, DistilBERT, RoBERTa/XLM-R and Qwen3 models, not "
                      f"{model_type or 'this model'} ({st.architecture})", path=where)


def add_hparams(writer: gguf.GGUFWriter, plan: ArchPlan, st: StFolder) -> int:
    """Write the architecture keys (§1.2, 1.3, 1.6) for ``plan``; returns the context length written."""
    cfg = st.config
    ctx = int(_first(cfg, "max_position_embeddings", "n_positions")) - plan.position_offset
    writer.add_context_length(ctx)
    writer.add_embedding_length(int(_first(cfg, "hidden_size", "dim")))
    writer.add_feed_forward_length(int(_first(cfg, "intermediate_size", "hidden_dim")))
    writer.add_block_count(plan.n_layers)
    heads = int(_first(cfg, "num_attention_heads", "n_heads"))
    writer.add_head_count(heads)
    writer.add_pooling_type(POOLING[st.pooling])
    if plan.arch == gguf.MODEL_ARCH.BERT:
        # DistilBERT's LayerNorms are built with eps 1e-12 and its config has no eps key.
        writer.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        return ctx
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads", heads)))
    writer.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    rope = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    if rope is None:
        raise ExportError("Qwen3 config has no rope_theta", path=st.path / "config.json")
    writer.add_rope_freq_base(float(rope))
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    return ctx


def _is_f32_tensor(name: str, array: np.ndarray) -> bool:
    return (array.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight")
            or name.startswith(("position_embd.", "token_types.")))


def encode_tensor(name: str, array: np.ndarray, quantization: str) -> tuple[np.ndarray, Any]:
    """Array and raw dtype (None for plain f16/f32) to store tensor ``name`` under ``quantization``."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    qtype = QUANTIZATIONS[quantization][0]
    if _is_f32_tensor(name, array) or qtype == gguf.GGMLQuantizationType.F32:
        return array, None
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), None
    if qtype == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        logger.info("embtune: %s rows (%d) are not a multiple of 32; stored as F16", name, array.shape[-1])
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, qtype), qtype


def gguf_tensors(plan: ArchPlan, state: dict[str, Any],
                 quantization: str) -> Iterator[tuple[str, np.ndarray, Any]]:
    """Yield ``(gguf_name, array, raw_dtype)`` for every tensor llama.cpp needs, in HF order.

    Heads an embedder does not use (pooler, MLM/LM heads, ``position_ids``) are dropped; a name the
    gguf table cannot map raises ExportError listing it.
    """
    table = gguf.get_tensor_name_map(plan.arch, plan.n_layers)
    names: dict[str, str] = {}
    unmapped = []
    for hf_name in state:
        name = hf_name[len(plan.strip_prefix):] if hf_name.startswith(plan.strip_prefix) else hf_name
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        if name.endswith("position_ids") or name.startswith(DROP_PREFIXES):
            continue
        target = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            unmapped.append(hf_name)
        else:
            names[hf_name] = target
    if unmapped:
        raise ExportError(f"{len(unmapped)} weights have no llama.cpp name (first: {unmapped[0]})")
    for hf_name, target in names.items():
        array = state[hf_name].detach().float().cpu().numpy()
        if target == "position_embd.weight" and plan.position_offset:
            array = array[plan.position_offset:]
        data, raw = encode_tensor(target, array, quantization)
        yield target, data, raw
