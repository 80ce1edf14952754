"""The settings of embtune's commands: one dataclass per layer, each field documented once.

* ``LoadSettings``: how a model is loaded (``FastSentenceTransformer.from_pretrained`` options).
* ``TrainSettings(LoadSettings)``: what ``embtune train`` needs (LoRA shape, loss, steps); numeric
  defaults shared with the training loop are ``TrainConfig``'s own.
* ``RunSettings(TrainSettings)``: a whole ``embtune from-corpus`` / ``embtune pairs`` run (corpus,
  pair builder, filters, evaluation, selection, export).

Every field's ``help`` metadata is the text of its command-line flag: ``embtune.cli.flags`` builds
the click options (help and default) from these fields, so a flag is never a copy. ``check()``
refuses contradictions and missing files with a one-line EmbtuneError naming the flag or the file,
so a mistake costs a second, not an hour of training.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError, DataFormatError
from embtune.training.config import TrainConfig

PAIR_BUILDERS = ("auto", "heuristic", "llm", "labels")
EXPORT_FORMATS = ("gguf", "tei", "onnx")
DTYPES = ("auto", "bf16", "fp16", "fp32")


def option(default: Any = MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A settings field: its default (or ``factory``; neither: a required field) and ``help``, the one
    description of the field, shown by ``--help``. Out: a ``dataclasses.field``."""
    metadata = {"help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def settings_field(settings_class: type, name: str) -> Field | None:
    """Field ``name`` of a settings dataclass (its default and ``metadata["help"]``), or None."""
    return next((f for f in fields(settings_class) if f.name == name), None)


@dataclass
class LoadSettings:
    """How the base model is loaded (the ``FastSentenceTransformer.from_pretrained`` options)."""

    model: str | None = option(None, "Model folder (ST, plain HF or adapter) or hub id; None: the embedded "
                                     "all-MiniLM-L6-v2.")
    max_seq_length: int | None = option(None, "Truncate texts to this many tokens.")
    dtype: str = option("auto", "dtype of the frozen base weights (auto: bf16 where the device runs it fast, "
                                "else fp32).")
    query_prompt: str | None = option(None, "Text put before every query as it is (e.g. 'query: '); saved with "
                                            "the model.")
    document_prompt: str | None = option(None, "Text put before every document (e.g. 'passage: '); saved with "
                                               "the model.")
    instruction: str | None = option(None, "Task instruction for queries (decoders: 'Instruct: ...\\nQuery: '); "
                                           "excludes --query-prompt.")
    allow_pickle: bool = option(False, "Allow loading .bin pickle weights (unsafe).")
    trust_remote_code: bool = option(False, "Allow custom modelling code.")

    def check_load(self) -> None:
        """Refuse a bad ``max_seq_length`` or ``dtype``, or an instruction given together with a query
        prompt (ConfigError naming the flag)."""
        _need_int("max_seq_length", self.max_seq_length, 8, allow_none=True)
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.instruction is not None and self.query_prompt is not None:
            raise ConfigError("--instruction and --query-prompt exclude each other (the instruction becomes the "
                              "query prompt)")

    def load_options(self, base: bool = True) -> dict[str, Any]:
        """Keyword arguments of ``FastSentenceTransformer.from_pretrained`` / ``load_inference_model``.
        ``base=False`` (a trained folder, whose prompts are saved in it) leaves out the instruction
        and the prompts."""
        options: dict[str, Any] = {"max_seq_length": self.max_seq_length, "allow_pickle": self.allow_pickle,
                                   "trust_remote_code": self.trust_remote_code,
                                   "dtype": None if self.dtype == "auto" else self.dtype}
        if base:
            prompts = {"query": self.query_prompt, "document": self.document_prompt}
            options.update(instruction=self.instruction,
                           prompts={role: text for role, text in prompts.items() if text is not None} or None)
        return options


@dataclass
class TrainSettings(LoadSettings):
    """Everything ``embtune train`` needs besides the data and the run folder."""

    loss: str = option("infonce", "infonce | infonce_symmetric | cached_infonce | cosent | cosine_mse | triplet")
    matryoshka_dims: tuple[int, ...] | None = option(None, "Also train these embedding sizes (Matryoshka), "
                                                           "e.g. 256,128,64.")
    epochs: int = option(TrainConfig.epochs, "Passes over the training pairs.")
    max_steps: int | None = option(TrainConfig.max_steps, "Cap the training steps (overrides --epochs).")
    batch_size: int = option(TrainConfig.batch_size, "Pairs per step (each query's in-batch negatives are the "
                                                     "other pairs' documents).")
    learning_rate: float = option(TrainConfig.learning_rate, "Peak learning rate.")
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int | None = option(None, "LoRA scale numerator (None: 2 x r).")
    lora_dropout: float = option(0.0, "Dropout on the LoRA input.")
    lora_target_modules: str | tuple[str, ...] = option("all-linear", "all-linear, or the linear layers to adapt "
                                                                      "separated by commas (e.g. query,value).")
    lora_compute: str = option("bf16", "LoRA arithmetic: bf16 (fastest), exact (PEFT's fp32 maths), peft (PEFT's "
                                       "own layers).")
    qlora: bool = option(False, "4-bit base (bitsandbytes nf4) + LoRA.")
    full: bool = option(False, "Train every weight instead of a LoRA adapter.")
    gradient_checkpointing: bool = option(TrainConfig.gradient_checkpointing, "Recompute each layer's "
                                          "activations in the backward instead of keeping them: less memory, "
                                          "about one more forward per step; same result.")
    seed: int = option(TrainConfig.seed, "Seed of the batch order, the held-out split and the pair builders.")
    save_steps: int | None = option(TrainConfig.save_steps, "Checkpoint every N steps (None: each epoch); a rerun "
                                                            "resumes from the newest.")
    logging_steps: int = option(TrainConfig.logging_steps, "Record the mean training loss every N steps.")
    show_progress: bool = option(TrainConfig.show_progress, "Progress bars and stage lines.")

    def weights_folder(self) -> str:
        """Name of the folder training writes: ``adapter`` (LoRA/QLoRA) or ``model`` (--full)."""
        return "model" if self.full else "adapter"

    def check(self) -> "TrainSettings":
        """Refuse bad training options before any work starts (ConfigError naming the flag); normalises
        ``loss``, ``matryoshka_dims`` and ``lora_target_modules`` in place. Returns self."""
        self.check_numbers()
        self.check_load()
        _check_training(self)
        return self

    def check_numbers(self) -> None:
        """Refuse steps, batch size, rank, seed or learning rate out of range (ConfigError naming the flag)."""
        _need_int("epochs", self.epochs, 1)
        _need_int("max_steps", self.max_steps, 1, allow_none=True)
        _need_int("batch_size", self.batch_size, 2)
        _need_int("lora_r", self.lora_r, 1)
        _need_int("seed", self.seed, 0)
        _need_int("save_steps", self.save_steps, 1, allow_none=True)
        _need_int("logging_steps", self.logging_steps, 1)
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) \
                or not self.learning_rate > 0:
            raise ConfigError(f"--lr must be > 0, got {self.learning_rate!r}")

    def train_config(self, output_dir: str | os.PathLike) -> TrainConfig:
        """The ``TrainConfig`` of these settings for the run folder ``output_dir`` (the one place the
        shared fields are handed to the training loop)."""
        return TrainConfig(output_dir=str(output_dir), epochs=self.epochs, max_steps=self.max_steps,
                           batch_size=self.batch_size, learning_rate=self.learning_rate, seed=self.seed,
                           save_steps=self.save_steps, logging_steps=self.logging_steps,
                           show_progress=self.show_progress, matryoshka_dims=self.matryoshka_dims,
                           gradient_checkpointing=self.gradient_checkpointing)


