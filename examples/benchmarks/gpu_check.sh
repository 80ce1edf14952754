#!/usr/bin/env bash
# GPU check (< 8 min on one H100): the kernel tests on CUDA, then the GPU speed table.
#
#   bash examples/benchmarks/gpu_check.sh            # from the repository root
#
# 1. pytest tests/kernels on CUDA tensors: the compiled Triton kernels against their references
#    (bf16 tensor-core paths included), the callers' wiring (InfoNCE loss, FastPooling, KernelLayerNorm)
#    and the @pytest.mark.gpu tests (realistic shapes, auto dispatch, InfoNCE peak memory).
# 2. train_speed.py --device cuda: sentence-transformers + PEFT (bf16 autocast, SDPA) against embtune
#    with and without its Triton kernels, same SciFact pairs (MiniLM and a BERT-base-sized model).
# Exits 2 with a message when CUDA is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check.sh: CUDA is not available here (torch.cuda.is_available() is False); nothing to check." >&2
    exit 2
fi
"$PY" -c 'import triton, torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| triton", triton.__version__)'

echo "== 1/2 kernel tests on CUDA (EMBTUNE_KERNELS unset: auto) =="
timeout 300 "$PY" -m pytest tests/kernels -q -p no:cacheprovider -m "not slow"

echo "== 2/2 GPU speed table =="
timeout 300 "$PY" examples/benchmarks/train_speed.py --device cuda --max-load 1000 --wait-minutes 0 \
    --pairs 256 --batch-size 32 --max-len 256
