"""ONNX export with pooling and normalisation inside the graph.

sentence-transformers' own ONNX export stops at the transformer's token embeddings, leaving
pooling and normalisation to the caller. Here the graph is the whole ST pipeline: the Hugging Face
model, then the folder's own Pooling module and the modules after it (Dense, Normalize), so
``onnxruntime`` returns the same ``sentence_embedding`` as ``model.encode``. Inputs are the tokenizer outputs
the model takes (``input_ids``, ``attention_mask`` and, for BERT-likes, ``token_type_ids``; listed
in ``onnx_export.json``), with dynamic batch and sequence axes.

Exporter choice (torch 2.13): the default dynamo exporter needs ``onnxscript``, which embtune does
not depend on; the TorchScript-based exporter (``dynamo=False``) is still shipped, works offline and
handles these models, so it is used. The result is checked with ``onnx.checker`` and run once in
``onnxruntime`` on a batch of a different shape than the traced one before it is written.
"""
from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from embtune.errors import ExportError
from embtune.export.output import copy_file, inside, make_readable, output_folder, write_json
from embtune.export.source import StFolder, read_st_folder
from embtune.export.tei import TOKENIZER_FILES

logger = logging.getLogger("embtune")

OPSET = 17
OUTPUT_NAME = "sentence_embedding"
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TRACE_TEXTS = ["a short text", "a somewhat longer text, so that the batch needs padding to line up"]
CHECK_TEXTS = ["first check text, with punctuation!", "second", "a third one for a batch of three"]


class EmbeddingGraph(torch.nn.Module):
    """HF model + the ST modules after it, as one module mapping token ids to sentence embeddings."""

    def __init__(self, st_model: torch.nn.Module, input_names: list[str]):
        """``st_model``: a loaded SentenceTransformer; ``input_names``: the graph inputs, in order."""
        super().__init__()
        self.hf_model = st_model[0].auto_model
        self.tail = torch.nn.ModuleList(list(st_model)[1:])
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Token tensors (in ``input_names`` order) → ``(batch, dim)`` sentence embeddings."""
        features = dict(zip(self.input_names, inputs))
        model_inputs = dict(features)
        if getattr(self.hf_model.config, "model_type", "") == "gemma3_text":
            model_inputs["attention_mask"] = gemma_bidirectional_masks(
                self.hf_model.config, features["attention_mask"], self.hf_model.dtype)
        out = self.hf_model(**model_inputs, return_dict=True)
        state = {"token_embeddings": out.last_hidden_state, "attention_mask": features["attention_mask"]}
        for module in self.tail:
            state = module(state)
        return state["sentence_embedding"]


def gemma_bidirectional_masks(config, attention_mask: torch.Tensor,
                              dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """EmbeddingGemma's attention masks, built with traceable tensor ops.

    transformers builds Gemma 3's masks with ``vmap``, which the TorchScript exporter cannot trace.
    In: the config (bidirectional, ``sliding_window`` as transformers holds it: keys closer than
    that many positions), ``attention_mask [B, L]`` and the model dtype. Out: the
    ``{"full_attention", "sliding_attention"}`` additive masks ``[B, 1, L, L]`` that
    ``Gemma3TextModel`` accepts in place of a padding mask: padding keys are masked in both, keys
    ``sliding_window`` or more positions away in the sliding one — the mask transformers builds.
    """
    positions = torch.ones_like(attention_mask).cumsum(-1)
    distance = (positions[:, :, None] - positions[:, None, :]).abs()
    keys = attention_mask[:, None, None, :].bool()
    near = (distance < config.sliding_window)[:, None, :, :]
    blocked = torch.finfo(dtype).min
    zeros = torch.zeros(distance.shape, dtype=dtype, device=attention_mask.device)[:, None]
    return {"full_attention": zeros.masked_fill(~keys, blocked),
            "sliding_attention": zeros.masked_fill(~(keys & near), blocked)}


def _check_supported(st: StFolder) -> None:
    if st.model_type == "gemma3_text" and not st.config.get("use_bidirectional_attention"):
        raise ExportError("a causal gemma3_text model is not exported to ONNX (only EmbeddingGemma-style "
                          "bidirectional ones)", path=st.path / "config.json")
    if not st.include_prompt and any(st.prompts.values()):
        raise ExportError("pooling excludes prompt tokens (include_prompt=false); the ONNX graph cannot know "
                          "the prompt length", path=st.path)
    unknown = [m for m in st.extra_modules if m.kind != "Dense"]
    if unknown:
        raise ExportError(f"module {unknown[0].kind} is not exported to ONNX", path=st.path / "modules.json")


def _load(st: StFolder):
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(st.path), device="cpu",
                                    model_kwargs={"attn_implementation": "eager", "dtype": torch.float32})
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the model for ONNX export ({str(exc).splitlines()[0]})",
                          path=st.path) from None
    return model.eval()


def _tokens(model, texts: list[str], names: list[str]) -> list[torch.Tensor]:
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length,
                            return_tensors="pt")
    return [batch[n] for n in names]


def trace_graph(graph: torch.nn.Module, example: list[torch.Tensor], path: Path,
                output_name: str = OUTPUT_NAME) -> None:
    """Export ``graph`` (a module taking the token tensors named ``graph.input_names``, returning one
    ``(batch, dim)`` tensor) to ONNX at ``path``: dynamic batch and sequence axes, output ``output_name``
    with its fixed size written into the shape, TorchScript exporter (module docstring). In: the module,
    example token tensors, the file path. Out: None."""
    names = graph.input_names
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output_name] = {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo (which needs onnxscript); it
        # still works in torch 2.13 and its warnings say nothing about this export.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            dim = int(graph(*example).shape[-1])
            torch.onnx.export(graph, tuple(example), str(path), dynamo=False, input_names=names,
                              output_names=[output_name], dynamic_axes=axes, opset_version=OPSET,
                              do_constant_folding=True)
    _fix_output_dim(path, dim)


def _fix_output_dim(path: Path, dim: int) -> None:
    """Write the embedding size into the output shape (the tracer leaves it symbolic after pooling)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out_dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    out_dim.Clear()
    out_dim.dim_value = dim
    onnx.save(model, str(path))


