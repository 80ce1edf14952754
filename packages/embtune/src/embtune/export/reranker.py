"""Export a reranker (a cross-encoder: encoder + one-logit score head) for serving.

* `export_reranker_tei`: a folder Text Embeddings Inference serves at ``/rerank`` (classifier mode:
  ``config.json`` names a ``*ForSequenceClassification`` with one label in ``id2label``; the
  weights, head included; the fast ``tokenizer.json``; a legacy ``sentence_bert_config.json`` whose
  ``max_seq_length`` is the CrossEncoder's, so TEI truncates pairs where sentence-transformers does).
  Checked with `validate_tei_folder` (``reranker=True``) before it is swapped in.
* `export_reranker_onnx`: ``model.onnx`` mapping the tokens of a (query, document) pair to the raw
  score: output ``logits`` (batch, 1), the head inside the graph, so ``logits[:, 0]`` equals
  `embtune.rerankers.score_pairs` (the names Optimum's sequence-classification exports use, beside
  ``config.json``). Checked in onnxruntime against the CrossEncoder (`verify_reranker_onnx`) before
  it is swapped in.
* `export_reranker`: either of the two by name (for the CLI).

Input (DESIGN §1: exporters read a folder): a reranker folder (what `save_reranker` writes, or a
Hugging Face ``*ForSequenceClassification`` folder such as ms-marco-MiniLM or bge-reranker), or an
in-memory ``CrossEncoder``, first saved merged (`save_reranker`) into a temporary folder. Decoder
rerankers (Qwen3-Reranker style: causal LM + the "yes"/"no" ``LogitScore``) are refused with an
ExportError: TEI has no classifier for decoders, and their score depends on a prompt template an
ONNX graph of token ids cannot apply. Adapter folders are refused (save the reranker merged).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from embtune.errors import EmbtuneError, ExportError
from embtune.export.output import (check_output_parent, copy_file, inside, make_readable, output_folder,
                                   write_json, write_text)
from embtune.export.source import max_seq_length_of, model_file, read_json
from embtune.export.tei import TOKENIZER_FILES, tei_max_input_length, weight_files
from embtune.export.tei_rules import TEI_RERANKER_HEADS, validate_tei_folder, weight_keys

logger = logging.getLogger("embtune")

RERANKER_FORMATS = ("tei", "onnx")
SCORE_OUTPUT = "logits"
TRACE_PAIRS = [("a short query", "a short document"),
               ("a somewhat longer query, with words", "a document that needs padding to line up, and more")]
DECODER_REFUSAL = ("decoder rerankers (causal LM + yes/no LogitScore, Qwen3-Reranker style) are not "
                   "exported: TEI serves no classifier for decoders and their score needs the prompt "
                   "template; serve them with sentence-transformers")


@dataclass
class RerankerFolder:
    """What the reranker exporters read from a merged reranker folder (nothing loaded)."""

    path: Path
    config: dict[str, Any]
    max_length: int | None

    @property
    def model_type(self) -> str:
        """``config.json`` ``model_type`` (e.g. "bert")."""
        return str(self.config.get("model_type", ""))


def read_reranker_folder(folder: str | os.PathLike) -> RerankerFolder:
    """Read a merged encoder-reranker folder; raise ExportError (naming the file) if it is not one.

    In: a folder with ``config.json`` naming one ``*ForSequenceClassification`` with a single label,
    ``model.safetensors`` (or an index) without ``lora_`` tensors, and ``tokenizer.json``. Out: a
    `RerankerFolder` (config, with ``label2id`` filled in from ``id2label`` if absent, and the token
    limit: ``max_seq_length_of``). Decoders, adapters and non-reranker folders are refused.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ExportError("model folder not found", path=path)
    if (path / "adapter_config.json").is_file():
        raise ExportError("this is a reranker adapter folder; export a merged reranker "
                          "(embtune.rerankers.save_reranker(model, path), merged by default)", path=path)
    config = read_json(path / "config.json")
    arch = str((config.get("architectures") or [""])[0])
    if arch.endswith("ForCausalLM") or "LogitScore" in _module_types(path):
        raise ExportError(DECODER_REFUSAL, path=path / "config.json")
    if not arch.endswith("ForSequenceClassification"):
        raise ExportError(f"not a reranker: config.json names {arch or 'no architecture'}, not a "
                          "*ForSequenceClassification (load it with embtune.rerankers.load_reranker, which "
                          "adds a score head, then save_reranker)", path=path / "config.json")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) != 1:
        count = len(id2label) if isinstance(id2label, dict) else "no"
        raise ExportError(f"a reranker has one score (one label); config.json id2label has {count} labels",
                          path=path / "config.json")
    if not isinstance(config.get("label2id"), dict):
        config = {**config, "label2id": {str(v): int(k) for k, v in id2label.items()}}
    if not (path / "tokenizer.json").is_file():
        raise ExportError("no tokenizer.json: exports need a fast (Rust) tokenizer", path=path)
    if not ((path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()):
        raise ExportError("no model.safetensors (pickle weights are not exported)", path=path)
    lora = sorted(k for k in weight_keys(path) if "lora_" in k)
    if lora:
        raise ExportError(f"weights still hold LoRA tensors ({lora[0]}); export a merged reranker", path=path)
    return RerankerFolder(path=path, config=config, max_length=max_seq_length_of(path, config))


def _module_types(folder: Path) -> str:
    """The ``modules.json`` type names of an ST folder, joined ("" without the file)."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return ""
    return " ".join(str(m.get("type", "")) for m in read_json(modules) if isinstance(m, dict))


@contextlib.contextmanager
def reranker_folder(model_or_folder: Any) -> Iterator[Path]:
    """Yield a merged reranker folder for ``model_or_folder``.

    A folder (str / PathLike) is yielded as is. An in-memory ``CrossEncoder`` is saved merged with
    `embtune.rerankers.save_reranker` into a temporary folder, removed afterwards (a decoder is
    refused first). Anything else: TypeError. Save failures come out as ExportError.
    """
    if isinstance(model_or_folder, (str, os.PathLike)):
        yield Path(model_or_folder)
        return
    from embtune.rerankers.adapters import hf_model_of, save_reranker
    from embtune.rerankers.loading import is_reranker

    if not is_reranker(model_or_folder):
        raise TypeError(f"expected a reranker folder or a sentence-transformers CrossEncoder, "
                        f"got {type(model_or_folder).__name__}")
    hf = hf_model_of(model_or_folder)
    hf = getattr(hf, "get_base_model", lambda: hf)()
    if type(hf).__name__.endswith("ForCausalLM"):
        raise ExportError(DECODER_REFUSAL)
    with tempfile.TemporaryDirectory(prefix="embtune-export-") as tmp:
        merged = Path(tmp) / "merged"
        try:
            save_reranker(model_or_folder, merged)
        except ExportError:
            raise
        except EmbtuneError as exc:
            raise ExportError(f"cannot save the reranker for export: {exc}") from None
        yield merged


def _copy_tokenizer(source: Path, tmp: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            copy_file(source / name, tmp, name)


def _tei_readme(rf: RerankerFolder, max_length: int) -> str:
    return "\n".join([
        "# Text Embeddings Inference reranker folder (written by embtune)", "",
        "```bash",
        "docker run -p 8080:80 -v $PWD:/data ghcr.io/huggingface/text-embeddings-inference:cpu-1.9 \\",
        "    --model-id /data/<this folder>",
        "curl localhost:8080/rerank -H 'Content-Type: application/json' \\",
        "    -d '{\"query\": \"what is X?\", \"texts\": [\"X is ...\", \"Y is ...\"], \"raw_scores\": true}'",
        "```", "",
        f"Architecture: {rf.config['architectures'][0]} with one label, so TEI serves `/rerank`. Pairs are "
        f"truncated to {max_length} tokens (`sentence_bert_config.json`), like sentence-transformers.",
        "TEI returns `sigmoid(logit)` by default; `\"raw_scores\": true` returns the logit that",
        "`embtune.rerankers.score_pairs` gives. The order is the same either way.", ""])


def export_reranker_tei(model_or_folder: Any, out: str | os.PathLike) -> Path:
    """Export a reranker as a folder TEI serves at ``/rerank``; returns ``out``.

    In: a reranker folder or an in-memory CrossEncoder (see the module docstring); the output folder,
    replaced atomically after `validate_tei_folder` (``reranker=True``) accepts it. Out: ``out``
    holding ``config.json`` (the ``*ForSequenceClassification``, one label, ``label2id``),
    ``model.safetensors`` (head included), the tokenizer files, ``sentence_bert_config.json``
    (``max_seq_length``: the CrossEncoder's limit, capped at the model's positions) and a README.
    Raises ExportError for decoders, adapters, a model type TEI has no classifier head for (MPNet,
    Nomic, Qwen3...), a head whose weights TEI would not find, or an unwritable output.
    """
    check_output_parent(out)
    with reranker_folder(model_or_folder) as folder:
        rf = read_reranker_folder(folder)
        if rf.model_type not in TEI_RERANKER_HEADS:
            raise ExportError(f"TEI serves no reranker (classifier) for {rf.model_type or 'this'} models; "
                              f"it does for {', '.join(sorted(TEI_RERANKER_HEADS))}",
                              path=rf.path / "config.json")
        if rf.model_type == "distilbert":
            logger.warning("embtune: TEI serves DistilBERT rerankers without flash attention only "
                           "(CPU, or CUDA with USE_FLASH_ATTENTION=false)")
        max_length = tei_max_input_length(rf.config, rf.max_length)
        with output_folder(out) as tmp:
            for name in weight_files(rf.path):
                copy_file(model_file(rf.path, name, rf.path / "model.safetensors.index.json"), tmp, name)
            _copy_tokenizer(rf.path, tmp)
            write_json(tmp, "config.json", rf.config)
            write_json(tmp, "sentence_bert_config.json",
                       {"max_seq_length": max_length, "do_lower_case": False})
            write_text(tmp, "README.md", _tei_readme(rf, max_length))
            validate_tei_folder(tmp, reranker=True)
            make_readable(tmp)
    logger.info("embtune: wrote TEI reranker folder %s", out)
    return Path(out)


def _score_graph(hf_model: Any, input_names: list[str]):
    """The HF sequence-classification model as a module: token tensors (in ``input_names`` order) →
    ``(batch, 1)`` logits, the score head included."""
    import torch

    class _ScoreGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf_model = hf_model
            self.input_names = input_names

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.hf_model(**dict(zip(self.input_names, inputs)), return_dict=True).logits

    return _ScoreGraph().eval()


def _load_for_onnx(rf: RerankerFolder):
    """The folder's HF model (fp32, eager attention, CPU, eval mode) and tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(rf.path), dtype=torch.float32, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(str(rf.path))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the reranker for ONNX export ({str(exc).splitlines()[0]})",
                          path=rf.path) from None
    return model.eval(), tokenizer


