"""The options of ``train``, ``from-corpus`` and ``pairs``, each defined once in ``FLAGS``.

One `Flag` row gives a flag's name, the commands that take it, its click type, help text and the
library argument it reaches. The same table

* builds the click options of each command (``command_options``),
* decides what a ``--config`` file may hold and how its values are checked
  (`embtune.cli.config_file`),
* names the keys of the resolved ``run_config.toml`` written into the run folder, and
* prints the README flag table (``markdown_table``; hidden command ``embtune flags --markdown``).

Neither defaults nor help texts are repeated here: a flag's default and help are those of the field
of the same name (``dest``) in the command's settings class (`TrainSettings` for ``train``,
`RunSettings` for ``from-corpus`` and ``pairs``; ``embtune.pipeline.settings``), unless the row
gives them for a CLI-only option (``--config``, ``--data``, ``--quiet``).
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
from embtune.pipeline.settings import DTYPES, PAIR_BUILDERS, RunSettings, TrainSettings, settings_field

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
    """Only for a CLI-only option; a settings field's help is the field's own."""
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
        f = settings_field(SETTINGS[command], self.param)
        if f is not None:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        raise KeyError(f"flag {self.name}: {SETTINGS[command].__name__} has no field {self.param!r}")

    def help_text(self) -> str:
        """The row's help, else the help of the settings field it fills (``embtune.pipeline.settings``)."""
        if self.help:
            return self.help
        for command in self.commands:
            f = settings_field(SETTINGS[command], self.param)
            if f is not None:
                return f.metadata.get("help", "")
        raise KeyError(f"flag {self.name}: no settings field {self.param!r} and no help of its own")

    def click_param(self, command: str, on_config: Callable[..., Any] | None = None):
        """The click decorator of this flag for ``command``; ``on_config`` is the eager callback of the
        ``--config`` flag (``embtune.cli.config_file.load_config``)."""
        if not self.name.startswith("-"):
            return click.argument(self.param, type=self.type, required=self.required)
        default = self.default_for(command)
        if self.is_flag:
            return click.option(f"{self.name}/--no-{self.name[2:]}", self.param, default=bool(default),
                                help=self.help_text(), show_default=False)
        if self.key == "config":
            return click.option(self.name, self.param, type=self.type, is_eager=True, expose_value=True,
                                callback=on_config, help=self.help_text())
        show = self.show_default if self.show_default is not None else default is not None
        given = {} if default is None else {"default": default}  # click 8.3+: default=None satisfies required
        return click.option(self.name, self.param, type=self.type, required=self.required, show_default=show,
                            help=self.help_text(), **given)


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
    Flag("--out", ALL, "`TrainConfig(output_dir=)`; field `out`", type=click.Path(), default=None, required=True),
    Flag("--model", ALL, f"`{FROM_PRETRAINED}(model_name_or_path)`", show_default=DEFAULT_MODEL),
    Flag("--max-seq-length", ALL, f"`{FROM_PRETRAINED}(max_seq_length=)`", type=click.IntRange(8, 32768),
         show_default="the model's"),
    Flag("--dtype", ALL, f"`{FROM_PRETRAINED}(dtype=)`", type=click.Choice(DTYPES)),
    Flag("--query-prompt", ALL, f"`{FROM_PRETRAINED}(prompts={{\"query\": ...}})`", show_default="the model's"),
    Flag("--document-prompt", ALL, f"`{FROM_PRETRAINED}(prompts={{\"document\": ...}})`", show_default="the model's"),
    Flag("--instruction", ALL, f"`{FROM_PRETRAINED}(instruction=)`", show_default="none"),
    Flag("--allow-pickle", ALL, f"`{FROM_PRETRAINED}(allow_pickle=)`", is_flag=True),
    Flag("--trust-remote-code", ALL, f"`{FROM_PRETRAINED}(trust_remote_code=)`", is_flag=True),
    Flag("--loss", BOTH, "`embtune.train(loss=)` → `get_loss(name)`", type=LossName()),
    Flag("--matryoshka-dims", BOTH, "`TrainConfig(matryoshka_dims=)`", type=DimsList(), show_default="off"),
    Flag("--epochs", BOTH, "`TrainConfig(epochs=)`", type=click.IntRange(1)),
    Flag("--max-steps", BOTH, "`TrainConfig(max_steps=)`", type=click.IntRange(1), show_default="none"),
    Flag("--batch-size", BOTH, "`TrainConfig(batch_size=)`", type=click.IntRange(2)),
    Flag("--lr", BOTH, "`TrainConfig(learning_rate=)`", type=FiniteFloatRange(0, min_open=True),
         dest="learning_rate"),
    Flag("--save-steps", BOTH, "`TrainConfig(save_steps=)`", type=click.IntRange(1), show_default="each epoch"),
    Flag("--lora-r", BOTH, f"`{PEFT}(r=)`", type=click.IntRange(1)),
    Flag("--lora-alpha", BOTH, f"`{PEFT}(lora_alpha=)`", type=click.IntRange(1), show_default="2 x r"),
    Flag("--lora-dropout", BOTH, f"`{PEFT}(lora_dropout=)`", type=FiniteFloatRange(0.0, 1.0, max_open=True)),
    Flag("--lora-target-modules", BOTH, f"`{PEFT}(target_modules=)`", type=LayerNames()),
    Flag("--lora-compute", BOTH, f"`{PEFT}(lora_compute=)`", type=click.Choice(LORA_COMPUTE)),
    Flag("--qlora", BOTH, f"`{FROM_PRETRAINED}(load_in_4bit=True)` + `{PEFT}`", is_flag=True),
    Flag("--full", BOTH, f"`{FROM_PRETRAINED}(full_finetuning=True)`", is_flag=True),
    Flag("--gradient-checkpointing", BOTH, "`TrainConfig(gradient_checkpointing=)`", is_flag=True),
    Flag("--seed", ALL, "`TrainConfig(seed=)`, `split_by_document(seed=)`, `HeuristicPairs(seed=)`",
         type=click.IntRange(0)),
    Flag("--pairs", DATA, "field `pairs`: `HeuristicPairs` / `LLMPairs` / `LabelPairs`",
         type=click.Choice(PAIR_BUILDERS)),
    Flag("--labels", DATA, "`LabelPairs(qrels_path=)`", type=click.Path(), show_default="none"),
    Flag("--queries", DATA, "`LabelPairs(queries_path=)`", type=click.Path(), show_default="none"),
    Flag("--eval-labels", DATA, "field `eval_labels`", type=click.Path(), show_default="none"),
    Flag("--eval-fraction", DATA, "`split_by_document(eval_fraction=)`",
         type=FiniteFloatRange(0, 1, min_open=True, max_open=True)),
    Flag("--llm-url", DATA, "`LLMPairs(url=)`", show_default="none"),
    Flag("--llm-model", DATA, "`LLMPairs(model=)`", show_default="none"),
    Flag("--llm-gguf", DATA, "`LLMPairs(gguf=)`", type=click.Path(), show_default="none"),
    Flag("--chunk-tokens", DATA, "`chunk_documents(max_tokens=)`", type=click.IntRange(16)),
    Flag("--chunk-overlap", DATA, "`chunk_documents(overlap_tokens=)`", type=click.IntRange(0)),
    Flag("--reranker", (CORPUS,), "`embtune.rerankers.load_reranker(model)` + `embtune.train(loss=\"listwise\")`",
         show_default="off"),
    Flag("--rerank-top", (CORPUS,), "`rerank_rankings(top=)`", type=click.IntRange(1)),
    Flag("--filter-top-k", DATA, "`filter_pairs(top_k=)` (0: None)", type=click.IntRange(0)),
    Flag("--min-cosine", DATA, "`filter_pairs(min_cosine=)`", type=UNIT, show_default="none"),
    Flag("--dedup-cosine", DATA, "`filter_pairs(dedup_cosine=)`", type=UNIT),
    Flag("--negatives", DATA, "`mine_hard_negatives(n=)`", type=click.IntRange(0)),
    Flag("--select-strength", (CORPUS,), "field `select_strength` (`pipeline.selection`)", is_flag=True),
    Flag("--strengths", (CORPUS,), "field `strengths` (`StrengthModel.set_strength`)", type=StrengthList()),
    Flag("--export", (CORPUS,), "`export_model(fmt=)` per format", default=None, show_default="none"),
    Flag("--force", DATA, "field `force`", is_flag=True, saved=False),
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
    from embtune.tables import markdown_table as table

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
