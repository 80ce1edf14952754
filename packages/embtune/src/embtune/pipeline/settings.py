"""Settings of one from-corpus run (``RunSettings``) and the checks that run before any work.

Every flag of ``embtune from-corpus`` / ``embtune pairs`` is one field. ``check()`` refuses
contradictions and missing files with a one-line EmbtuneError naming the flag or the file, so a
mistake costs a second, not an hour of training.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError, DataFormatError
from embtune.pipeline.training import check_load_options, check_training_options

PAIR_BUILDERS = ("auto", "heuristic", "llm", "labels")
EXPORT_FORMATS = ("gguf", "tei", "onnx")


@dataclass
class RunSettings:
    """Everything a from-corpus run needs; paths may be str or Path (normalised by ``check``)."""

    corpus: Path
    """Folder (or single file) of documents: .txt/.md/.html/.pdf/.jsonl, or a BEIR folder."""
    out: Path
    """The run folder DIR."""
    model: str | None = None
    """Model folder or hub id; None: the embedded all-MiniLM-L6-v2."""
    pairs: str = "auto"
    """Pair builder: auto (labels if --labels, else llm if --llm-url or --llm-gguf, else heuristic), heuristic,
    llm, labels."""
    labels: Path | None = None
    """Training qrels TSV (query-id, doc-id, score) naming documents of the corpus."""
    queries: Path | None = None
    """Queries JSONL ({"_id", "text"}) for --labels and --eval-labels."""
    eval_labels: Path | None = None
    """Evaluation qrels TSV: evaluate on these labelled queries instead of a held-out split."""
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lora_r: int = 16
    learning_rate: float = 2e-4
    qlora: bool = False
    full: bool = False
    negatives: int = 1
    """Hard negatives mined per pair (0: in-batch negatives only)."""
    export: tuple[str, ...] = ()
    llm_url: str | None = None
    llm_model: str | None = None
    llm_gguf: Path | None = None
    """Local GGUF instruct model for the llm pair builder (llama-cpp-python), instead of --llm-url."""
    seed: int = 42
    force: bool = False
    chunk_tokens: int = 256
    """Chunk size in model tokens (capped at the model's max_seq_length)."""
    chunk_overlap: int = 32
    eval_fraction: float = 0.2
    """Share of documents whose pairs are held out for evaluation (without --eval-labels)."""
    save_steps: int | None = 50
    """Checkpoint every N training steps (the last step is always saved)."""
    max_seq_length: int | None = None
    loss: str = "infonce"
    """Training loss (``embtune.choices.LOSS_NAMES``)."""
    matryoshka_dims: tuple[int, ...] | None = None
    lora_alpha: int | None = None
    """None: 2 x lora_r."""
    lora_dropout: float = 0.0
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    lora_compute: str = "bf16"
    dtype: str = "auto"
    """dtype of the frozen base weights (training and the base/merged models' encoding)."""
    query_prompt: str | None = None
    document_prompt: str | None = None
    instruction: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    filter_top_k: int = 20
    """Keep a built pair only if the base model ranks its positive in this top k (0: no rank test)."""
    min_cosine: float | None = None
    """Also keep a pair whose query-positive cosine reaches this; with filter_top_k 0 the only test."""
    dedup_cosine: float = 0.95
    """Drop a query above this cosine with a kept query of the same chunk (1: keep all)."""
    select_strength: bool = True
    """Pick the checkpoint and adapter strength that validate best on pseudo-queries of a signal the
    model was not trained on (``embtune.pipeline.selection``); strength 0 keeps the base model."""
    strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """Adapter strengths weighed by the selection (0: base model, 1: the tuned model)."""
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def builder(self) -> str:
        """The pair builder actually used: ``pairs`` with ``auto`` resolved."""
        if self.pairs != "auto":
            return self.pairs
        if self.labels is not None:
            return "labels"
        return "llm" if self.llm_url or self.llm_gguf else "heuristic"

    def eval_queries_path(self) -> Path | None:
        """Queries file for --eval-labels: --queries, else CORPUS/queries.jsonl when it exists."""
        if self.eval_labels is None:
            return None
        if self.queries is not None:
            return self.queries
        beir_queries = Path(self.corpus) / "queries.jsonl"
        return beir_queries if beir_queries.is_file() else None

    def check(self, until: str | None = None) -> "RunSettings":
        """Normalise paths and refuse contradictions; returns self. ``until="pairs"`` (embtune pairs)
        skips the training flags. Raises ConfigError (flags) or DataFormatError (a missing file)."""
        for name in ("corpus", "out", "labels", "queries", "eval_labels", "llm_gguf"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        self.export = parse_exports(self.export)
        if self.pairs not in PAIR_BUILDERS:
            raise ConfigError(f"--pairs must be one of {', '.join(PAIR_BUILDERS)}; got {self.pairs!r}")
        _check_ints(self)
        self.strengths = check_strengths(self.strengths)
        _check_filter(self)
        if until is None:
            check_training_options(self)
        else:
            check_load_options(self)
        if self.labels is not None and self.queries is None:
            raise ConfigError("--labels needs --queries (the JSONL file with the text of the labelled queries)")
        if self.queries is not None and self.labels is None and self.eval_labels is None:
            raise ConfigError("--queries is only used with --labels or --eval-labels")
        builder = self.builder
        if builder == "labels" and self.labels is None:
            raise ConfigError("--pairs labels needs --labels QRELS.tsv and --queries QUERIES.jsonl")
        if self.labels is not None and builder != "labels":
            raise ConfigError(f"--labels is only used by the labels pair builder, not --pairs {builder}")
        if self.llm_url and not self.llm_model:
            raise ConfigError("--llm-url needs --llm-model (the model name the server serves)")
        if self.llm_model and not self.llm_url:
            raise ConfigError("--llm-model needs --llm-url (an OpenAI-compatible endpoint)")
        if self.llm_url and self.llm_gguf:
            raise ConfigError("--llm-url and --llm-gguf are two sources of LLM queries; give one")
        if builder == "llm" and not (self.llm_url or self.llm_gguf):
            raise ConfigError("--pairs llm needs --llm-url URL and --llm-model NAME, or --llm-gguf FILE")
        if self.llm_gguf is not None and builder != "llm":
            raise ConfigError(f"--llm-gguf is only used by the llm pair builder, not --pairs {builder}")
        if until is not None and self.export:
            raise ConfigError("--export applies to a trained model, not to `embtune pairs`")
        if not self.corpus.exists():
            raise DataFormatError("corpus folder does not exist", path=self.corpus)
        for flag, path in (("--labels", self.labels), ("--queries", self.queries),
                           ("--eval-labels", self.eval_labels), ("--llm-gguf", self.llm_gguf)):
            if path is not None and not path.is_file():
                raise DataFormatError(f"{flag} file does not exist" if not path.exists()
                                      else f"{flag} is not a file", path=path)
        if self.llm_gguf is not None and importlib.util.find_spec("llama_cpp") is None:
            from embtune.pairs.llm_local import MISSING

            raise ConfigError(MISSING)
        if self.eval_labels is not None and self.eval_queries_path() is None:
            raise ConfigError("--eval-labels needs --queries (or a queries.jsonl inside the corpus folder)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (paths as strings), as recorded in report.json."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, os.PathLike):
                out[key] = str(value)
        out["export"] = list(self.export)
        out["strengths"] = list(self.strengths)
        for key in ("matryoshka_dims", "lora_target_modules"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        out["builder"] = self.builder
        out.pop("show_progress")
        out.pop("extra")
        return out


def parse_exports(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``"gguf,tei"`` (or a list) -> ``("gguf", "tei")``; ConfigError naming an unknown format."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    formats = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item not in EXPORT_FORMATS:
            raise ConfigError(f"--export: unknown format {item!r} (choose from {', '.join(EXPORT_FORMATS)}, "
                              "comma-separated)")
        if item not in formats:
            formats.append(item)
    if not formats:
        raise ConfigError(f"--export needs at least one of {', '.join(EXPORT_FORMATS)}")
    return tuple(formats)


def check_strengths(value: Any) -> tuple[float, ...]:
    """The strength grid as a sorted tuple of distinct floats in [0, 1] (from a tuple, list or
    ``"0,0.5,1"``); ConfigError naming --strengths otherwise."""
    items = str(value).split(",") if isinstance(value, str) else list(value or ())
    try:
        grid = sorted({float(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        grid = []
    if not grid or any(not 0.0 <= a <= 1.0 for a in grid):
        raise ConfigError(f"--strengths takes numbers between 0 and 1 separated by commas (e.g. 0,0.5,1), "
                          f"got {value!r}")
    return tuple(grid)


def _check_ints(s: RunSettings) -> None:
    def need(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")

    need("epochs", s.epochs, 1)
    need("max_steps", s.max_steps, 1, allow_none=True)
    need("batch_size", s.batch_size, 2)
    need("lora_r", s.lora_r, 1)
    need("negatives", s.negatives, 0)
    need("seed", s.seed, 0)
    need("chunk_tokens", s.chunk_tokens, 16)
    need("chunk_overlap", s.chunk_overlap, 0)
    need("save_steps", s.save_steps, 1, allow_none=True)
    need("max_seq_length", s.max_seq_length, 8, allow_none=True)
    if s.chunk_overlap >= s.chunk_tokens:
        raise ConfigError(f"--chunk-overlap ({s.chunk_overlap}) must be smaller than --chunk-tokens "
                          f"({s.chunk_tokens})")
    if not 0.0 < s.eval_fraction < 1.0:
        raise ConfigError(f"--eval-fraction must be between 0 and 1 (exclusive), got {s.eval_fraction!r}")
    if not s.learning_rate > 0:
        raise ConfigError(f"--lr must be > 0, got {s.learning_rate!r}")


def _check_filter(s: RunSettings) -> None:
    if isinstance(s.filter_top_k, bool) or not isinstance(s.filter_top_k, int) or s.filter_top_k < 0:
        raise ConfigError(f"--filter-top-k must be an integer >= 0 (0: no rank test), got {s.filter_top_k!r}")
    for flag, value in (("--min-cosine", s.min_cosine), ("--dedup-cosine", s.dedup_cosine)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not -1.0 <= value <= 1.0):
            raise ConfigError(f"{flag} must be a number between -1 and 1, got {value!r}")
    if s.dedup_cosine is None:
        raise ConfigError("--dedup-cosine must be a number between -1 and 1 (1 keeps near-duplicates)")
    if s.min_cosine is not None and s.builder == "labels":
        raise ConfigError("--min-cosine filters built pairs; the labels pair builder keeps your labels as given")
