# Two commands on a fresh machine:  `make demo`  and  `make test`.
# torch is installed first, pinned to the CPU wheel present on these machines, so that no
# dependency can pull the multi-GB CUDA build; the project and its extras come after.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.embtune-installed
TORCH   ?= torch==2.13.0
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test test-all llama-cpp clean

# llama-cpp-python (to check GGUF exports in the real llama.cpp) builds from source: ~5 min of
# 2 cores, so the wheel is built once into a cache outside the checkout and reused afterwards.
LLAMA_VERSION ?= 0.3.36
WHEELS  ?= $(HOME)/.cache/embtune/wheels
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF \
	-DGGML_METAL=OFF -DGGML_OPENMP=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	$(MAKE) llama-cpp
	touch $(STAMP)

llama-cpp:
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(BIN)/python -m pip wheel -q "llama-cpp-python==$(LLAMA_VERSION)" --no-deps -w $(WHEELS)
	$(BIN)/python -m pip install -q --find-links $(WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/embtune from-corpus examples/sample_corpus --out $(DEMO_OUT) --max-steps 10 --batch-size 16 --lr 1e-3 $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow" -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

clean:
	rm -rf $(VENV) runs st_baseline_out .pytest_cache
