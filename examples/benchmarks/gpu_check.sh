#!/usr/bin/env bash
# GPU check (< 8 min on one H100): the kernel tests on CUDA, the GPU speed table, checkpoint memory.
#
#   bash examples/benchmarks/gpu_check.sh            # from anywhere; runs from the repository root
#   OUT=/some/dir bash examples/benchmarks/gpu_check.sh   # also: OUT/gpu_check.log, OUT/train_speed_gpu.json
#
# 1. pytest tests/kernels on CUDA tensors (at most TESTS_S=120 s): the compiled Triton kernels against their
#    references (bf16 tensor-core paths included), the callers' wiring (InfoNCE loss, FastPooling,
#    KernelLayerNorm) and the @pytest.mark.gpu tests (realistic shapes, auto dispatch, InfoNCE peak memory).
# 2. train_speed.py --device cuda (at most TABLE_S=240 s; no row starts after TABLE_BUDGET_S=200 s):
#    sentence-transformers + PEFT (bf16 autocast, SDPA) against embtune with and without its Triton
#    kernels on MiniLM, a BERT-base-sized model and a Qwen3-0.6B-shaped decoder, 256 SciFact pairs,
#    batch 32, max_len 256; ST with flash_attention_2 padding-free inputs too where the flash_attn
#    package is installed.
# 3. examples/benchmarks/checkpoint_memory.py --device cuda (at most CKPT_S=90 s), if that file exists.
# The limits (seconds, in the environment) add up to 450 s plus ~15 s of start-up checks.
# A stage that fails or runs out of time does not stop the next; the exit status is 1 if any did.
# Exits 2 with a message when CUDA is absent.
set -uo pipefail
OUT_DIR="${OUT:-}"
if [ -n "$OUT_DIR" ]; then mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"; fi  # absolute, before cd
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
TESTS_S="${TESTS_S:-120}" TABLE_S="${TABLE_S:-240}" TABLE_BUDGET_S="${TABLE_BUDGET_S:-200}" CKPT_S="${CKPT_S:-90}"

FAILED=()
stage() {  # stage NAME SECONDS COMMAND...: run COMMAND under a time limit, record a failure
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    echo "== $name (limit ${limit} s) =="
    timeout "$limit" "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "-- $name: ok in $((SECONDS - start)) s"
    else
        echo "-- $name: FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', time limit')) after $((SECONDS - start)) s"
        FAILED+=("$name")
    fi
}

main() {
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check.sh: CUDA is not available here (torch.cuda.is_available() is False); nothing to check." >&2
        return 2
    fi
    "$PY" -c 'import triton, torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| triton", triton.__version__)'

    stage "1/3 kernel tests on CUDA (EMBTUNE_KERNELS unset: auto)" "$TESTS_S" \
        "$PY" -m pytest tests/kernels -q -p no:cacheprovider -m "not slow"

    local json=()
    [ -n "$OUT_DIR" ] && json=(--json "$OUT_DIR/train_speed_gpu.json")
    stage "2/3 GPU speed table" "$TABLE_S" \
        "$PY" examples/benchmarks/train_speed.py --device cuda --max-load 1000 --wait-minutes 0 \
        --pairs 256 --batch-size 32 --max-len 256 --time-budget "$TABLE_BUDGET_S" "${json[@]}"

    if [ -f examples/benchmarks/checkpoint_memory.py ]; then
        stage "3/3 checkpoint memory" "$CKPT_S" "$PY" examples/benchmarks/checkpoint_memory.py --device cuda
    else
        echo "== 3/3 checkpoint memory: skipped (examples/benchmarks/checkpoint_memory.py does not exist) =="
    fi

    local IFS=";"
    echo "gpu_check.sh: done in ${SECONDS} s; failed stages: ${FAILED[*]:-none}"
    [ "${#FAILED[@]}" -eq 0 ]
}

if [ -n "$OUT_DIR" ]; then
    main 2>&1 | tee "$OUT_DIR/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
main
