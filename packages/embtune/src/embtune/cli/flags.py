"""The options of ``train``, ``from-corpus`` and ``pairs``, each defined once in ``FLAGS``.

One `Flag` row gives a flag's name, the commands that take it, its click type, help text and the
library argument it reaches. The same table

* builds the click options of each command (``command_options``),
* decides what a ``--config`` file may hold and how its values are checked
  (`embtune.cli.config_file`),
* names the keys of the resolved ``run_config.toml`` written into the run folder, and
* prints the README flag table (``markdown_table``; hidden command ``embtune flags --markdown``).

Defaults are not repeated here: a flag's default is the default of the field of the same name
(``dest``) in the command's settings class (`TrainSettings` for ``train``, `RunSettings` for
``from-corpus`` and ``pairs``), unless the row gives one for a CLI-only option.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import click

from embtune.choices import LORA_COMPUTE_MODES
from embtune.cli.options import FiniteFloatRange
from embtune.models.names import DEFAULT_MODEL
from embtune.errors import ConfigError
from embtune.pipeline.settings import RunSettings
from embtune.pipeline.training import DTYPES, TrainSettings

TRAIN, CORPUS, PAIRS = "train", "from-corpus", "pairs"
COMMANDS = (TRAIN, CORPUS, PAIRS)
SETTINGS = {TRAIN: TrainSettings, CORPUS: RunSettings, PAIRS: RunSettings}
LORA_COMPUTE = ("bf16", *(m for m in LORA_COMPUTE_MODES if m != "bf16"))  # the default first in --help
_FROM_SETTINGS = object()


class LossName(click.ParamType):
    """A loss name of ``embtune.losses`` (case and ``-``/``_`` free), returned in its registry form."""

    name = "loss"

    def convert(self, value, param, ctx):
        """Registry name of ``value``; a click usage error listing the valid names otherwise."""
        from embtune.choices import LOSS_NAMES, loss_key

        try:
            return loss_key(value)
        except ConfigError:
            self.fail(f"{value!r} is not a loss; use one of {', '.join(LOSS_NAMES)}", param, ctx)


class DimsList(click.ParamType):
    """Distinct positive integers, given as ``"256,128,64"`` (or a list in a config file) -> a tuple."""

    name = "dims"

    def convert(self, value, param, ctx):
        """The tuple of sizes; a click usage error for anything else."""
        from embtune.cli.eval_cmd import parse_dims

        if isinstance(value, tuple):
            return value
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        try:
            dims = parse_dims(text)
        except ConfigError:
            dims = None
        if not dims or len(set(dims)) != len(dims):
            self.fail(f"{text!r} is not a list of distinct positive integers separated by commas (e.g. 256,128,64)",
                      param, ctx)
        return tuple(dims)


class LayerNames(click.ParamType):
    """``all-linear`` or layer names separated by commas (or a list in a config file) -> a tuple."""

    name = "names"

    def convert(self, value, param, ctx):
        """``"all-linear"`` or the tuple of names; a click usage error for an empty name."""
        if value == "all-linear" or isinstance(value, tuple):
            return value
        items = value if isinstance(value, list) else str(value).split(",")
        names = tuple(str(item).strip() for item in items)
        if not names or not all(names):
            self.fail(f"{value!r}: give all-linear or layer names separated by commas (e.g. query,value)", param, ctx)
        return names


class StrengthList(click.ParamType):
    """Adapter strengths in [0, 1], given as ``"0,0.5,1"`` (or a list in a config file) -> a sorted tuple."""

    name = "strengths"

    def convert(self, value, param, ctx):
        """The sorted tuple of distinct strengths; a click usage error for anything else."""
        from embtune.pipeline.settings import check_strengths

        try:
            return check_strengths(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


@dataclass(frozen=True)
class Flag:
    """One option (or the CORPUS argument) of the commands in ``commands``."""

    name: str
    """``--lora-dropout``, or ``CORPUS`` for the positional argument."""
    commands: tuple[str, ...]
    api: str
    """The library argument the value reaches (README table)."""
    help: str = ""
    type: Any = None
    dest: str | None = None
    """Python name (settings field and click parameter); default: the name without dashes."""
    is_flag: bool = False
    default: Any = _FROM_SETTINGS
    show_default: str | None = None
    """Text shown for the default instead of the value (e.g. for None)."""
    required: bool = False
    saved: bool = True
    """Written to run_config.toml (``--force`` and ``--config`` are not: a rerun must not wipe DIR)."""

    @property
    def key(self) -> str:
        """The config-file key: the flag name without dashes, ``-`` as ``_`` (``--lr`` -> ``lr``)."""
        return self.name.lstrip("-").lower().replace("-", "_")

    @property
    def param(self) -> str:
        """The click parameter name (``dest``, else ``key``)."""
        return self.dest or self.key

    def default_for(self, command: str) -> Any:
        """This flag's default in ``command``: the row's own, else the settings field's default."""
        if self.default is not _FROM_SETTINGS:
            return self.default
        for f in dataclasses.fields(SETTINGS[command]):
            if f.name == self.param:
                if f.default is not dataclasses.MISSING:
                    return f.default
                return f.default_factory()  # type: ignore[misc]
        raise KeyError(f"flag {self.name}: {SETTINGS[command].__name__} has no field {self.param!r}")

    def click_param(self, command: str, on_config: Callable[..., Any] | None = None):
        """The click decorator of this flag for ``command``; ``on_config`` is the eager callback of the
        ``--config`` flag (``embtune.cli.config_file.load_config``)."""
        if not self.name.startswith("-"):
            return click.argument(self.param, type=self.type, required=self.required)
        default = self.default_for(command)
        if self.is_flag:
            return click.option(f"{self.name}/--no-{self.name[2:]}", self.param, default=bool(default),
                                help=self.help, show_default=False)
        if self.key == "config":
            return click.option(self.name, self.param, type=self.type, is_eager=True, expose_value=True,
                                callback=on_config, help=self.help)
        show = self.show_default if self.show_default is not None else default is not None
        given = {} if default is None else {"default": default}  # click 8.3+: default=None satisfies required
        return click.option(self.name, self.param, type=self.type, required=self.required, show_default=show,
                            help=self.help, **given)


