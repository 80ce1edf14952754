"""`embtune merge --slerp A B --t` end to end on tiny models, and its one-line errors."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import build_tiny_hf

from embtune.cli import main
from embtune.models.slerp import load_plain


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
