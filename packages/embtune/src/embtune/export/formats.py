"""The export formats and their writers, run on a merged sentence-transformers folder.

This module never loads a model (DESIGN §1: exporters read a folder), so the model's own
``save_pretrained_gguf/tei/onnx`` methods can call it after saving their merged folder, while
`embtune.export.api.export_model` (which may merge an adapter folder with the model class first)
calls it too: ``models`` → ``export.formats`` and ``export.api`` → ``models``, never a circle.
"""
from __future__ import annotations

import os
from pathlib import Path

from embtune.errors import ExportError
from embtune.export.gguf_arch import QUANTIZATIONS
from embtune.export.output import check_output_parent

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


def export_merged_folder(folder: str | os.PathLike, fmt: str, out: str | os.PathLike,
                         quantization: str | None = "f16") -> Path:
    """Run the ``fmt`` writer ("gguf", "tei" or "onnx") on the merged ST folder ``folder``; returns the path written.

    ``out`` and ``quantization`` as in `embtune.export.api.export_model` (``quantization`` applies to
    GGUF only). The request is checked first (`check_request`); an adapter or plain Hugging Face
    folder is refused by the writers with an ExportError (use `export_model` to merge it on the fly).
    Only the chosen writer's module is imported.
    """
    quantization = check_request(fmt, out, quantization)
    if fmt == "gguf":
        from embtune.export.gguf import export_gguf

        return export_gguf(folder, out, quantization)
    if fmt == "tei":
        from embtune.export.tei import export_tei

        return export_tei(folder, out)
    from embtune.export.onnx import export_onnx

    return export_onnx(folder, out)
