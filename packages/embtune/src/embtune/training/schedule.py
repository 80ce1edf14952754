"""Learning-rate schedule: linear warm-up, then linear decay, cosine decay or constant.

The schedule is a pure function of the optimizer step, so its whole state is the step counter:
the loop sets ``lr`` on every param group before each step, and resuming needs nothing but the
global step. Step ``s`` counts from 0 (the first optimizer step), over ``total`` steps with ``warmup``
warm-up steps::

    s <  warmup:  factor = (s + 1) / warmup                  (no step is wasted at lr 0)
    s >= warmup:  p = (s - warmup) / (total - warmup)         (0 at the first decay step, < 1 at the last)
                  linear: 1 - p    cosine: 0.5 * (1 + cos(pi * p))    constant: 1
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from embtune.errors import ConfigError
from embtune.training.config import SCHEDULERS


def warmup_steps_for(total_steps: int, warmup_ratio: float, warmup_steps: int | None = None) -> int:
    """Number of warm-up steps: ``warmup_steps`` if given, else ``ceil(ratio * total)``; at most ``total``."""
    steps = warmup_steps if warmup_steps is not None else math.ceil(warmup_ratio * total_steps)
    return min(int(steps), total_steps)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based); see module doc."""
    if kind not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {kind!r}; use one of {', '.join(SCHEDULERS)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """A learning-rate schedule bound to its settings; ``lr(step)`` gives the rate for a step."""

    peak_lr: float
    total_steps: int
    warmup_steps: int
    kind: str = "linear"

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        return self.peak_lr * lr_factor(step, self.total_steps, self.warmup_steps, self.kind)

    def state_dict(self) -> dict:
        """The settings as a JSON-ready dict (the step itself is the run's global step)."""
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind}