def _pair_tokens(tokenizer: Any, pairs: list[tuple[str, str]], names: list[str], max_length: int | None):
    batch = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
    return [batch[n] for n in names]


def verify_reranker_onnx(onnx_folder: str | os.PathLike, reference: Any,
                         pairs: list[tuple[str, str]] | None = None, atol: float = 1e-4) -> float:
    """Compare a reranker ONNX export run in onnxruntime with the CrossEncoder's `score_pairs`.

    In: the ONNX folder (``model.onnx``, tokenizer, ``onnx_export.json``); ``reference``: the reranker
    folder it came from (loaded fp32 on CPU) or a CrossEncoder; probe pairs (default
    `embtune.export.verify.RERANK_PAIRS`); the tolerance. Out: the largest absolute score difference.
    Raises ExportError when it exceeds ``atol * max(1, largest |score|)`` (fp32 logits agree to ~1e-6
    relative).
    """
    import numpy as np

    from embtune.export.verify import RERANK_PAIRS, onnx_scores, reference_scores

    pairs = list(pairs or RERANK_PAIRS)
    got = onnx_scores(onnx_folder, pairs)
    if isinstance(reference, (str, os.PathLike)):
        want = reference_scores(reference, pairs)
    else:
        from embtune.rerankers import score_pairs

        want = score_pairs(reference, pairs, batch_size=len(pairs))
    diff = float(np.abs(got - want).max())
    if not diff <= atol * max(1.0, float(np.abs(want).max())):
        raise ExportError(f"ONNX reranker scores differ from the CrossEncoder's (max abs diff {diff:.3g})",
                          path=onnx_folder)
    return diff


