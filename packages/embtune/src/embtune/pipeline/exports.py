"""The one place from-corpus reaches the exporters (``embtune.export``: GGUF, TEI, ONNX).

``--export gguf,tei,onnx`` calls ``embtune.export.export_model(merged, fmt, DIR/exports/<fmt>)`` once
per format. When the export package (or its optional dependencies: ``pip install 'embtune[export]'``)
is not available, asking for ``--export`` fails at once, before any work, with an ExportError that
says so; nothing pretends to export.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable

from embtune.errors import ExportError

EXPORT_PACKAGE = "embtune.export"


def export_function() -> Callable:
    """``embtune.export.export_model``; ExportError when the package or its dependencies are missing."""
    if importlib.util.find_spec(EXPORT_PACKAGE) is None:
        raise ExportError("--export is not available: GGUF/TEI/ONNX exports come with the embtune.export "
                          "package, which is not installed; run without --export")
    try:
        module = importlib.import_module(EXPORT_PACKAGE)
        function = getattr(module, "export_model", None)
    except ImportError as exc:
        raise ExportError(f"--export needs the export dependencies ({exc.name or exc}); "
                          "pip install 'embtune[export]'") from None
    if not callable(function):
        raise ExportError("embtune.export has no export_model(model_dir, fmt, out); cannot export")
    return function


def check_exports(formats: tuple[str, ...]) -> None:
    """Fail early (ExportError) when ``formats`` is non-empty and the exporters are unavailable."""
    if formats:
        export_function()


def run_exports(model_dir: Path, exports_dir: Path, formats: tuple[str, ...]) -> dict[str, str]:
    """Export the merged model folder ``model_dir`` to ``exports_dir/<format>`` for each format.

    Out: ``{format: path written}``. Raises ExportError when the exporters are unavailable or an
    export fails (e.g. an architecture a format does not support).
    """
    export_model = export_function()
    return {fmt: str(export_model(Path(model_dir), fmt, Path(exports_dir) / fmt)) for fmt in formats}
