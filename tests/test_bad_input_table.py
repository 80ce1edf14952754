"""Malformed input, one table row each, through the CLI and the Python API.

Every CLI row must exit with code 2 and print exactly one line, ``embtune: error: …``, naming the
file (and line) at fault, with no traceback. Every API row must raise one specific subclass of
`EmbtuneError` whose message is one line naming the file (and line), or the argument at fault.

A row lists the inputs to create (`File`, `Beir`, `ModelCopy`), keyed by a name; the arguments and
the expected texts refer to them as ``{name}`` (plus ``{model}``: a tiny random BERT folder, and
``{out}``: a fresh output path). Only that tiny model is used (no downloads), and every CLI row fails
before any weights are read. `tests/pipeline/test_bad_input.py` goes deeper into ``from-corpus``, and
`tests/data/test_data_readers.py` into the loaders.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from embtune import (
    EmbtuneError,
    FastSentenceTransformer,
    TrainConfig,
    evaluate_retrieval,
    load_beir,
    load_pairs,
    train,
)
from embtune.cli import main
from embtune.errors import ConfigError, DataFormatError, ExportError, ModelLoadError
from tiny_models import build_tiny_hf

# ---------------------------------------------------------------- inputs a row can ask for

PAIR = '{"anchor": "a", "positive": "p"}\n'
CORPUS = '{"_id": "d1", "title": "One", "text": "first"}\n{"_id": "d2", "text": "second"}\n'
QUERIES = '{"_id": "q1", "text": "which first"}\n{"_id": "q2", "text": "which second"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


@dataclass(frozen=True)
class File:
    """A file ``name`` with ``content`` (bytes written as they are)."""

    name: str
    content: str | bytes

    def make(self, root: Path, kit: Kit) -> Path:
        """Write the file under ``root``; return its path."""
        path = root / self.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.content if isinstance(self.content, bytes) else self.content.encode())
        return path


@dataclass(frozen=True)
class Beir:
    """A small valid BEIR folder with some files replaced (``None`` removes the file)."""

    files: dict[str, str | bytes | None] = field(default_factory=dict)

    def make(self, root: Path, kit: Kit) -> Path:
        """Write the folder under ``root``; return its path."""
        folder = root / "beir"
        contents = {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS, **self.files}
        for name, content in contents.items():
            if content is not None:
                File(name, content).make(folder, kit)
        return folder


@dataclass(frozen=True)
class ModelCopy:
    """A copy of the tiny model folder (``"hf"``: plain Hugging Face, ``"st"``: merged
    sentence-transformers) with files removed (``drop``) or written (``add``)."""

    kind: str = "hf"
    drop: tuple[str, ...] = ()
    add: dict[str, str | bytes] = field(default_factory=dict)

    def make(self, root: Path, kit: Kit) -> Path:
        """Copy the folder under ``root`` and apply the changes; return its path."""
        folder = root / f"model-{self.kind}"
        shutil.copytree(kit.hf if self.kind == "hf" else kit.st, folder)
        for name in self.drop:
            (folder / name).unlink()
        for name, content in self.add.items():
            File(name, content).make(folder, kit)
        return folder


@dataclass
class Kit:
    """What every row may refer to: the tiny model folders, and a model instance made on demand."""

    hf: Path
    st: Path
    _model: Any = None

    def model(self) -> FastSentenceTransformer:
        """The tiny model, loaded once (frozen, on the CPU)."""
        if self._model is None:
            self._model = FastSentenceTransformer.from_pretrained(self.hf, device="cpu")
        return self._model


def adapter(base: str = "/nonexistent/base-model") -> dict[str, str]:
    """Files of an adapter folder whose ``adapter_config.json`` names ``base``."""
    config = {"peft_type": "LORA", "base_model_name_or_path": base, "r": 4, "lora_alpha": 8,
              "target_modules": ["query"], "task_type": "FEATURE_EXTRACTION"}
    return {"adapter_config.json": json.dumps(config)}


def _adapter_folder(base: str = "/nonexistent/base-model", config: str | None = None) -> ModelCopy:
    """An adapter folder inside an otherwise empty model copy (only adapter files are kept)."""
    files = adapter(base) if config is None else {"adapter_config.json": config}
    return ModelCopy("hf", drop=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
                     add={**files, "adapter_model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "})


# ---------------------------------------------------------------- the CLI table

@dataclass(frozen=True)
class CliCase:
    """One malformed CLI call: ``args`` (templated), the ``inputs`` to create, texts the line must hold."""

    id: str
    args: list[str]
    expected: list[str]
    inputs: dict[str, Any] = field(default_factory=dict)


TRAIN = ["train", "--out", "{out}", "--model", "{model}", "--data"]
EVAL = ["eval", "{model}", "--data"]
OK_PAIRS = {"f": File("ok.jsonl", PAIR * 4)}
LATIN1 = "anchor\tpositive\na\tp\nb\tcaf\xe9\n".encode("latin-1")

CLI_CASES = [
    # train: the pairs file
    CliCase("train-jsonl-invalid-json", TRAIN + ["{f}"], ["{f}:2:", "invalid JSON"],
            {"f": File("p.jsonl", PAIR + '{"anchor": "b", "positive": \n')}),
    CliCase("train-jsonl-missing-column", TRAIN + ["{f}"], ["{f}:3:", "'positive'"],
            {"f": File("p.jsonl", PAIR * 2 + '{"anchor": "b"}\n')}),
    CliCase("train-jsonl-text-not-string", TRAIN + ["{f}"], ["{f}:1:", "must be text"],
            {"f": File("p.jsonl", '{"anchor": ["a"], "positive": "p"}\n')}),
    CliCase("train-csv-extra-field", TRAIN + ["{f}"], ["{f}:3:", "expected 2 columns"],
            {"f": File("p.csv", "anchor,positive\na,p\nb,p,extra\n")}),
    CliCase("train-csv-non-numeric-label", TRAIN + ["{f}", "--loss", "cosent"], ["{f}:2:", "'high'"],
            {"f": File("p.csv", "sentence1,sentence2,label\na,b,high\n")}),
    CliCase("train-tsv-not-utf8", TRAIN + ["{f}"], ["{f}:3:", "UTF-8"], {"f": File("p.tsv", LATIN1)}),
    CliCase("train-data-missing", TRAIN + ["{tmp}/none.jsonl"], ["{tmp}/none.jsonl", "does not exist"]),
    CliCase("train-data-empty-file", TRAIN + ["{f}"], ["{f}", "empty"], {"f": File("p.jsonl", "")}),
    CliCase("train-data-unknown-suffix", TRAIN + ["{f}"], ["{f}", ".parquet"], {"f": File("p.parquet", "x")}),
    # train: flags and the model folder
    CliCase("train-batch-size-0", TRAIN + ["{f}", "--batch-size", "0"], ["--batch-size", "0"], OK_PAIRS),
    CliCase("train-lora-r-negative", TRAIN + ["{f}", "--lora-r", "-1"], ["--lora-r", "-1"], OK_PAIRS),
    CliCase("train-lr-nan", TRAIN + ["{f}", "--lr", "nan"], ["--lr", "'nan'", "finite"], OK_PAIRS),
    CliCase("train-lr-text", TRAIN + ["{f}", "--lr", "fast"], ["--lr", "'fast'"], OK_PAIRS),
    CliCase("train-max-seq-length-4", TRAIN + ["{f}", "--max-seq-length", "4"], ["--max-seq-length"], OK_PAIRS),
    CliCase("train-unknown-loss", TRAIN + ["{f}", "--loss", "magic"], ["--loss", "'magic'", "infonce"], OK_PAIRS),
    CliCase("train-qlora-and-full", TRAIN + ["{f}", "--qlora", "--full"], ["--qlora and --full"], OK_PAIRS),
    CliCase("train-model-folder-missing", ["train", "--out", "{out}", "--data", "{f}", "--model", "{tmp}/gone"],
            ["{tmp}/gone", "not found"], OK_PAIRS),
    CliCase("train-model-pickle-only", ["train", "--out", "{out}", "--data", "{f}", "--model", "{m}"],
            ["{m}/pytorch_model.bin", "--allow-pickle"],
            {**OK_PAIRS, "m": ModelCopy(drop=("model.safetensors",), add={"pytorch_model.bin": b"PK\x03\x04"})}),
    # eval: the BEIR folder and flags
    CliCase("eval-qrels-space-separated", EVAL + ["{b}"], ["{b}/qrels/test.tsv:3:", "3 tab-separated"],
            {"b": Beir({"qrels/test.tsv": "q1\td1\t1\nq2\td2\t1\nq2 d1 1\n"})}),
    CliCase("eval-qrels-unknown-doc", EVAL + ["{b}"], ["{b}/qrels/test.tsv:2:", "'d9'"],
            {"b": Beir({"qrels/test.tsv": "q1\td1\t1\nq2\td9\t1\n"})}),
    CliCase("eval-qrels-unknown-query", EVAL + ["{b}"], ["{b}/qrels/test.tsv:2:", "'q9'"],
            {"b": Beir({"qrels/test.tsv": "q1\td1\t1\nq9\td2\t1\n"})}),
    CliCase("eval-qrels-float-score", EVAL + ["{b}"], ["{b}/qrels/test.tsv:1:"],
            {"b": Beir({"qrels/test.tsv": "q1\td1\t0.5\n"})}),
    CliCase("eval-corpus-missing", EVAL + ["{b}"], ["{b}/corpus.jsonl", "does not exist"],
            {"b": Beir({"corpus.jsonl": None})}),
    CliCase("eval-corpus-invalid-json", EVAL + ["{b}"], ["{b}/corpus.jsonl:2:", "invalid JSON"],
            {"b": Beir({"corpus.jsonl": '{"_id": "d1", "text": "a"}\n{"_id": "d2" "text": "b"}\n'})}),
    CliCase("eval-corpus-duplicate-id", EVAL + ["{b}"], ["{b}/corpus.jsonl:2:", "'d1'"],
            {"b": Beir({"corpus.jsonl": '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n'})}),
    CliCase("eval-queries-not-utf8", EVAL + ["{b}"], ["{b}/queries.jsonl:2:", "UTF-8"],
            {"b": Beir({"queries.jsonl": b'{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "caf\xe9"}\n'})}),
    CliCase("eval-data-is-a-file", EVAL + ["{f}"], ["{f}", "not a folder"], {"f": File("corpus.jsonl", CORPUS)}),
    CliCase("eval-unknown-split", EVAL + ["{b}", "--split", "dev"], ["{b}/qrels", "'dev'"], {"b": Beir()}),
    CliCase("eval-dims-not-numbers", EVAL + ["{b}", "--dims", "abc"], ["--dims", "'abc'"], {"b": Beir()}),
    CliCase("eval-dims-zero", EVAL + ["{b}", "--dims", "64,0"], ["--dims", "'64,0'"], {"b": Beir()}),
    CliCase("eval-batch-size-0", EVAL + ["{b}", "--batch-size", "0"], ["--batch-size"], {"b": Beir()}),
    CliCase("eval-model-without-tokenizer", ["eval", "{m}", "--data", "{b}"], ["{m}", "no tokenizer files"],
            {"b": Beir(), "m": ModelCopy(drop=("tokenizer.json",))}),
    # merge
    CliCase("merge-folder-missing", ["merge", "{tmp}/gone", "--out", "{out}"], ["{tmp}/gone", "does not exist"]),
    CliCase("merge-data-folder-not-adapter", ["merge", "{b}", "--out", "{out}"], ["{b}", "not a model folder"],
            {"b": Beir()}),
    CliCase("merge-adapter-config-invalid-json", ["merge", "{a}", "--out", "{out}"],
            ["{a}/adapter_config.json", "unreadable adapter config"], {"a": _adapter_folder(config="{oops")}),
    CliCase("merge-adapter-base-missing", ["merge", "{a}", "--out", "{out}"],
            ["{a}/adapter_config.json", "/nonexistent/base-model", "does not exist"], {"a": _adapter_folder()}),
    CliCase("merge-adapter-and-slerp", ["merge", "{m}", "--slerp", "{m}", "{m}", "--out", "{out}"],
            ["ADAPTER or --slerp"], {"m": ModelCopy()}),
    CliCase("merge-slerp-t-nan", ["merge", "--slerp", "{m}", "{m}", "--t", "nan", "--out", "{out}"],
            ["--t", "'nan'"], {"m": ModelCopy()}),
    # from-corpus: float flags that click's FloatRange alone would let through as nan
    CliCase("from-corpus-lr-nan", ["from-corpus", "{c}", "--out", "{out}", "--lr", "nan"], ["--lr", "'nan'"],
            {"c": File("docs/a.md", "# A\n\nSome text.\n")}),
    CliCase("from-corpus-eval-fraction-nan", ["from-corpus", "{c}", "--out", "{out}", "--eval-fraction", "nan"],
            ["--eval-fraction", "'nan'"], {"c": File("docs/a.md", "# A\n\nSome text.\n")}),
    # export
    CliCase("export-unknown-format", ["export", "pdf", "{model}", "--out", "{out}"], ["FORMAT", "'pdf'"]),
    CliCase("export-unknown-quantization", ["export", "gguf", "{model}", "--out", "{out}", "--quantization", "q4"],
            ["--quantization", "'q4'"]),
    CliCase("export-quantization-not-gguf", ["export", "tei", "{model}", "--out", "{out}", "--quantization", "f16"],
            ["--quantization", "gguf only"]),
    CliCase("export-folder-missing", ["export", "onnx", "{tmp}/gone", "--out", "{out}"],
            ["{tmp}/gone", "not found"]),
    CliCase("export-st-without-tokenizer-json", ["export", "tei", "{m}", "--out", "{out}"],
            ["{m}", "no tokenizer.json"], {"m": ModelCopy("st", drop=("tokenizer.json",))}),
    CliCase("export-st-without-weights", ["export", "gguf", "{m}", "--out", "{out}"],
            ["{m}", "no model.safetensors"], {"m": ModelCopy("st", drop=("model.safetensors",))}),
    CliCase("export-st-without-config", ["export", "tei", "{m}", "--out", "{out}"],
            ["{m}", "model config"], {"m": ModelCopy("st", drop=("config.json",))}),
    CliCase("export-st-modules-json-invalid", ["export", "tei", "{m}", "--out", "{out}"],
            ["{m}/modules.json", "unreadable JSON"], {"m": ModelCopy("st", add={"modules.json": "[{oops"})}),
    CliCase("export-hf-without-weights", ["export", "tei", "{m}", "--out", "{out}"],
            ["{m}", "no model weights"], {"m": ModelCopy(drop=("model.safetensors",))}),
    CliCase("export-hf-pickle-only", ["export", "onnx", "{m}", "--out", "{out}"],
            ["{m}/pytorch_model.bin", "--allow-pickle"],
            {"m": ModelCopy(drop=("model.safetensors",), add={"pytorch_model.bin": b"PK\x03\x04"})}),
    CliCase("export-hf-config-invalid-json", ["export", "tei", "{m}", "--out", "{out}"],
            ["{m}", "config"], {"m": ModelCopy(add={"config.json": "{oops"})}),
]


# ---------------------------------------------------------------- the API table

@dataclass(frozen=True)
class ApiCase:
    """One malformed API call: ``call(paths, kit)`` must raise exactly ``error`` holding ``expected``."""

    id: str
    error: type[EmbtuneError]
    call: Callable[[dict[str, str], Kit], Any]
    expected: list[str]
    inputs: dict[str, Any] = field(default_factory=dict)


def _fp(path: str, **kwargs: Any) -> FastSentenceTransformer:
    return FastSentenceTransformer.from_pretrained(path, device="cpu", **kwargs)


def _train(kit: Kit, data: Any, paths: dict[str, str], **kwargs: Any) -> Any:
    config = TrainConfig(output_dir=paths["out"], show_progress=False)
    return train(kit.model(), data, config=config, **kwargs)


def _truncated_weights(kit: Kit) -> bytes:
    return (kit.hf / "model.safetensors").read_bytes()[:1000]


API_CASES = [
    # load_beir / load_pairs
    ApiCase("load_beir-corpus-no-id", DataFormatError, lambda p, k: load_beir(p["b"]),
            ["{b}/corpus.jsonl:2:", "_id"], {"b": Beir({"corpus.jsonl": '{"_id": "d1", "text": "a"}\n{"text": "b"}\n'})}),
    ApiCase("load_beir-qrels-header-only", DataFormatError, lambda p, k: load_beir(p["b"]),
            ["{b}/qrels/test.tsv", "no judgements"], {"b": Beir({"qrels/test.tsv": "query-id\tcorpus-id\tscore\n"})}),
    ApiCase("load_beir-not-a-folder", DataFormatError, lambda p, k: load_beir(p["f"]),
            ["{f}", "not a folder"], {"f": File("corpus.jsonl", CORPUS)}),
    ApiCase("load_pairs-jsonl-not-object", DataFormatError, lambda p, k: load_pairs(p["f"]),
            ["{f}:2:", "JSON object"], {"f": File("p.jsonl", PAIR + '["a", "p"]\n')}),
    ApiCase("load_pairs-csv-unknown-column", DataFormatError, lambda p, k: load_pairs(p["f"]),
            ["{f}:1:", "'score'"], {"f": File("p.csv", "anchor,positive,score\na,p,1\n")}),
    ApiCase("load_pairs-label-not-finite", DataFormatError, lambda p, k: load_pairs(p["f"]),
            ["{f}:2:", "not finite"], {"f": File("p.csv", "sentence1,sentence2,label\na,b,nan\n")}),
    # FastSentenceTransformer.from_pretrained on missing or broken folders
    ApiCase("from_pretrained-folder-missing", ModelLoadError, lambda p, k: _fp(p["tmp"] + "/gone"),
            ["{tmp}/gone", "not found"]),
    ApiCase("from_pretrained-a-file", ModelLoadError, lambda p, k: _fp(p["f"]), ["{f}", "not found"],
            {"f": File("model.txt", "x")}),
    ApiCase("from_pretrained-empty-folder", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}", "not a model folder"],
            {"m": ModelCopy(drop=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"))}),
    ApiCase("from_pretrained-no-weights", ModelLoadError, lambda p, k: _fp(p["m"]), ["{m}", "no model weights"],
            {"m": ModelCopy(drop=("model.safetensors",))}),
    ApiCase("from_pretrained-pickle-only", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}/pytorch_model.bin", "allow_pickle=True"],
            {"m": ModelCopy(drop=("model.safetensors",), add={"pytorch_model.bin": b"PK\x03\x04"})}),
    ApiCase("from_pretrained-truncated-weights", ModelLoadError,
            lambda p, k: (Path(p["m"], "model.safetensors").write_bytes(_truncated_weights(k)), _fp(p["m"])),
            ["{m}", "cannot load the model"], {"m": ModelCopy()}),
    ApiCase("from_pretrained-no-tokenizer-files", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}", "no tokenizer files"], {"m": ModelCopy(drop=("tokenizer.json",))}),
    ApiCase("from_pretrained-tokenizer-json-invalid", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}", "cannot load the model"], {"m": ModelCopy(add={"tokenizer.json": "{oops"})}),
    ApiCase("from_pretrained-config-invalid-json", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}", "config"], {"m": ModelCopy(add={"config.json": "{oops"})}),
    ApiCase("from_pretrained-unknown-model-type", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}", "nonesuch"], {"m": ModelCopy(add={"config.json": '{"model_type": "nonesuch"}'})}),
    ApiCase("from_pretrained-modules-json-invalid", ModelLoadError, lambda p, k: _fp(p["m"]),
            ["{m}", "cannot load the model"], {"m": ModelCopy("st", add={"modules.json": "[{oops"})}),
    ApiCase("from_pretrained-adapter-config-invalid", ModelLoadError, lambda p, k: _fp(p["a"]),
            ["{a}/adapter_config.json", "unreadable adapter config"], {"a": _adapter_folder(config="[1, 2")}),
    ApiCase("from_pretrained-adapter-base-missing", ModelLoadError, lambda p, k: _fp(p["a"]),
            ["{a}/adapter_config.json", "/nonexistent/base-model"], {"a": _adapter_folder()}),
    ApiCase("from_pretrained-unknown-pooling", ConfigError, lambda p, k: _fp(str(k.hf), pooling="median"),
            ["pooling", "'median'"]),
    ApiCase("from_pretrained-max-seq-length-0", ConfigError, lambda p, k: _fp(str(k.hf), max_seq_length=0),
            ["max_seq_length", "0"]),
    ApiCase("from_pretrained-unknown-dtype", ConfigError, lambda p, k: _fp(str(k.hf), dtype="float7"),
            ["dtype", "'float7'"]),
    ApiCase("from_pretrained-4bit-and-full", ConfigError,
            lambda p, k: _fp(str(k.hf), load_in_4bit=True, full_finetuning=True), ["load_in_4bit"]),
    # TrainConfig
    ApiCase("TrainConfig-batch-size-0", ConfigError, lambda p, k: TrainConfig(p["out"], batch_size=0),
            ["TrainConfig.batch_size", "0"]),
    ApiCase("TrainConfig-learning-rate-nan", ConfigError,
            lambda p, k: TrainConfig(p["out"], learning_rate=float("nan")), ["TrainConfig.learning_rate", "nan"]),
    ApiCase("TrainConfig-unknown-scheduler", ConfigError, lambda p, k: TrainConfig(p["out"], scheduler="step"),
            ["TrainConfig.scheduler", "'step'"]),
    ApiCase("TrainConfig-warmup-ratio-1.5", ConfigError, lambda p, k: TrainConfig(p["out"], warmup_ratio=1.5),
            ["TrainConfig.warmup_ratio", "1.5"]),
    ApiCase("TrainConfig-epochs-as-text", ConfigError, lambda p, k: TrainConfig(p["out"], epochs="2"),
            ["TrainConfig.epochs", "'2'"]),
    ApiCase("TrainConfig-matryoshka-repeated", ConfigError,
            lambda p, k: TrainConfig(p["out"], matryoshka_dims=(64, 64)), ["TrainConfig.matryoshka_dims"]),
    ApiCase("TrainConfig-no-output-dir", ConfigError, lambda p, k: TrainConfig(""), ["TrainConfig.output_dir"]),
    # evaluate_retrieval (the ids are checked before the model is used)
    ApiCase("evaluate_retrieval-empty-queries", DataFormatError,
            lambda p, k: evaluate_retrieval(None, {"d1": "a"}, {}, {"q1": {"d1": 1}}, show_progress=False),
            ["<qrels>", "not in queries", "'q1'"]),
    ApiCase("evaluate_retrieval-qrels-unknown-doc", DataFormatError,
            lambda p, k: evaluate_retrieval(None, {"d1": "a"}, {"q1": "x"}, {"q1": {"d9": 1}}, show_progress=False),
            ["<qrels>", "not in the corpus", "'d9'"]),
    ApiCase("evaluate_retrieval-empty-corpus", DataFormatError,
            lambda p, k: evaluate_retrieval(None, {}, {"q1": "x"}, {"q1": {"d1": 1}}, show_progress=False),
            ["<corpus>", "empty"]),
    ApiCase("evaluate_retrieval-empty-qrels", DataFormatError,
            lambda p, k: evaluate_retrieval(None, {"d1": "a"}, {"q1": "x"}, {}, show_progress=False),
            ["<qrels>", "empty"]),
    # train() with empty or mismatched data
    ApiCase("train()-empty-list", DataFormatError, lambda p, k: _train(k, [], p), ["<list>", "no rows"]),
    ApiCase("train()-empty-dataset", DataFormatError,
            lambda p, k: _train(k, __import__("datasets").Dataset.from_list([]), p), ["<datasets.Dataset>", "no rows"]),
    ApiCase("train()-empty-file", DataFormatError, lambda p, k: _train(k, p["f"], p), ["{f}", "empty"],
            {"f": File("p.jsonl", "")}),
    ApiCase("train()-blank-lines-only", DataFormatError, lambda p, k: _train(k, p["f"], p), ["{f}", "no records"],
            {"f": File("p.jsonl", "\n  \n\n")}),
    ApiCase("train()-row-of-other-width", DataFormatError, lambda p, k: _train(k, [("a", "p"), ("b", "q", "r")], p),
            ["<list>:2:", "expected 2 items"]),
    ApiCase("train()-unknown-loss", ConfigError, lambda p, k: _train(k, [("a", "p"), ("b", "q")], p, loss="magic"),
            ["'magic'", "infonce"]),
    ApiCase("train()-loss-needs-labels", ConfigError,
            lambda p, k: _train(k, [("a", "p"), ("b", "q")], p, loss="cosent"), ["'cosent'", "'label'"]),
]


# ---------------------------------------------------------------- running the tables


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Kit:
    """A tiny random BERT as a plain HF folder and as a merged ST folder (no downloads)."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad-input-models")
    hf = Path(build_tiny_hf(root / "hf", "bert", hidden_size=32))
    st = root / "st"
    FastSentenceTransformer.from_pretrained(hf, dtype="fp32", device="cpu").save_pretrained_merged(
        st, create_model_card=False)
    return Kit(hf=hf, st=st)