BOTH = (TRAIN, CORPUS)
DATA = (CORPUS, PAIRS)
ALL = COMMANDS
FROM_PRETRAINED = "FastSentenceTransformer.from_pretrained"
PEFT = "FastSentenceTransformer.get_peft_model"
UNIT = click.FloatRange(-1.0, 1.0)

FLAGS: tuple[Flag, ...] = (
    Flag("--config", ALL, "(CLI only)", "TOML, YAML or JSON file of these options (keys: flag names, e.g. "
         "lora_r = 8); flags given on the command line override it.", click.Path(dir_okay=False), default=None,
         saved=False),
    Flag("CORPUS", DATA, "`read_documents(path)`; field `corpus`", type=click.Path(), dest="corpus", default=None,
         required=True),
    Flag("--data", (TRAIN,), "`embtune.train(model, data)`", "Pairs/triplets JSONL or CSV, a BEIR folder (its "
         "train qrels), or a from-corpus run folder.", click.Path(), default=None, required=True),
    Flag("--out", ALL, "`TrainConfig(output_dir=)`; field `out`", "Run folder DIR.", click.Path(), default=None,
         required=True),
    Flag("--model", ALL, f"`{FROM_PRETRAINED}(model_name_or_path)`", "Model folder (ST, plain HF or adapter) or "
         "hub id.", show_default=DEFAULT_MODEL),
    Flag("--max-seq-length", ALL, f"`{FROM_PRETRAINED}(max_seq_length=)`", "Truncate texts to this many tokens.",
         click.IntRange(8, 32768), show_default="the model's"),
    Flag("--dtype", ALL, f"`{FROM_PRETRAINED}(dtype=)`", "dtype of the frozen base weights (auto: bf16 where the "
         "device runs it fast, else fp32).", click.Choice(DTYPES)),
    Flag("--query-prompt", ALL, f"`{FROM_PRETRAINED}(prompts={{\"query\": ...}})`", "Text put before every query "
         "as it is (e.g. 'query: '); saved with the model.", show_default="the model's"),
    Flag("--document-prompt", ALL, f"`{FROM_PRETRAINED}(prompts={{\"document\": ...}})`", "Text put before every "
         "document (e.g. 'passage: '); saved with the model.", show_default="the model's"),
    Flag("--instruction", ALL, f"`{FROM_PRETRAINED}(instruction=)`", "Task instruction for queries (decoders: "
         "'Instruct: ...\\nQuery: '); excludes --query-prompt.", show_default="none"),
    Flag("--allow-pickle", ALL, f"`{FROM_PRETRAINED}(allow_pickle=)`", "Allow loading .bin pickle weights "
         "(unsafe).", is_flag=True),
    Flag("--trust-remote-code", ALL, f"`{FROM_PRETRAINED}(trust_remote_code=)`", "Allow custom modelling code.",
         is_flag=True),
    Flag("--loss", BOTH, "`embtune.train(loss=)` → `get_loss(name)`", "infonce | infonce_symmetric | "
         "cached_infonce | cosent | cosine_mse | triplet", LossName()),
    Flag("--matryoshka-dims", BOTH, "`TrainConfig(matryoshka_dims=)`", "Also train these embedding sizes "
         "(Matryoshka), e.g. 256,128,64.", DimsList(), show_default="off"),
    Flag("--epochs", BOTH, "`TrainConfig(epochs=)`", type=click.IntRange(1)),
    Flag("--max-steps", BOTH, "`TrainConfig(max_steps=)`", "Cap the training steps (overrides --epochs).",
         click.IntRange(1), show_default="none"),
    Flag("--batch-size", BOTH, "`TrainConfig(batch_size=)`", type=click.IntRange(2)),
    Flag("--lr", BOTH, "`TrainConfig(learning_rate=)`", "Peak learning rate.", FiniteFloatRange(0, min_open=True),
         dest="learning_rate"),
    Flag("--save-steps", BOTH, "`TrainConfig(save_steps=)`", "Checkpoint every N steps; a rerun resumes from the "
         "newest.", click.IntRange(1), show_default="each epoch"),
    Flag("--lora-r", BOTH, f"`{PEFT}(r=)`", "LoRA rank.", click.IntRange(1)),
    Flag("--lora-alpha", BOTH, f"`{PEFT}(lora_alpha=)`", "LoRA scale numerator.", click.IntRange(1),
         show_default="2 x r"),
    Flag("--lora-dropout", BOTH, f"`{PEFT}(lora_dropout=)`", "Dropout on the LoRA input.",
         FiniteFloatRange(0.0, 1.0, max_open=True)),
    Flag("--lora-target-modules", BOTH, f"`{PEFT}(target_modules=)`", "all-linear, or the linear layers to adapt "
         "separated by commas (e.g. query,value).", LayerNames()),
    Flag("--lora-compute", BOTH, f"`{PEFT}(lora_compute=)`", "LoRA arithmetic: bf16 (fastest), exact (PEFT's fp32 "
         "maths), peft (PEFT's own layers).", click.Choice(LORA_COMPUTE)),
    Flag("--qlora", BOTH, f"`{FROM_PRETRAINED}(load_in_4bit=True)` + `{PEFT}`", "4-bit base (bitsandbytes nf4) "
         "+ LoRA.", is_flag=True),
    Flag("--full", BOTH, f"`{FROM_PRETRAINED}(full_finetuning=True)`", "Train every weight instead of a LoRA "
         "adapter.", is_flag=True),
    Flag("--seed", ALL, "`TrainConfig(seed=)`, `split_by_document(seed=)`, `HeuristicPairs(seed=)`",
         type=click.IntRange(0)),
    Flag("--pairs", DATA, "field `pairs`: `HeuristicPairs` / `LLMPairs` / `LabelPairs`", "Pair builder; auto = "
         "labels if --labels, else llm if --llm-url/--llm-gguf, else heuristic.",
         click.Choice(["auto", "heuristic", "llm", "labels"])),
    Flag("--labels", DATA, "`LabelPairs(qrels_path=)`", "Training qrels TSV (query-id, doc-id, score) over the "
         "corpus's documents.", click.Path(), show_default="none"),
    Flag("--queries", DATA, "`LabelPairs(queries_path=)`", "Queries JSONL for --labels/--eval-labels.",
         click.Path(), show_default="none"),
    Flag("--eval-labels", DATA, "field `eval_labels`", "Evaluate on these labelled queries (qrels TSV) instead of "
         "a held-out split.", click.Path(), show_default="none"),
    Flag("--eval-fraction", DATA, "`split_by_document(eval_fraction=)`", "Share of documents held out for "
         "evaluation.", FiniteFloatRange(0, 1, min_open=True, max_open=True)),
    Flag("--llm-url", DATA, "`LLMPairs(url=)`", "OpenAI-compatible endpoint for --pairs llm.", show_default="none"),
    Flag("--llm-model", DATA, "`LLMPairs(model=)`", "Model name for --llm-url.", show_default="none"),
    Flag("--llm-gguf", DATA, "`LLMPairs(gguf=)`", "Local GGUF instruct model for --pairs llm, run in-process by "
         "llama-cpp-python (instead of --llm-url); same prompt and cache.", click.Path(), show_default="none"),
    Flag("--chunk-tokens", DATA, "`chunk_documents(max_tokens=)`", "Chunk size in model tokens (capped at the "
         "model's max length).", click.IntRange(16)),
    Flag("--chunk-overlap", DATA, "`chunk_documents(overlap_tokens=)`", type=click.IntRange(0)),
    Flag("--filter-top-k", DATA, "`filter_pairs(top_k=)` (0: None)", "Keep a built pair only if the base model "
         "ranks its positive in the top K chunks (0: no rank test).", click.IntRange(0)),
    Flag("--min-cosine", DATA, "`filter_pairs(min_cosine=)`", "Also keep a pair whose query-positive cosine "
         "reaches this; with --filter-top-k 0 it is the only test (Qwen3-Embedding used 0.7).", UNIT,
         show_default="none"),
    Flag("--dedup-cosine", DATA, "`filter_pairs(dedup_cosine=)`", "Drop a query this similar to a kept query of "
         "the same chunk (1: keep all).", UNIT),
    Flag("--negatives", DATA, "`mine_hard_negatives(n=)`", "Hard negatives mined per pair (0: in-batch only).",
         click.IntRange(0)),
    Flag("--select-strength", (CORPUS,), "field `select_strength` (`pipeline.selection`)", "Ship the checkpoint "
         "and adapter strength that validate best on pseudo-queries of a signal not trained on (strength 0 keeps "
         "the base model).", is_flag=True),
    Flag("--strengths", (CORPUS,), "field `strengths` (`StrengthModel.set_strength`)", "Adapter strengths the "
         "selection weighs, 0 (base) to 1 (tuned), separated by commas.", StrengthList()),
    Flag("--export", (CORPUS,), "`export_model(fmt=)` per format", "Comma-separated: gguf,tei,onnx.",
         default=None, show_default="none"),
    Flag("--force", DATA, "field `force`", "Start over: remove DIR's earlier stage outputs.", is_flag=True,
         saved=False),
    Flag("--quiet", DATA, "field `show_progress=False`", "No progress bars or stage lines.", is_flag=True,
         default=False),
)