@dataclass(kw_only=True)
class RunSettings(TrainSettings):
    """Everything a from-corpus run needs; paths may be str or Path (normalised by ``check``)."""

    corpus: Path = option(help="Folder (or single file) of documents: .txt/.md/.html/.pdf/.jsonl, or a BEIR "
                                "folder.")
    out: Path = option(help="Run folder DIR.")
    pairs: str = option("auto", "Pair builder; auto = labels if --labels, else llm if --llm-url/--llm-gguf, else "
                                "heuristic.")
    labels: Path | None = option(None, "Training qrels TSV (query-id, doc-id, score) over the corpus's documents.")
    queries: Path | None = option(None, "Queries JSONL for --labels/--eval-labels.")
    eval_labels: Path | None = option(None, "Evaluate on these labelled queries (qrels TSV) instead of a held-out "
                                            "split.")
    negatives: int = option(1, "Hard negatives mined per pair (0: in-batch only).")
    export: tuple[str, ...] = option((), "Comma-separated: gguf,tei,onnx.")
    llm_url: str | None = option(None, "OpenAI-compatible endpoint for --pairs llm.")
    llm_model: str | None = option(None, "Model name for --llm-url.")
    llm_gguf: Path | None = option(None, "Local GGUF instruct model for --pairs llm, run in-process by "
                                         "llama-cpp-python (instead of --llm-url); same prompt and cache.")
    force: bool = option(False, "Start over: remove DIR's earlier stage outputs.")
    chunk_tokens: int = option(256, "Chunk size in model tokens (capped at the model's max length).")
    chunk_overlap: int = option(32, "Tokens shared by consecutive chunks of a document.")
    eval_fraction: float = option(0.2, "Share of documents held out for evaluation (without --eval-labels).")
    save_steps: int | None = option(50, settings_field(TrainSettings, "save_steps").metadata["help"])  # a run checkpoints more often
    filter_top_k: int = option(20, "Keep a built pair only if the base model ranks its positive in the top K "
                                   "chunks (0: no rank test).")
    min_cosine: float | None = option(None, "Also keep a pair whose query-positive cosine reaches this; with "
                                            "--filter-top-k 0 it is the only test (Qwen3-Embedding used 0.7).")
    dedup_cosine: float = option(0.95, "Drop a query this similar to a kept query of the same chunk (1: keep all).")
    select_strength: bool = option(True, "Ship the checkpoint and adapter strength that validate best on "
                                         "pseudo-queries of a signal not trained on (strength 0 keeps the base "
                                         "model; `embtune.pipeline.selection`).")
    strengths: tuple[float, ...] = option((0.0, 0.25, 0.5, 0.75, 1.0), "Adapter strengths the selection weighs, "
                                          "0 (base) to 1 (tuned), separated by commas.")
    reranker: str | None = option(None, "Also train a reranker from the same pairs, starting from this model "
                                        "(default: the embedded MiniLM with a fresh head), and report dense, "
                                        "hybrid and dense + rerank rows (`embtune.pipeline.reranking`).")
    rerank_top: int = option(20, "Chunks the reranker reorders per evaluation query (with --reranker).")
    extra: dict[str, Any] = option(help="Free-form values recorded nowhere (for callers' own use).", factory=dict)

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
        self.check_numbers()
        self.strengths = check_strengths(self.strengths)
        self._check_filter()
        self.check_load()
        if until is None:
            _check_training(self)
        self._check_sources(until)
        return self

    def check_numbers(self) -> None:
        """The training numbers (``TrainSettings.check_numbers``) and the run's own: negatives,
        chunk size and overlap, eval fraction (ConfigError naming the flag)."""
        super().check_numbers()
        _need_int("negatives", self.negatives, 0)
        _need_int("rerank_top", self.rerank_top, 1)
        _need_int("chunk_tokens", self.chunk_tokens, 16)
        _need_int("chunk_overlap", self.chunk_overlap, 0)
        if self.chunk_overlap >= self.chunk_tokens:
            raise ConfigError(f"--chunk-overlap ({self.chunk_overlap}) must be smaller than --chunk-tokens "
                              f"({self.chunk_tokens})")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"--eval-fraction must be between 0 and 1 (exclusive), got {self.eval_fraction!r}")

    def _check_sources(self, until: str | None) -> None:
        builder = self.builder
        if self.labels is not None and self.queries is None:
            raise ConfigError("--labels needs --queries (the JSONL file with the text of the labelled queries)")
        if self.queries is not None and self.labels is None and self.eval_labels is None:
            raise ConfigError("--queries is only used with --labels or --eval-labels")
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

    def _check_filter(self) -> None:
        if isinstance(self.filter_top_k, bool) or not isinstance(self.filter_top_k, int) or self.filter_top_k < 0:
            raise ConfigError(f"--filter-top-k must be an integer >= 0 (0: no rank test), got {self.filter_top_k!r}")
        for flag, value in (("--min-cosine", self.min_cosine), ("--dedup-cosine", self.dedup_cosine)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not -1.0 <= value <= 1.0):
                raise ConfigError(f"{flag} must be a number between -1 and 1, got {value!r}")
        if self.dedup_cosine is None:
            raise ConfigError("--dedup-cosine must be a number between -1 and 1 (1 keeps near-duplicates)")
        if self.min_cosine is not None and self.builder == "labels":
            raise ConfigError("--min-cosine filters built pairs; the labels pair builder keeps your labels as given")

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
        for key in ("show_progress", "extra", "logging_steps"):
            out.pop(key)
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