def export_reranker_onnx(model_or_folder: Any, out: str | os.PathLike, atol: float = 1e-4) -> Path:
    """Export a reranker to an ONNX folder whose graph ends in the score; returns ``out``.

    In: a reranker folder or an in-memory CrossEncoder (module docstring); the output folder; the
    self-check tolerance (`verify_reranker_onnx`). Out: ``out`` holding ``model.onnx`` (inputs the
    tokenizer's ``input_ids`` / ``attention_mask`` [/ ``token_type_ids``] of the (query, document)
    pair, int64 (batch, sequence); output ``logits`` (batch, 1): the raw score, head inside), the
    tokenizer files, ``config.json`` and ``onnx_export.json`` (inputs, output, ``max_seq_length``,
    opset, the self-check's max abs diff). Replaced atomically after the graph passes
    ``onnx.checker`` and matches the CrossEncoder in onnxruntime on a batch shaped unlike the traced one.
    """
    from embtune.export.onnx import GRAPH_INPUTS, OPSET, check_onnx_graph, trace_graph

    check_output_parent(out)
    with reranker_folder(model_or_folder) as folder:
        rf = read_reranker_folder(folder)
        model, tokenizer = _load_for_onnx(rf)
        accepted = inspect.signature(model.forward).parameters
        names = [n for n in GRAPH_INPUTS if n in tokenizer.model_input_names and n in accepted]
        info: dict[str, Any] = {"task": "rerank", "inputs": names, "output": SCORE_OUTPUT,
                                "score": "logits[:, 0], the raw logit (sigmoid for a probability)",
                                "max_seq_length": rf.max_length, "opset": OPSET,
                                "padding_side": tokenizer.padding_side}
        with output_folder(out) as tmp:
            _copy_tokenizer(rf.path, tmp)
            write_json(tmp, "config.json", rf.config)
            write_json(tmp, "onnx_export.json", info)
            onnx_path = inside(tmp, "model.onnx")
            example = _pair_tokens(tokenizer, TRACE_PAIRS, names, rf.max_length)
            trace_graph(_score_graph(model, names), example, onnx_path, output_name=SCORE_OUTPUT)
            check_onnx_graph(onnx_path)
            diff = verify_reranker_onnx(tmp, rf.path, atol=atol)
            write_json(tmp, "onnx_export.json", {**info, "self_check_max_abs_diff": diff})
            make_readable(tmp)
    logger.info("embtune: wrote ONNX reranker folder %s (max abs diff vs CrossEncoder %.2g)", out, diff)
    return Path(out)


def export_reranker(model_or_folder: Any, fmt: str, out: str | os.PathLike) -> Path:
    """Export a reranker as ``fmt`` ("tei" or "onnx", `RERANKER_FORMATS`) to ``out``; returns the path.

    In: a reranker folder or in-memory CrossEncoder, the format, the output folder. ExportError for
    another format (GGUF rerankers are not exported) or anything the chosen exporter refuses.
    """
    if fmt == "tei":
        return export_reranker_tei(model_or_folder, out)
    if fmt == "onnx":
        return export_reranker_onnx(model_or_folder, out)
    raise ExportError(f"rerankers are exported as {' or '.join(RERANKER_FORMATS)}, not {fmt!r}")