def flags_of(command: str) -> list[Flag]:
    """The rows of ``FLAGS`` that ``command`` takes, in table order."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    return [flag for flag in FLAGS if command in flag.commands]


def command_options(command: str, on_config: Callable[..., Any] | None = None):
    """Decorator adding every flag of ``command`` (and its CORPUS argument) to a click command;
    ``on_config`` handles ``--config`` (``embtune.cli.config_file.load_config``: this module does not
    import it, the config reader depends on the flags, not the other way round)."""
    def decorate(fn):
        for flag in reversed(flags_of(command)):
            fn = flag.click_param(command, on_config)(fn)
        return fn
    return decorate


def _default_text(flag: Flag) -> str:
    shown = []
    for command in flag.commands:
        value = flag.default_for(command)
        if flag.show_default is not None and (value is None or flag.name == "--model"):
            text = flag.show_default
        elif flag.is_flag:
            text = "on" if value else "off"
        elif value is None:
            text = "—"
        elif isinstance(value, tuple):
            text = f"`{','.join(map(str, value))}`"
        else:
            text = f"`{value}`"
        shown.append((command, text))
    if len({text for _, text in shown}) == 1:
        return shown[0][1]
    return "; ".join(f"{command}: {text}" for command, text in shown)


def markdown_table() -> str:
    """The README table: one row per flag of train / from-corpus / pairs with the commands that take
    it, the library argument it reaches and its default."""
    from embtune.report import markdown_table as table

    rows = []
    for flag in FLAGS:
        name = f"`{flag.name}`" if flag.name.startswith("-") else flag.name
        if flag.is_flag:
            name = f"`{flag.name}` / `--no-{flag.name[2:]}`"
        rows.append([name, ", ".join(flag.commands), flag.api, _default_text(flag)])
    return table(["flag", "commands", "API argument", "default"], rows) + "\n"


@click.command("flags", hidden=True)
@click.option("--markdown", is_flag=True, help="Print the README flag table (Markdown).")
def flags_command(markdown: bool) -> None:
    """Print every flag of train / from-corpus / pairs with the library argument it maps to."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    for flag in FLAGS:
        click.echo(f"{flag.name}\t{','.join(flag.commands)}\t{flag.api}")