def _need_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")


def _check_training(settings: TrainSettings) -> None:
    from embtune.choices import LORA_COMPUTE_MODES, loss_key

    if settings.qlora and settings.full:
        raise ConfigError("--qlora and --full exclude each other (4-bit weights cannot be trained fully)")
    try:
        settings.loss = loss_key(settings.loss)
    except ConfigError as exc:
        raise ConfigError(f"--loss: {exc}") from None
    if settings.matryoshka_dims is not None:
        dims = tuple(settings.matryoshka_dims)
        if (not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims)
                or len(set(dims)) != len(dims)):
            raise ConfigError(f"--matryoshka-dims must be distinct positive integers, got {settings.matryoshka_dims!r}")
        settings.matryoshka_dims = dims
    if settings.lora_alpha is not None:
        _need_int("lora_alpha", settings.lora_alpha, 1)
    dropout = settings.lora_dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"--lora-dropout must be a number in [0, 1), got {dropout!r}")
    targets = settings.lora_target_modules
    if targets != "all-linear":
        targets = tuple(targets.split(",") if isinstance(targets, str) else targets)
        if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ConfigError(f"--lora-target-modules takes layer names separated by commas, got {targets!r}")
        settings.lora_target_modules = tuple(t.strip() for t in targets)
    if settings.full and (settings.lora_target_modules != "all-linear" or settings.lora_dropout):
        raise ConfigError("--lora-target-modules and --lora-dropout shape a LoRA adapter; --full trains every "
                          "weight instead")
    if settings.lora_compute not in LORA_COMPUTE_MODES:
        raise ConfigError(f"--lora-compute must be one of {', '.join(LORA_COMPUTE_MODES)}, "
                          f"got {settings.lora_compute!r}")
