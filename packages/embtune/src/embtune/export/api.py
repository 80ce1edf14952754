"""One entry point for every export format, shared by the CLI and from-corpus: any model folder in,
the format's files out (an adapter or plain Hugging Face folder is merged on the fly first)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from embtune.errors import EmbtuneError, ExportError
from embtune.export.formats import check_request, export_merged_folder


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
        return export_merged_folder(folder, fmt, out, quantization)


def _needs_merge(folder: Path) -> bool:
    """True unless ``folder`` already has the merged layout (ST files and HF model at the root)."""
    return ((folder / "adapter_config.json").is_file() or not (folder / "modules.json").is_file()
            or not (folder / "config.json").is_file())


@contextlib.contextmanager
def prepared_folder(model_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a merged ST folder for ``model_dir``, merging into a temporary folder when needed.

    A merged ST folder is yielded as is. An adapter folder (``adapter_config.json``), a plain
    Hugging Face folder (no ``modules.json``) or an old ST folder with the model in a subfolder
    (``0_Transformer/``) is loaded with `FastSentenceTransformer` in fp32 on the CPU and saved with
    ``save_pretrained_merged`` into a temporary folder, removed afterwards.
    Load errors come out as ExportError.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ExportError("model folder not found", path=folder)
    if not _needs_merge(folder):
        yield folder
        return
    from embtune.models import FastSentenceTransformer

    with tempfile.TemporaryDirectory(prefix="embtune-export-") as tmp:
        merged = Path(tmp) / "merged"
        try:
            model = FastSentenceTransformer.from_pretrained(folder, dtype="fp32", device="cpu")
            model.save_pretrained_merged(merged, create_model_card=False)
        except ExportError:
            raise
        except EmbtuneError as exc:
            raise ExportError(f"cannot merge the model for export: {exc}") from None
        del model
        yield merged
