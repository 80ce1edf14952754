"""Exports that load in real serving tools: GGUF (llama.cpp, Ollama), a TEI folder, ONNX; rerankers
(cross-encoders) as a TEI ``/rerank`` folder or ONNX with the score head inside (`export_reranker`).

Every exporter reads a merged sentence-transformers folder (DESIGN §1); `export_model` merges an
adapter folder on the fly first. Public names are imported lazily, so ``import embtune.export``
does not pull in gguf, onnx or onnxruntime.
"""
from __future__ import annotations

from embtune.lazy import lazy_exports


_EXPORTS = {
    "export_model": "embtune.export.api",
    "FORMATS": "embtune.export.formats",
    "export_merged_folder": "embtune.export.formats",
    "export_gguf": "embtune.export.gguf",
    "export_tei": "embtune.export.tei",
    "export_onnx": "embtune.export.onnx",
    "validate_tei_folder": "embtune.export.tei_rules",
    "export_reranker": "embtune.export.reranker",
    "export_reranker_tei": "embtune.export.reranker",
    "export_reranker_onnx": "embtune.export.reranker",
    "verify_reranker_onnx": "embtune.export.reranker",
    "RERANKER_FORMATS": "embtune.export.reranker",
    "QUANTIZATIONS": "embtune.export.gguf_arch",
}
__all__ = list(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
