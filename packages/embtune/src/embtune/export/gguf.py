"""GGUF export for llama.cpp / llama-cpp-python / Ollama, written with the ``gguf`` package.

Input: a merged sentence-transformers folder. Output: one ``.gguf`` file with the architecture
keys, pooling type (from ``1_Pooling``), tokenizer and weights, plus an Ollama ``Modelfile``
beside it. The keys, tensor names and dtype rules are llama.cpp's (its ``convert_hf_to_gguf.py``),
implemented in `embtune.export.gguf_arch` and `embtune.export.gguf_vocab`; ``gguf.GGUFWriter``
does the file format, ``gguf.quants`` the BF16/Q8_0 packing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

import gguf

from embtune.errors import ExportError
from embtune.export.gguf_arch import QUANTIZATIONS, add_hparams, gguf_tensors, plan_for
from embtune.export.gguf_vocab import add_vocab
from embtune.export.output import check_output_parent, export_errors, make_readable, write_text
from embtune.export.source import StFolder, load_state_dict, read_st_folder

logger = logging.getLogger("embtune")


def gguf_target(out: str | os.PathLike, quantization: str) -> Path:
    """The .gguf path for ``out``: ``out`` itself when it ends in ``.gguf``, else ``out/model-{q}.gguf``."""
    out = Path(out).expanduser()
    return out if out.suffix.lower() == ".gguf" else out / f"model-{quantization}.gguf"


def modelfile_text(gguf_name: str, st: StFolder, context_length: int) -> str:
    """An Ollama Modelfile that loads ``gguf_name`` (a file in the same folder) as an embedding model."""
    num_ctx = min(st.max_seq_length or context_length, context_length)
    lines = [
        "# Ollama Modelfile written by embtune for a sentence-embedding model.",
        "#   ollama create my-embedder -f Modelfile",
        "#   curl http://localhost:11434/api/embed -d '{\"model\": \"my-embedder\", \"input\": [\"text\"]}'",
        f"# Pooling: {st.pooling} (stored in the GGUF). Compare embeddings with cosine similarity;",
        "# llama-cpp-python's embed() returns un-normalised vectors unless normalize=True.",
    ]
    prompts = {k: v for k, v in st.prompts.items() if v}
    if prompts:
        lines.append("# GGUF stores no prompts: prepend them to the texts yourself:")
        lines += [f"#   {name}: {json.dumps(text)}" for name, text in sorted(prompts.items())]
    lines += [f"FROM ./{gguf_name}", f"PARAMETER num_ctx {num_ctx}", ""]
    return "\n".join(lines)


def _write_gguf(path: Path, st: StFolder, quantization: str, state: dict) -> int:
    """Write the GGUF for ``st`` with weights ``state`` to ``path`` (not atomic; the caller renames).
    Returns the context length."""
    plan = plan_for(st)
    writer = gguf.GGUFWriter(str(path), plan.name)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(st.path.name if st.path.name not in ("", "merged") else plan.name)
        ctx = add_hparams(writer, plan, st)
        writer.add_file_type(QUANTIZATIONS[quantization][1])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_vocab(writer, st)
        for name, data, raw in gguf_tensors(plan, state, quantization):
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
    finally:
        writer.close()
    return ctx


def export_gguf(model_dir: str | os.PathLike, out: str | os.PathLike, quantization: str = "f16") -> Path:
    """Export the merged ST folder ``model_dir`` to GGUF; returns the path of the ``.gguf`` written.

    ``out`` is either a ``.gguf`` file path or a folder (the file is then ``model-{quantization}.gguf``);
    an Ollama ``Modelfile`` is written next to the file. ``quantization`` is "f32", "f16", "bf16"
    or "q8_0" (norms, biases and position tables always stay F32). The file is written under a
    temporary name and renamed, so a failed export leaves no partial file. Raises ExportError for
    architectures llama.cpp cannot run (MPNet, ModernBERT, Dense heads, max pooling), tokenizers it
    cannot reproduce, a missing tokenizer.json or an unwritable path.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown GGUF quantization {quantization!r}; "
                          f"use one of {', '.join(QUANTIZATIONS)}")
    st = read_st_folder(model_dir)
    plan_for(st)  # refuse unsupported models (and unmerged or misplaced weights) before touching the output
    state = load_state_dict(st.path)
    target = check_output_parent(gguf_target(out, quantization))
    if target.is_dir():
        raise ExportError("output path is a folder", path=target)
    with export_errors(target):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    try:
        with export_errors(target):
            ctx = _write_gguf(Path(tmp), st, quantization, state)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            make_readable(tmp)
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    make_readable(write_text(target.parent, "Modelfile", modelfile_text(target.name, st, ctx)))
    logger.info("embtune: wrote %s (%s, %s pooling)", target, quantization, st.pooling)
    return target
