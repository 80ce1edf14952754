# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both build .venv from the lock (constraints.txt: the exact versions the suite was run with).
# torch is installed first, pinned to the CPU wheel present on these machines, so that no
# dependency can pull the multi-GB CUDA build; the project, its integrations and extras come after.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.embtune-installed
LOCK    ?= constraints.txt
TORCH   ?= torch==2.13.0
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
LATEST  ?= .venv-latest
# The core and the three integration packages, installed editable from this monorepo.
INTEGRATION_DIRS := integrations/langchain integrations/llamaindex integrations/faiss
PROJECT := -e ".[all,dev]" $(addprefix -e ,$(INTEGRATION_DIRS))
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test test-all test-latest llama-cpp clean

# llama-cpp-python (to check GGUF exports in the real llama.cpp) builds from source: ~5 min of
# 2 cores, so the wheel is built once into a cache outside the checkout and reused afterwards.
LLAMA_VERSION ?= 0.3.36
LLAMA_PIN ?= -c $(LOCK)
WHEELS  ?= $(HOME)/.cache/embtune/wheels
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF \
	-DGGML_METAL=OFF -DGGML_OPENMP=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF

# A brand-new virtualenv (no system site-packages), every pinned version taken from the lock.
$(STAMP): pyproject.toml $(LOCK) $(wildcard integrations/*/pyproject.toml)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip
	$(BIN)/python -m pip install -q -c $(LOCK) "$(TORCH)"
	$(BIN)/python -m pip install -q -c $(LOCK) $(PROJECT)
	$(MAKE) llama-cpp BIN=$(BIN)
	$(BIN)/python -m pip check
	touch $(STAMP)

llama-cpp:
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(BIN)/python -m pip wheel -q "llama-cpp-python==$(LLAMA_VERSION)" --no-deps -w $(WHEELS)
	$(BIN)/python -m pip install -q $(LLAMA_PIN) --find-links $(WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/embtune from-corpus examples/sample_corpus --out $(DEMO_OUT) --max-steps 10 --batch-size 16 --lr 1e-3 \
		--eval-labels examples/sample_questions/qrels.tsv --queries examples/sample_questions/queries.jsonl $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow" -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

# The newest versions pyproject.toml allows, in a throwaway venv, through the same suite. Green means
# the lock may move: `cp $(LATEST)/constraints.txt constraints.txt`, then `make test` and commit.
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(LATEST)/torch-pin.txt   # torch stays the CPU wheel: an upgrade would pull a CUDA build
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch-pin.txt $(PROJECT)
	$(MAKE) llama-cpp BIN=$(LATEST)/bin LLAMA_PIN=
	$(LATEST)/bin/python -m pip check
	$(LATEST)/bin/python -m pip freeze --all --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > $(LATEST)/constraints.txt
	-diff -u $(LOCK) $(LATEST)/constraints.txt
	$(LATEST)/bin/python -m pytest tests -q -m "not slow" -p no:cacheprovider
	@echo "newest allowed versions pass: cp $(LATEST)/constraints.txt $(LOCK) to adopt them"

clean:
	rm -rf $(VENV) $(LATEST) runs st_baseline_out .pytest_cache

# The four wheels of the monorepo with one command: embtune (core + embtune_kernels) and the
# integrations embtune-langchain, embtune-llamaindex, embtune-faiss, into dist/. `check-wheels`
# installs each integration wheel beside the core wheel in a brand-new venv and runs its tests there.
DIST    ?= dist

.PHONY: wheels check-wheels

wheels:
	mkdir -p $(DIST)
	rm -f $(DIST)/embtune-*.whl $(DIST)/embtune_*.whl
	$(PY) -m pip wheel -q --no-deps -w $(DIST) . $(INTEGRATION_DIRS)
	ls -l $(DIST)/*.whl

check-wheels: wheels
	DIST=$(DIST) PY=$(PY) TORCH="$(TORCH)" bash examples/check_integration_wheels.sh
