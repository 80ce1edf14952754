"""SLERP merging: the math on tensors, and `embtune merge --slerp A B --t` end to end on tiny models."""
from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import build_tiny_hf

from embtune.cli import main
from embtune.errors import ConfigError
from embtune.models.slerp import load_plain, slerp_state_dicts, slerp_tensors


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


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("slerp")
    return build_tiny_hf(root / "a", "bert", seed=0), build_tiny_hf(root / "b", "bert", seed=1)


def _weights(folder) -> dict[str, torch.Tensor]:
    files = sorted(folder.rglob("model.safetensors"))
    assert len(files) == 1, files
    return load_file(files[0])


def test_merge_slerp_cli(two_models, tmp_path):
    a, b = two_models
    runner = CliRunner()
    outs = {}
    for t in (0.0, 1.0, 0.5):
        out = tmp_path / f"t{t}"
        result = runner.invoke(main, ["merge", "--slerp", a, b, "--t", str(t), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert (out / "modules.json").is_file()  # a plain sentence-transformers folder
        outs[t] = _weights(out)
    ref_a = {k: v for k, v in load_plain(a)[0].model.state_dict().items()}
    ref_b = {k: v for k, v in load_plain(b)[0].model.state_dict().items()}
    float_keys = [k for k in outs[0.0] if outs[0.0][k].is_floating_point()]
    assert len(float_keys) > 10
    for k in float_keys:
        assert torch.equal(outs[0.0][k], ref_a[k]), k
        assert torch.equal(outs[1.0][k], ref_b[k]), k
        assert torch.isfinite(outs[0.5][k]).all(), k
    differs_a = [k for k in float_keys if not torch.allclose(outs[0.5][k], ref_a[k])]
    differs_b = [k for k in float_keys if not torch.allclose(outs[0.5][k], ref_b[k])]
    assert len(differs_a) == len(float_keys) - sum(torch.equal(ref_a[k], ref_b[k]) for k in float_keys)
    assert differs_a and differs_b
    # the merged folder loads and encodes like any ST model
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(tmp_path / "t0.5"), device="cpu").encode(["a test sentence"])
    assert emb.shape[1] == 64 and torch.isfinite(torch.as_tensor(emb)).all()


@pytest.mark.parametrize("args, message", [
    (["--t", "0.5"], "give the ADAPTER"),
    (["ADAPTER_X", "--slerp", "A", "B"], "not both"),
    (["--slerp", "missing-a", "missing-b"], "missing-a"),
    (["--slerp", "A", "B", "--t", "1.5"], "--t"),
])
def test_merge_bad_input(args, message, tmp_path):
    result = CliRunner().invoke(main, ["merge", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embtune: error:") and message in lines[0], result.output