def _paths(inputs: dict[str, Any], tmp: Path, kit: Kit) -> dict[str, str]:
    """Create a row's inputs under ``tmp``; the template values, by name."""
    paths = {"tmp": str(tmp), "out": str(tmp / "out"), "model": str(kit.hf)}
    for index, (name, spec) in enumerate(inputs.items()):
        paths[name] = str(spec.make(tmp / f"in{index}", kit))
    return paths


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_the_tables_hold_at_least_30_malformed_inputs():
    ids = [case.id for case in CLI_CASES] + [case.id for case in API_CASES]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    assert len(CLI_CASES) + len(API_CASES) >= 30
    assert len(CLI_CASES) >= 30 and len(API_CASES) >= 30
    commands = {case.args[0] for case in CLI_CASES}
    assert commands == {"train", "eval", "merge", "export", "from-corpus"}
    assert all(issubclass(case.error, EmbtuneError) and case.error is not EmbtuneError for case in API_CASES)


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.id for case in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(case, tmp_path, kit):
    paths = _paths(case.inputs, tmp_path, kit)
    result = CliRunner().invoke(main, [arg.format(**paths) for arg in case.args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    line = _one_line(result.output)
    assert line.startswith("embtune: error: "), line
    for text in case.expected:
        assert text.format(**paths) in line, (text.format(**paths), line)
    assert not Path(paths["out"]).exists()


@pytest.mark.parametrize("case", API_CASES, ids=[case.id for case in API_CASES])
def test_api_bad_input_raises_a_typed_one_line_error(case, tmp_path, kit):
    paths = _paths(case.inputs, tmp_path, kit)
    with pytest.raises(EmbtuneError) as info:
        case.call(paths, kit)
    assert type(info.value) is case.error, repr(info.value)
    message = _one_line(str(info.value))
    assert message == str(info.value)
    for text in case.expected:
        assert text.format(**paths) in message, (text.format(**paths), message)


@pytest.mark.parametrize("case_id", ["train-jsonl-invalid-json", "eval-qrels-unknown-doc",
                                     "export-st-without-tokenizer-json"])
def test_debug_lets_the_typed_error_through(case_id, tmp_path, kit):
    """With --debug the CLI does not shorten the error: the typed exception (and its traceback) comes out."""
    case = next(c for c in CLI_CASES if c.id == case_id)
    paths = _paths(case.inputs, tmp_path, kit)
    result = CliRunner().invoke(main, ["--debug", *[arg.format(**paths) for arg in case.args]])
    assert result.exit_code != 2
    assert isinstance(result.exception, EmbtuneError), result.output
    assert isinstance(result.exception, (DataFormatError, ExportError))
    assert result.exc_info[2] is not None  # the traceback
