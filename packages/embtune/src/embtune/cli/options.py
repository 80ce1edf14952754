"""Options shared by several commands, and the model-loading step they share."""
from __future__ import annotations

import math

import click


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (a plain FloatRange lets ``nan``
    through: every comparison with it is False)."""

    def convert(self, value, param, ctx):
        """Parse ``value`` as a float in range; a click usage error for nan or inf."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
