"""``embtune export gguf|tei|onnx MODEL_DIR --out PATH``: for llama.cpp/Ollama, TEI or ONNX Runtime."""
from __future__ import annotations

import click


@click.command("export")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["gguf", "tei", "onnx"]))
@click.argument("model_dir", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(),
              help="Output folder (for gguf also a *.gguf file path).")
@click.option("--quantization", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), default=None,
              help="GGUF weight type [default: f16]; norms, biases and positions stay f32.")
def export_command(fmt, model_dir, out, quantization):
    """Export MODEL_DIR (a merged model, or an adapter folder merged on the fly) as FORMAT.

    \b
    gguf  one .gguf file + an Ollama Modelfile (llama.cpp, llama-cpp-python, Ollama)
    tei   a folder Text Embeddings Inference serves with --model-id
    onnx  model.onnx with pooling and normalisation inside, plus the tokenizer

    A reranker folder (`embtune train-reranker`, from-corpus --reranker) exports to tei (served
    on /rerank) or onnx (the score head inside); both are checked against the reranker's scores.
    """
    from pathlib import Path

    from embtune.errors import ExportError
    from embtune.export import export_model, export_reranker
    from embtune.rerankers.loading import saved_as_cross_encoder

    if quantization is not None and fmt != "gguf":
        raise ExportError(f"--quantization applies to gguf only, not {fmt}")
    if Path(model_dir).is_dir() and saved_as_cross_encoder(model_dir):
        path = export_reranker(model_dir, fmt, out)
        click.echo(f"{fmt} reranker export written to {path}")
        return
    path = export_model(model_dir, fmt, out, quantization)
    click.echo(f"{fmt} export written to {path}")
