"""One entry point for every export format, shared by the model methods, the CLI and from-corpus."""
from __future__ import annotations

import os
from pathlib import Path

from embtune.errors import ExportError
from embtune.export.gguf_arch import QUANTIZATIONS
from embtune.export.output import check_output_parent
from embtune.export.source import prepared_folder

FORMATS = ("gguf", "tei", "onnx")


def check_request(fmt: str, out: str | os.PathLike, quantization: str | None) -> str:
    """Validate an export request before any work; returns the quantization to use ("f16" for None).

    Raises ExportError for an unknown format or GGUF quantization, or an output whose parent folder
    cannot be created or written.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    quantization = quantization or "f16"
    if fmt == "gguf" and quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown GGUF quantization {quantization!r}; "
                          f"use one of {', '.join(QUANTIZATIONS)}")
    check_output_parent(out)
    return quantization


def export_model(model_dir: str | os.PathLike, fmt: str, out: str | os.PathLike,
                 quantization: str | None = "f16") -> Path:
    """Export ``model_dir`` as ``fmt`` ("gguf", "tei" or "onnx") to ``out``; returns the path written.

    ``model_dir`` may be a merged sentence-transformers folder, or an adapter folder / plain Hugging
    Face folder, which is merged on the fly into a temporary folder first. ``out`` is the output
    folder (for GGUF also a ``*.gguf`` file path; see `export_gguf`). ``quantization`` ("f32",
    "f16", "bf16", "q8_0"; None means "f16") applies to GGUF only and is ignored for the other formats.
    Raises ExportError (one line) for an unknown format or quantization, an unsupported
    architecture, a missing tokenizer.json or an unwritable output.
    """
    quantization = check_request(fmt, out, quantization)
    with prepared_folder(model_dir) as folder:
        if fmt == "gguf":
            from embtune.export.gguf import export_gguf

            return export_gguf(folder, out, quantization)
        if fmt == "tei":
            from embtune.export.tei import export_tei

            return export_tei(folder, out)
        from embtune.export.onnx import export_onnx

        return export_onnx(folder, out)
