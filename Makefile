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

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/scifact_finetune.py --out $(DEMO_OUT) $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow" -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

clean:
	rm -rf $(VENV) runs st_baseline_out .pytest_cache
