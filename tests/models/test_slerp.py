"""SLERP merging on tensors and state dicts (`embtune merge --slerp` end to end: tests/cli/test_merge_cmd.py)."""
from __future__ import annotations

import math

import pytest
import torch

from embtune.errors import ConfigError
from embtune.models.slerp import slerp_state_dicts, slerp_tensors


def test_slerp_tensors_endpoints_and_midpoint():
    torch.manual_seed(0)
    a, b = torch.randn(7, 5), torch.randn(7, 5)
    assert torch.equal(slerp_tensors(a, b, 0.0), a)
    assert torch.equal(slerp_tensors(a, b, 1.0), b)
    # unit vectors stay on the sphere, and the midpoint is at half the angle from both ends
    ua, ub = a / a.norm(), b / b.norm()
    mid = slerp_tensors(ua, ub, 0.5).double().flatten()
    va, vb = ua.double().flatten(), ub.double().flatten()
    angle = lambda x, y: math.acos(float(x @ y / (x.norm() * y.norm())))  # noqa: E731
    assert float(mid.norm()) == pytest.approx(1.0, rel=1e-6)
    assert angle(mid, va) == pytest.approx(angle(va, vb) / 2, rel=1e-5)
    assert angle(mid, vb) == pytest.approx(angle(va, vb) / 2, rel=1e-5)
    # general t on unnormalised tensors: the textbook formula
    t, omega = 0.3, angle(a.double().flatten(), b.double().flatten())
    expected = (math.sin((1 - t) * omega) * a.double() + math.sin(t * omega) * b.double()) / math.sin(omega)
    assert torch.allclose(slerp_tensors(a, b, t).double(), expected, atol=1e-6)
    assert not torch.allclose(slerp_tensors(a, b, 0.5), (a + b) / 2)


def test_slerp_parallel_tensors_fall_back_to_lerp():
    a = torch.arange(6, dtype=torch.float32)
    out = slerp_tensors(a, 3 * a, 0.5)
    assert torch.allclose(out, 2 * a)


def test_slerp_state_dicts_refuses_mismatch():
    with pytest.raises(ConfigError, match="shape"):
        slerp_state_dicts({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)}, 0.5)
    with pytest.raises(ConfigError, match="different weights"):
        slerp_state_dicts({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5)