def check_onnx_graph(path: Path) -> None:
    """Run ``onnx.checker`` (full check) on the file at ``path``; ExportError when the graph is invalid."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX graph is invalid ({str(exc).splitlines()[0]})", path=path) from None


def check_onnx_matches(path: Path, model, graph_inputs: list[str], texts: list[str],
                       min_cosine: float = 0.9999) -> float:
    """Run the ONNX file at ``path`` in onnxruntime on ``texts`` and compare with ``model.encode``.

    Returns the lowest cosine similarity; raises ExportError when it is below ``min_cosine`` or the
    graph fails ``onnx.checker``.
    """
    import onnxruntime as ort

    check_onnx_graph(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(graph_inputs, _tokens(model, texts, graph_inputs))}
    got = session.run([OUTPUT_NAME], feeds)[0]
    want = model.encode(texts, convert_to_numpy=True, batch_size=len(texts))
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    if float(cos.min()) < min_cosine:
        raise ExportError(f"ONNX output differs from sentence-transformers (min cosine {cos.min():.6f})",
                          path=path)
    return float(cos.min())


def export_onnx(model_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export the merged ST folder ``model_dir`` to an ONNX folder ``out``; returns ``out``.

    ``out`` receives ``model.onnx`` (inputs: the tokenizer's ``input_ids``/``attention_mask``
    [/``token_type_ids``], int64, shape (batch, sequence); output ``sentence_embedding`` (batch, dim),
    pooled and — if the model normalises — L2-normalised), the tokenizer files, ``config.json`` and
    ``config_sentence_transformers.json`` (prompts), plus ``onnx_export.json`` describing the graph.
    The folder is replaced atomically after the graph has been checked in onnxruntime.
    """
    st = read_st_folder(model_dir)
    _check_supported(st)
    model = _load(st)
    accepted = inspect.signature(model[0].auto_model.forward).parameters
    names = [n for n in GRAPH_INPUTS if n in model.tokenizer.model_input_names and n in accepted]
    graph = EmbeddingGraph(model, names).eval()
    with output_folder(out) as tmp:
        onnx_path = inside(tmp, "model.onnx")
        trace_graph(graph, _tokens(model, TRACE_TEXTS, names), onnx_path)
        cosine = check_onnx_matches(onnx_path, model, names, CHECK_TEXTS)
        for name in TOKENIZER_FILES:
            if (st.path / name).is_file():
                copy_file(st.path / name, tmp, name)
        write_json(tmp, "config.json", st.config)
        write_json(tmp, "config_sentence_transformers.json", {
            "prompts": st.prompts, "default_prompt_name": st.default_prompt_name,
            "similarity_fn_name": st.similarity_fn_name or "cosine"})
        write_json(tmp, "onnx_export.json", {
            "inputs": names, "output": OUTPUT_NAME, "pooling": st.pooling, "normalized": st.normalize,
            "max_seq_length": model.max_seq_length, "opset": OPSET,
            "padding_side": model.tokenizer.padding_side, "self_check_min_cosine": round(cosine, 6)})
        make_readable(tmp)
    logger.info("embtune: wrote ONNX folder %s (min cosine vs ST %.6f)", out, cosine)
    return Path(out)
