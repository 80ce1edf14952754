"""embtune_kernels.dispatch: which backend runs for which tensors, env variable and context manager."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import embtune_kernels as ek
from embtune_kernels import dispatch, use_backend

OP = "embtune_kernels.pooling"


def _cpu():
    return torch.zeros(2, 3)


def test_cpu_tensors_take_the_reference_under_auto(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert dispatch.requested_mode() == "auto"
    assert dispatch.resolve(OP, _cpu()).__name__ == f"{OP}.reference"
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # interpreting does not make auto pick Triton on CPU
    assert dispatch.choose(_cpu()) == "torch"


def test_env_variable_selects_and_validates(monkeypatch):
    monkeypatch.setenv("EMBTUNE_KERNELS", "torch")
    assert dispatch.requested_mode() == "torch"
    monkeypatch.setenv("EMBTUNE_KERNELS", " Triton ")
    assert dispatch.requested_mode() == "triton"
    monkeypatch.setenv("EMBTUNE_KERNELS", "cuda")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        dispatch.choose(_cpu())


def test_explicit_triton_on_cpu_raises_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("EMBTUNE_KERNELS", "triton")
    if not dispatch.has_triton():
        with pytest.raises(ImportError):
            dispatch.choose(_cpu())
        return
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        ek.pool(_cpu(), torch.tensor([0, 2]))


def test_explicit_triton_rejects_float64(monkeypatch):
    if not dispatch.has_triton():
        pytest.skip("triton is not installed")
    with use_backend("triton"), pytest.raises(ValueError, match="fp32/fp16/bf16"):
        dispatch.choose(_cpu().double())


@pytest.mark.usefixtures("needs_triton")
def test_explicit_triton_on_cpu_runs_interpreted_kernels():
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine the kernels in this process are compiled, not interpreted")
    with use_backend("triton"):
        module = dispatch.resolve(OP, _cpu())
    assert module.__name__ == f"{OP}.triton" and module.INTERPRETED


@pytest.mark.usefixtures("needs_triton")
def test_gpu_compiled_module_refuses_cpu_tensors(monkeypatch):
    from embtune_kernels.pooling import triton as pooling_triton

    monkeypatch.setattr(pooling_triton, "INTERPRETED", False)
    with use_backend("triton"), pytest.raises(RuntimeError, match="imported before TRITON_INTERPRET"):
        dispatch.resolve(OP, _cpu())


def test_use_backend_overrides_env_nests_and_restores(monkeypatch):
    monkeypatch.setenv("EMBTUNE_KERNELS", "triton")
    with use_backend("torch"):
        assert dispatch.requested_mode() == "torch"
        with use_backend("auto"):
            assert dispatch.requested_mode() == "auto"
        assert dispatch.requested_mode() == "torch"
        assert dispatch.resolve(OP, _cpu()).__name__ == f"{OP}.reference"
    assert dispatch.requested_mode() == "triton"
    with pytest.raises(KeyError), use_backend("torch"):
        raise KeyError("boom")
    assert dispatch.requested_mode() == "triton"
    with pytest.raises(ValueError):
        use_backend("gpu").__enter__()


def test_import_without_triton_or_bitsandbytes():
    """`import embtune_kernels` imports neither; with triton unimportable, auto still works and an
    explicit triton request raises ImportError."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, embtune_kernels as ek\n"
        "assert 'bitsandbytes' not in sys.modules\n"
        "assert not ek.has_triton()\n"
        "y = ek.pool(torch.ones(3, 4), torch.tensor([0, 1, 3]))\n"
        "assert y.shape == (2, 4)\n"
        "with ek.use_backend('triton'):\n"
        "    try:\n"
        "        ek.pool(torch.ones(3, 4), torch.tensor([0, 1, 3]))\n"
        "    except ImportError:\n"
        "        print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("EMBTUNE_KERNELS", "TRITON_INTERPRET")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.gpu
def test_gpu_auto_picks_triton_for_cuda_tensors():
    x = torch.zeros(2, 3, device="cuda")
    assert dispatch.resolve(OP, x).__name__ == f"{OP}.triton"
    assert dispatch.resolve(OP, x.double()).__name__ == f"{OP}.reference"
    with pytest.raises(RuntimeError, match="mixed devices"), use_backend("triton"):
        dispatch.choose(x, torch.zeros(1))


@pytest.mark.usefixtures("needs_triton")
def test_interpreted_kernels_work_when_triton_was_imported_first():
    """In a full test run, sentence-transformers / peft / bitsandbytes import triton (compiled mode)
    before this folder's conftest sets TRITON_INTERPRET. The kernels must not depend on triton.language's
    own @jit helpers (tl.sum, tl.max, tl.zeros), which are then unusable by interpreted kernels."""
    if torch.cuda.is_available():
        pytest.skip("the interpreter is only used on CPU-only machines")
    code = (
        "import os, torch, triton\n"  # triton first, without TRITON_INTERPRET
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "import embtune_kernels as ek\n"
        "x = torch.randn(9, 20); cu = torch.tensor([0, 4, 9], dtype=torch.int32)\n"
        "def run():\n"
        "    h, _ = ek.layer_norm(x, torch.ones(20), torch.zeros(20), residual=x)\n"
        "    y = ek.lora_linear(h, torch.randn(20, 20), torch.randn(4, 20), torch.randn(20, 4))\n"
        "    p = ek.pool(y, cu, 'mean', normalize=True)\n"
        "    return ek.info_nce(p, torch.cat([p, p.flip(0)]))\n"
        "torch.manual_seed(0)\n"
        "with ek.use_backend('triton'):\n"
        "    a = run()\n"
        "torch.manual_seed(0)\n"
        "with ek.use_backend('torch'):\n"
        "    b = run()\n"
        "assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a, b)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("EMBTUNE_KERNELS", "TRITON_INTERPRET")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
