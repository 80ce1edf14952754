#!/usr/bin/env bash
# Each integration wheel, installed beside the embtune core wheel in a brand-new venv, passes its tests.
#
#   make wheels                                   # dist/embtune-*.whl and dist/embtune_<name>-*.whl
#   bash examples/check_integration_wheels.sh     # all three; or name some: langchain llamaindex faiss
#
# Per integration: a new venv under $VENVS/<name> (python -m venv, no system site-packages), torch
# FIRST (the CPU wheel $TORCH, then pinned, so no dependency can pull a CUDA build), the core wheel and
# that integration's wheel from $DIST with their dependencies, the test extras of its
# [dependency-groups] test (integrations/<name>/pyproject.toml), then `pip check`. The tests run from a
# scratch folder with PYTHONPATH unset, and the script first proves that embtune and embtune_<name>
# come from the venv's site-packages and that the other integrations are not installed.
# Env: DIST (dist/), PY (python3), TORCH (torch==2.13.0), VENVS (/tmp/embtune-wheel-check),
# REUSE=1 (keep an existing venv: only the two wheels are reinstalled), CONSTRAINTS (a lock of
# third-party pins; default constraints.txt at the repo root when present).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIST=$(cd "${DIST:-$REPO/dist}" && pwd)
PY=${PY:-python3}
TORCH=${TORCH:-torch==2.13.0}
VENVS=${VENVS:-/tmp/embtune-wheel-check}
CONSTRAINTS=${CONSTRAINTS:-$REPO/constraints.txt}
NAMES=("$@")
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=(langchain llamaindex faiss)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
unset PYTHONPATH

mkdir -p "$VENVS"
SCRATCH=$(mktemp -d "$VENVS/run.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
echo "$TORCH" > "$SCRATCH/torch-pin.txt"
PINS=(-c "$SCRATCH/torch-pin.txt")
[[ -f $CONSTRAINTS ]] && PINS+=(-c "$CONSTRAINTS")

tests_of() {  # the test files of one integration (test_packaging.py checks the installed core too)
  case $1 in
    langchain) echo "test_langchain.py test_packaging.py" ;;
    llamaindex) echo "test_llamaindex.py test_packaging.py" ;;
    faiss) echo "test_faiss.py test_faiss_files.py test_packaging.py" ;;
    *) echo "unknown integration: $1" >&2; return 1 ;;
  esac
}

one_wheel() {  # the single wheel of distribution $1 (file-name form, e.g. embtune_faiss) in $DIST
  local found=("$DIST/$1"-*-py3-none-any.whl)
  [[ ${#found[@]} -eq 1 && -f ${found[0]} ]] || { echo "expected one $1 wheel in $DIST (run make wheels)" >&2; return 1; }
  echo "${found[0]}"
}

SUMMARY=()
for name in "${NAMES[@]}"; do
  files=$(tests_of "$name")
  venv=$VENVS/$name
  py=$venv/bin/python
  core=$(one_wheel embtune)
  wheel=$(one_wheel "embtune_$name")
  start=$SECONDS
  echo "=== embtune-$name: $(basename "$core") + $(basename "$wheel") in $venv"
  if [[ -z ${REUSE:-} || ! -x $py ]]; then
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$py" -m pip install -q --upgrade pip "${PINS[@]}"  # --group needs pip >= 25.1
    "$py" -m pip install -q "$TORCH"
  fi
  "$py" -m pip install -q "${PINS[@]}" "$core" "$wheel" --group "$REPO/integrations/$name/pyproject.toml:test"
  "$py" -m pip install -q --no-deps --force-reinstall "$core" "$wheel"  # a rebuilt wheel keeps its version
  "$py" -m pip check
  (cd "$SCRATCH" && "$py" - "$name" <<'EOF'
import importlib, importlib.util, sys, sysconfig
from pathlib import Path

name, site = sys.argv[1], Path(sysconfig.get_paths()["purelib"]).resolve()
for module in ("embtune", "embtune_kernels", f"embtune_{name}"):
    where = Path(importlib.import_module(module).__file__).resolve()
    assert site in where.parents, f"{module} comes from {where}, not from {site}"
others = [m for m in ("embtune_langchain", "embtune_llamaindex", "embtune_faiss")
          if m != f"embtune_{name}" and importlib.util.find_spec(m) is not None]
assert not others, f"not installed alone: {others}"
import torch
print(f"installed from wheels in {site}; torch {torch.__version__}, CUDA build: {torch.version.cuda}")
EOF
  )
  paths=()
  for f in $files; do paths+=("$REPO/tests/integrations/$f"); done
  log=$SCRATCH/pytest-$name.log
  status=0
  (cd "$SCRATCH" && "$py" -m pytest -q -p no:cacheprovider --rootdir "$REPO" -c "$REPO/pyproject.toml" \
      "${paths[@]}" >"$log" 2>&1) || status=$?
  tail -n 4 "$log"
  SUMMARY+=("embtune-$name: $(tail -n 1 "$log") [$((SECONDS - start)) s in all; $files]")
  [[ $status -eq 0 ]] || { cat "$log" >&2; printf '%s\n' "${SUMMARY[@]}"; echo "FAILED: embtune-$name" >&2; exit 1; }
done
printf '%s\n' "${SUMMARY[@]}"
